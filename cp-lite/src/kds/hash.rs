//! Kuma's names for copies of zone resources on the global
//! (`pkg/kds/hash`): `<name>-<hash>`, the hash an FNV-1a 64 of mesh, name,
//! zone and namespace (empty on Universal), hex-encoded and then mapped to
//! Kubernetes' "safe" alphabet, so that two zones' `backend-1` never meet.

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Kubernetes' name limit, less the dash and 16 hash characters.
const MAX_PREFIX: usize = 253 - 17;

pub use koguma_types::sni::fnv1a64;

/// The name `name` of `mesh` from `zone` has on the global.
pub fn hashed_name(mesh: &str, name: &str, zone: &str) -> String {
    let hex = format!("{:016x}", fnv1a64(&[mesh, name, zone, ""]));
    let safe: String = hex
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect();
    let prefix = if name.len() > MAX_PREFIX {
        &name[..MAX_PREFIX]
    } else {
        name
    };
    format!("{prefix}-{safe}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_by_zone_and_keep_the_display_name() {
        let a = hashed_name("default", "backend-1", "zone-1");
        let b = hashed_name("default", "backend-1", "zone-2");
        assert_ne!(a, b);
        assert!(
            a.starts_with("backend-1-") && a.len() == "backend-1-".len() + 16,
            "{a}"
        );
        assert!(
            a["backend-1-".len()..]
                .bytes()
                .all(|c| SAFE_ALPHABET.contains(&c))
        );
        assert_eq!(a, hashed_name("default", "backend-1", "zone-1"));
    }
}
