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
