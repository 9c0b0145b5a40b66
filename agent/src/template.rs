//! The Dataplane template given with `--dataplane-file`: `{{ var }}`
//! placeholders filled from `--dataplane-var var=value`, as kuma-dp does.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("--dataplane-var {0:?}: expected key=value")]
    BadVar(String),
    #[error("dataplane template: {{{{ {0} }}}} has no value: pass --dataplane-var {0}=...")]
    Missing(String),
    #[error("dataplane template: unclosed {{{{ at byte {0}")]
    Unclosed(usize),
    #[error("dataplane template: {0}")]
    Parse(String),
    #[error("dataplane template: type: expected {expected}, got {got:?}")]
    WrongType { expected: &'static str, got: String },
    #[error("dataplane template: {0} is required")]
    MissingField(&'static str),
}

pub fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>, TemplateError> {
    vars.iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, val)| (k.trim().to_string(), val.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| TemplateError::BadVar(v.clone()))
        })
        .collect()
}

pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(text.len() - rest.len() + start))?;
        let key = after[..end].trim();
        out.push_str(
            vars.get(key)
                .ok_or_else(|| TemplateError::Missing(key.to_string()))?,
        );
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A rendered template: its mesh, name, and the resource as JSON for the CP.
pub struct DataplaneTemplate {
    pub mesh: String,
    pub name: String,
    pub json: String,
    pub admin_port: Option<u16>,
}

/// Loads a template of resource type `expected` (Dataplane for a sidecar,
/// ZoneIngress or ZoneEgress for a zone proxy, which have no mesh).
pub fn load(
    text: &str,
    vars: &BTreeMap<String, String>,
    expected: &'static str,
) -> Result<DataplaneTemplate, TemplateError> {
    let rendered = render(text, vars)?;
    let mut docs =
        koguma_api::parse_documents(&rendered).map_err(|e| TemplateError::Parse(e.to_string()))?;
    if docs.len() != 1 {
        return Err(TemplateError::Parse(format!(
            "expected one {expected}, found {} documents",
            docs.len()
        )));
    }
    let value = docs.remove(0);
    let kind = value["type"].as_str().unwrap_or_default();
    if kind != expected {
        return Err(TemplateError::WrongType {
            expected,
            got: kind.to_string(),
        });
    }
    let name = value["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or(TemplateError::MissingField("name"))?;
    let mesh = match expected {
        "Dataplane" => value["mesh"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or("default"),
        _ => "",
    };
    let admin_port = value["networking"]["admin"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    Ok(DataplaneTemplate {
        mesh: mesh.to_string(),
        name: name.to_string(),
        json: value.to_string(),
        admin_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables() {
        let vars = parse_vars(&["name=web-1".into(), "address=127.0.0.5".into()]).unwrap();
        let t = load(
            "type: Dataplane\nname: {{ name }}\nnetworking:\n  address: {{address}}\n",
            &vars,
            "Dataplane",
        )
        .unwrap();
        assert_eq!(t.name, "web-1");
        assert_eq!(t.mesh, "default");
        assert!(t.json.contains("127.0.0.5"));
    }

    #[test]
    fn missing_variable_is_named() {
        let err = render("name: {{ name }}", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataplane template: {{ name }} has no value: pass --dataplane-var name=..."
        );
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(matches!(
            load("type: Mesh\nname: x\n", &BTreeMap::new(), "Dataplane"),
            Err(TemplateError::WrongType { .. })
        ));
        let zi = load(
            "type: ZoneIngress\nname: ingress-1\nnetworking:\n  port: 10001\n",
            &BTreeMap::new(),
            "ZoneIngress",
        )
        .unwrap();
        assert_eq!((zi.mesh.as_str(), zi.name.as_str()), ("", "ingress-1"));
    }
}
