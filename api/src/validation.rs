//! Validation errors that say which field is wrong and why, in Kuma's words.

use std::fmt;

/// One problem with one field, e.g. `networking.inbound[0].tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

/// Every problem found in a resource. A resource with any is refused whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.add(field, message);
        e
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Kuma's name charset for mesh-scoped legacy resources: `^[0-9a-z.\-_]*$`,
/// non-empty, at most 253 characters (a DNS name's limit).
/// A resource's name, as Kuma checks it (`meta_validator.go`): a lowercase
/// RFC 1123 subdomain, so never `.`, `..`, `-x` or `a_b`.
pub fn validate_identifier(field: &str, name: &str, errs: &mut ValidationError) {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() {
        errs.add(field, "cannot be empty");
    } else if name.len() > 253 {
        errs.add(field, "value length must less or equal 253");
    } else if !name.split('.').all(label_ok) {
        errs.add(
            field,
            format!(
                "{name:?}: invalid characters. A lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        );
    }
}

/// Kuma's older, wider rule, still used for the `mesh` field (a mesh made
/// under it may hold `_`) and for zone and token names.
pub fn validate_name(field: &str, name: &str, errs: &mut ValidationError) {
    if name.is_empty() {
        errs.add(field, "cannot be empty");
    } else if name.len() > 253 {
        errs.add(field, format!("{:?} is longer than 253 characters", name));
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"-._".contains(&b))
    {
        errs.add(
            field,
            format!(
                "{name:?} has invalid characters: use lowercase letters, digits, '-', '.' and '_'"
            ),
        );
    }
}

/// Kuma's check of resource labels (`resource_endpoints.go`
/// `validateLabels`): keys are Kubernetes qualified names, values
/// Kubernetes label values, each error at `labels["key"]`.
pub fn validate_labels(
    labels: &std::collections::BTreeMap<String, String>,
    errs: &mut ValidationError,
) {
    for (key, value) in labels {
        let field = format!("labels[{key:?}]");
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if let Some(p) = prefix {
            let mut prefix_errs = ValidationError::default();
            validate_identifier("prefix", p, &mut prefix_errs);
            if !prefix_errs.is_empty() {
                errs.add(
                    field.clone(),
                    "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character",
                );
            }
        }
        if name.is_empty() {
            errs.add(field.clone(), "name part must be non-empty");
        } else if name.len() > 63 {
            errs.add(
                field.clone(),
                "name part must be no more than 63 characters",
            );
        } else if !is_label_token(name) {
            errs.add(
                field.clone(),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            );
        }
        if value.len() > 63 {
            errs.add(field.clone(), "must be no more than 63 characters");
        } else if !value.is_empty() && !is_label_token(value) {
            errs.add(
                field,
                format!(
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (got {value:?})"
                ),
            );
        }
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// The validation errors of the resource `yaml` (parsing and checks), as a
/// person reads them; empty when it is valid. For unit tests.
#[cfg(test)]
pub(crate) fn errors_of(yaml: &str) -> String {
    let value: serde_json::Value = match serde_yaml_ng::from_str(yaml) {
        Ok(v) => v,
        Err(e) => return e.to_string(),
    };
    match crate::Resource::from_value(value).and_then(|r| r.validate()) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_kubernetes_qualified_names_and_values() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let mut e = ValidationError::default();
        validate_labels(
            &labels(&[
                ("kuma.io/mesh", "default"),
                ("team", ""),
                ("k8s.kuma.io/namespace", "kuma-system"),
                ("app.kubernetes.io/name", "web_1.v2"),
            ]),
            &mut e,
        );
        assert!(e.is_empty(), "{e}");
        validate_labels(
            &labels(&[
                ("Kuma.io/x", "a"),
                ("bad key", "a"),
                ("ok", "-starts-with-dash"),
                ("long", &"a".repeat(64)),
            ]),
            &mut e,
        );
        let fields: Vec<&str> = e.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                r#"labels["Kuma.io/x"]"#,
                r#"labels["bad key"]"#,
                r#"labels["long"]"#,
                r#"labels["ok"]"#
            ]
        );
    }

    #[test]
    fn names_follow_kuma_charset() {
        let mut e = ValidationError::default();
        validate_name("name", "web-01.a_b", &mut e);
        assert!(e.is_empty());
        validate_name("name", "Web", &mut e);
        validate_name("name", "", &mut e);
        assert_eq!(e.violations.len(), 2);
        assert!(
            e.to_string()
                .starts_with("name: \"Web\" has invalid characters")
        );
    }

    #[test]
    fn resource_names_are_rfc1123_subdomains_as_in_kuma() {
        for ok in ["web-01", "a.b-c.d", "0", "backend-1-66xx8vw7fxxw7bb8"] {
            let mut e = ValidationError::default();
            validate_identifier("name", ok, &mut e);
            assert!(e.is_empty(), "{ok}: {e}");
        }
        for bad in [
            ".",
            "..",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "Web",
            ".hidden",
            &"a".repeat(254),
        ] {
            let mut e = ValidationError::default();
            validate_identifier("name", bad, &mut e);
            assert!(!e.is_empty(), "{bad:?} was accepted");
        }
    }
}
