//! Kuma's list filters (`pkg/api-server/filters`): `filter[labels.<key>]=v`
//! on every list (an exact label match; any other `filter[...]` is a 400),
//! `name=` (the names containing it), and on dataplane lists `tag=k:v`
//! (some inbound has tag `k` with a value containing `v`, `*` for any) and
//! `gateway=` (Koguma has no gateway dataplanes: `true`, `builtin` and
//! `delegated` match none).

use koguma_api::{Resource, ResourceType, ValidationError};

use super::ApiError;

#[derive(Debug, Default)]
pub struct ListFilter {
    labels: Vec<(String, String)>,
    name: Option<String>,
    tags: Vec<(String, String)>,
    gateways_only: bool,
}

impl ListFilter {
    /// `route` is the path pattern, which Kuma's errors name
    /// (`/meshes/{mesh}/dataplanes`).
    pub fn from_query(
        route: &str,
        rtype: ResourceType,
        query: &[(String, String)],
    ) -> Result<ListFilter, ApiError> {
        let mut errs = ValidationError::default();
        let mut filter = ListFilter::default();
        let tags_apply = matches!(
            rtype,
            ResourceType::Dataplane | ResourceType::ExternalService
        );
        for (key, value) in query {
            if let Some(rest) = key.strip_prefix("filter[") {
                let field = format!("{route}.{key}");
                let Some(label) = rest.strip_prefix("labels.") else {
                    errs.add(field, "filters are only supported on labels");
                    continue;
                };
                match label.split_once(']') {
                    Some((label, "")) => filter.labels.push((label.into(), value.clone())),
                    _ => errs.add(field, "advanced filters are not supported"),
                }
                continue;
            }
            match key.as_str() {
                "name" if !value.is_empty() => filter.name = Some(value.clone()),
                // `:` is allowed in values: split at the first.
                "tag" if tags_apply => {
                    if let Some((k, v)) = value.split_once(':') {
                        filter.tags.push((k.into(), v.into()));
                    }
                }
                "gateway" if rtype == ResourceType::Dataplane => {
                    match value.to_ascii_lowercase().as_str() {
                        "" | "false" => {}
                        "true" | "builtin" | "delegated" => filter.gateways_only = true,
                        other => errs.add(
                            format!("{route}.gateway"),
                            format!("shoud use `true`, `false`, 'builtin' or 'delegated' instead of {other}"),
                        ),
                    }
                }
                _ => {}
            }
        }
        errs.into_result().map_err(ApiError::InvalidQuery)?;
        Ok(filter)
    }

    pub fn matches(&self, r: &Resource) -> bool {
        if self.gateways_only {
            return false;
        }
        if let Some(part) = &self.name
            && !r.meta.name.contains(part.as_str())
        {
            return false;
        }
        let labels = &r.meta.labels;
        if !self.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
        if self.tags.is_empty() {
            return true;
        }
        let fuzzy = |tags: &std::collections::BTreeMap<String, String>| {
            self.tags.iter().all(|(k, v)| {
                tags.get(k)
                    .is_some_and(|have| v == "*" || have.contains(v.as_str()))
            })
        };
        if let Some(dp) = r.as_dataplane() {
            return dp
                .networking()
                .is_some_and(|n| n.inbound.iter().any(|i| fuzzy(&i.tags)));
        }
        if let Some(es) = r.as_external_service() {
            return fuzzy(&es.tags);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dp(name: &str, tags: &str, labels: &str) -> Resource {
        let yaml = format!(
            "type: Dataplane\nmesh: default\nname: {name}\nlabels: {{{labels}}}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 80\n    tags: {{{tags}}}\n"
        );
        let docs = koguma_api::parse_documents(&yaml).unwrap();
        Resource::from_value(docs.into_iter().next().unwrap()).unwrap()
    }

    #[test]
    fn tags_match_fuzzily_and_labels_exactly_as_in_kuma() {
        let web = dp("web-1", "kuma.io/service: web, version: v1", "team: a");
        let backend = dp(
            "backend-1",
            "kuma.io/service: backend, tagcolumn: tag:v",
            "team: b",
        );
        let route = "/meshes/{mesh}/dataplanes";
        let f = |pairs: &[(&str, &str)]| {
            let Ok(f) = ListFilter::from_query(route, ResourceType::Dataplane, &q(pairs)) else {
                panic!("{pairs:?} refused");
            };
            f
        };
        let tag = f(&[("tag", "kuma.io/service:ck")]);
        assert!(tag.matches(&backend) && !tag.matches(&web));
        let both = f(&[("tag", "kuma.io/service:web"), ("tag", "version:v2")]);
        assert!(!both.matches(&web));
        assert!(f(&[("tag", "tagcolumn:tag:v")]).matches(&backend));
        assert!(f(&[("tag", "version:*")]).matches(&web));
        let label = f(&[("filter[labels.team]", "b")]);
        assert!(label.matches(&backend) && !label.matches(&web));
        assert!(f(&[("name", "end-")]).matches(&backend));
        assert!(!f(&[("gateway", "true")]).matches(&web));
        assert!(f(&[("gateway", "false")]).matches(&web));
    }

    #[test]
    fn unknown_filters_are_refused_naming_the_parameter() {
        let route = "/meshes/{mesh}/dataplanes";
        for (key, reason) in [
            (
                "filter[labelds.k8s.kuma.io/namespace]",
                "filters are only supported on labels",
            ),
            (
                "filter[labels.k8s.kuma.io/namespace][eq]",
                "advanced filters are not supported",
            ),
        ] {
            let Err(ApiError::InvalidQuery(e)) =
                ListFilter::from_query(route, ResourceType::Dataplane, &q(&[(key, "ns1")]))
            else {
                panic!("{key} accepted");
            };
            assert_eq!(e.violations[0].field, format!("{route}.{key}"));
            assert_eq!(e.violations[0].message, reason);
        }
    }
}
