//! The server name that carries a cross-zone destination: a sidecar sends
//! it to a remote zone's ingress, which routes by it without terminating
//! TLS. Kuma's legacy form, `backend{mesh=default,version=v2}`, is not a
//! DNS name, and rustls will not send one that is not; this carries the
//! same (service, mesh, subset tags) in DNS labels, the way Kuma 2.14 names
//! MeshService destinations:
//!
//! `a<hash>.<service>.<mesh>.ks`
//!
//! `hash` is the FNV-1a 64 of `service;mesh;k1=v1,k2=v2` (the subset tags
//! other than `kuma.io/service`, sorted by key) in 16 hex digits; the
//! service and mesh labels are made DNS-safe and cut to 63 characters, so
//! only the hash tells two destinations apart, and the labels are for
//! people reading logs.

use std::collections::BTreeMap;

/// The tag that names a service.
pub const SERVICE_TAG: &str = "kuma.io/service";

/// FNV-1a 64 over `parts`, as if concatenated.
pub fn fnv1a64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A DNS label for `s`: lowercase letters, digits and dashes, at most 63.
fn label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "x".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The SNI for the destination `tags` (its `kuma.io/service` and subset
/// tags) in `mesh`.
pub fn cross_zone_sni(mesh: &str, tags: &BTreeMap<String, String>) -> String {
    let service = tags.get(SERVICE_TAG).map_or("", String::as_str);
    let subset: Vec<String> = tags
        .iter()
        .filter(|(k, _)| k.as_str() != SERVICE_TAG)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let hash = fnv1a64(&[service, ";", mesh, ";", &subset.join(",")]);
    format!("a{hash:016x}.{}.{}.ks", label(service), label(mesh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn is_dns_name(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }

    #[test]
    fn one_name_per_destination_and_always_a_dns_name() {
        let backend = cross_zone_sni("default", &tags(&[(SERVICE_TAG, "backend")]));
        assert!(
            backend.starts_with('a') && backend.ends_with(".backend.default.ks"),
            "{backend}"
        );
        let v2 = cross_zone_sni(
            "default",
            &tags(&[(SERVICE_TAG, "backend"), ("version", "v2")]),
        );
        let other_mesh = cross_zone_sni("payments", &tags(&[(SERVICE_TAG, "backend")]));
        assert_ne!(backend, v2);
        assert_ne!(backend, other_mesh);
        assert_eq!(
            backend,
            cross_zone_sni("default", &tags(&[(SERVICE_TAG, "backend")]))
        );
        // Kubernetes-style names with underscores, and very long ones.
        let k8s = cross_zone_sni(
            "default",
            &tags(&[(SERVICE_TAG, "backend_kuma-demo_svc_8080")]),
        );
        let long = cross_zone_sni("default", &tags(&[(SERVICE_TAG, &"s".repeat(300))]));
        for name in [&backend, &v2, &other_mesh, &k8s, &long] {
            assert!(is_dns_name(name), "{name}");
        }
        assert!(k8s.contains(".backend-kuma-demo-svc-8080."), "{k8s}");
    }

    #[test]
    fn fnv1a64_is_the_standard_one() {
        assert_eq!(fnv1a64(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&["foo", "bar"]), fnv1a64(&["foobar"]));
    }
}
