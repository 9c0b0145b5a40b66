//! `<service>.mesh` names. The DNS server itself (hickory-server, inside
//! koguma-dp) arrives with transparent proxying; this crate already owns the
//! mapping from a query name to the service it names, so that the control
//! plane and the agent agree on it.

/// The service a `.mesh` query names, in Kuma's spelling: `backend.mesh`
/// names `backend`; a service whose name has `_` is also reachable with
/// `.` in its place (`backend_v1.mesh` and `backend.v1.mesh`), so callers
/// try both [`service_candidates`].
pub fn mesh_service_name(query: &str) -> Option<&str> {
    let q = query.strip_suffix('.').unwrap_or(query);
    let name = q.strip_suffix(".mesh")?;
    (!name.is_empty()).then_some(name)
}

/// Service names a `.mesh` label sequence may stand for: itself, and the
/// variant with dots turned back into underscores.
pub fn service_candidates(name: &str) -> [String; 2] {
    [name.to_string(), name.replace('.', "_")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mesh_service_name("backend.mesh."), Some("backend"));
        assert_eq!(mesh_service_name("backend.mesh"), Some("backend"));
        assert_eq!(mesh_service_name("example.com"), None);
        assert_eq!(mesh_service_name(".mesh"), None);
        assert_eq!(service_candidates("backend.v1")[1], "backend_v1");
    }
}
