//! Headers in policies (`api/common/v1alpha1`): `HeaderMatch`, one header
//! by name and how its value must look (MeshHTTPRoute matches, MeshRetry's
//! retriable headers), and `HeaderModifier` (route filters, health checks).

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// `Exact` (the default), `Prefix`, `RegularExpression`, `Present` or
    /// `Absent`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

pub const HEADER_MATCH_TYPES: &[&str] =
    &["Exact", "Prefix", "RegularExpression", "Present", "Absent"];

impl HeaderMatch {
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("Exact")
    }

    pub fn validate(&self, field: &str, errs: &mut ValidationError) {
        if self.name.is_empty() {
            errs.add(format!("{field}.name"), "must not be empty");
        } else if http_name_invalid(&self.name) {
            errs.add(
                format!("{field}.name"),
                format!("{:?} is not a valid HTTP header name", self.name),
            );
        }
        let kind = self.kind();
        if !HEADER_MATCH_TYPES.contains(&kind) {
            errs.add(
                format!("{field}.type"),
                format!(
                    "unknown type '{kind}': use {}",
                    HEADER_MATCH_TYPES.join(", ")
                ),
            );
            return;
        }
        let value = self.value.as_deref().unwrap_or("");
        match kind {
            "Present" | "Absent" => {}
            "RegularExpression" => {
                if let Err(e) = regex::Regex::new(value) {
                    errs.add(
                        format!("{field}.value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            _ if self.value.is_none() => errs.add(format!("{field}.value"), "must be set"),
            _ => {}
        }
    }
}

fn http_name_invalid(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderKeyValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderKeyValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderKeyValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    pub fn validate(&self, field: &str, errs: &mut ValidationError) {
        for (list, name) in [(&self.set, "set"), (&self.add, "add")] {
            for (i, h) in list.iter().enumerate() {
                if h.name.is_empty() || http_name_invalid(&h.name) {
                    errs.add(
                        format!("{field}.{name}[{i}].name"),
                        format!("{:?} is not a valid HTTP header name", h.name),
                    );
                }
                if h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    errs.add(
                        format!("{field}.{name}[{i}].value"),
                        "must not contain CR, LF or NUL",
                    );
                }
            }
        }
        for (i, h) in self.remove.iter().enumerate() {
            if h.is_empty() || http_name_invalid(h) {
                errs.add(
                    format!("{field}.remove[{i}]"),
                    format!("{h:?} is not a valid HTTP header name"),
                );
            }
        }
    }
}
