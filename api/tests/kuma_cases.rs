//! Kuma's own validator cases, run against Koguma's validation: what Kuma
//! accepts is accepted, what it refuses is refused naming the same fields
//! (and with a message that starts as Kuma's does). Each case names the
//! Kuma test it comes from (kumahq/kuma v2.14.3). A case for a feature
//! Koguma does not implement says so (`unsupported`): Koguma refuses it
//! with an error at that field, rather than accept what it would ignore.

use std::path::Path;

use koguma_api::{Resource, parse_documents};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    source: String,
    resource: String,
    #[serde(default)]
    refused: Vec<Expected>,
    /// The field of a Kuma feature Koguma refuses.
    #[serde(default)]
    unsupported: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    field: String,
    message: String,
}

fn violations(yaml: &str) -> Vec<(String, String)> {
    let docs = match parse_documents(yaml) {
        Ok(d) => d,
        Err(e) => return vec![("<yaml>".into(), e.to_string())],
    };
    let Some(doc) = docs.into_iter().next() else {
        return vec![("<yaml>".into(), "no document".into())];
    };
    match Resource::from_value(doc).and_then(|r| r.validate()) {
        Ok(()) => vec![],
        Err(e) => e
            .violations
            .into_iter()
            .map(|v| (v.field, v.message))
            .collect(),
    }
}

fn run(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kuma_cases")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("case file");
    let cases: Vec<Case> = serde_yaml_ng::from_str(&text).expect("case file parses");
    let mut failures = Vec::new();
    for case in &cases {
        let got = violations(&case.resource);
        let ok = if let Some(field) = &case.unsupported {
            got.iter().any(|(f, _)| f.starts_with(field.as_str()))
        } else if case.refused.is_empty() {
            got.is_empty()
        } else {
            let mut want: Vec<&Expected> = case.refused.iter().collect();
            want.sort_by(|a, b| (&a.field, &a.message).cmp(&(&b.field, &b.message)));
            let mut have: Vec<&(String, String)> = got.iter().collect();
            have.sort();
            have.len() == want.len()
                && have
                    .iter()
                    .zip(&want)
                    .all(|((f, m), w)| *f == w.field && m.starts_with(&w.message))
        };
        if !ok {
            failures.push(format!("{}\n  got: {got:?}", case.source));
        }
    }
    println!("{file}: {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Kuma:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn dataplane_cases_as_kuma() {
    run("dataplane.yaml");
}

#[test]
fn mesh_traffic_permission_cases_as_kuma() {
    run("meshtrafficpermission.yaml");
}

#[test]
fn mesh_cases_as_kuma() {
    run("mesh.yaml");
}
