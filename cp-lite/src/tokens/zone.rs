//! Zone tokens (Kuma's `generate zone-token`): which zone a zone CP, zone
//! ingress or zone egress is, and until when. Issued and checked by the
//! global, with one key (`zone-token-signing-key-1`, a global secret).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{KeyName, Lifetime, TokenError, sign, verify_signed};
use crate::resources::Resources;

/// What a zone token may identify; Kuma's names.
pub const SCOPES: [&str; 3] = ["cp", "ingress", "egress"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneClaims {
    #[serde(rename = "Zone", default)]
    pub zone: String,
    #[serde(rename = "Scope", default)]
    pub scope: Vec<String>,
    #[serde(flatten)]
    pub lifetime: Lifetime,
}

impl super::TokenClaims for ZoneClaims {
    fn lifetime(&mut self) -> &mut Lifetime {
        &mut self.lifetime
    }
}

pub(super) fn key() -> KeyName {
    (String::new(), "zone-token-signing-key-1".into())
}

pub async fn issue(
    resources: &Resources,
    zone: &str,
    scope: Vec<String>,
    valid_for: Duration,
) -> Result<String, TokenError> {
    let claims = ZoneClaims {
        zone: zone.into(),
        scope,
        ..Default::default()
    };
    sign(resources, &key(), claims, valid_for).await
}

/// Checks the token and that it is `zone`'s, for `scope`.
pub async fn verify(
    resources: &Resources,
    token: &str,
    zone: &str,
    scope: &str,
) -> Result<ZoneClaims, TokenError> {
    let claims: ZoneClaims =
        verify_signed(resources, &key(), "zone", "the global's key", token).await?;
    if claims.zone != zone {
        return Err(TokenError::Mismatch {
            claim: "zone",
            allowed: claims.zone,
            actual: zone.into(),
        });
    }
    if !claims.scope.iter().any(|s| s == scope) {
        return Err(TokenError::Scope {
            scope: claims.scope,
            wanted: scope.into(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;
    use crate::store::SqliteStore;

    async fn resources() -> Resources {
        let store = SqliteStore::in_memory().unwrap();
        Resources::open(Box::new(store), Role::Global, "test")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_zone_token_is_for_its_zone_and_scope_only() {
        let r = resources().await;
        let t = issue(&r, "zone-1", vec!["cp".into()], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(verify(&r, &t, "zone-1", "cp").await.unwrap().zone, "zone-1");
        let other = verify(&r, &t, "zone-2", "cp")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            other.contains("for zone \"zone-1\", not \"zone-2\""),
            "{other}"
        );
        let scope = verify(&r, &t, "zone-1", "ingress")
            .await
            .unwrap_err()
            .to_string();
        assert!(scope.contains("does not include \"ingress\""), "{scope}");
        // Another global's token: signed by a key this one does not have.
        let elsewhere = resources().await;
        let forged = issue(
            &elsewhere,
            "zone-1",
            vec!["cp".into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let err = verify(&r, &forged, "zone-1", "cp")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("signature is not valid"), "{err}");
        // A zone holds only the public key: it checks, it cannot issue.
        let zone = Resources::open(
            Box::new(SqliteStore::in_memory().unwrap()),
            Role::Zone("zone-1".into()),
            "test",
        )
        .await
        .unwrap();
        // What the global sends its zones: the public halves only.
        for key in crate::tokens::synced_public_keys(&r).await {
            let (name, data) = key.unwrap();
            assert!(!name.contains("signing-key"), "{name}");
            zone.replace_secret("", &name, &data).await.unwrap();
        }
        let ingress = issue(
            &r,
            "zone-1",
            vec!["ingress".into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!(
            verify(&zone, &ingress, "zone-1", "ingress")
                .await
                .unwrap()
                .zone,
            "zone-1"
        );
        assert!(verify(&zone, &forged, "zone-1", "ingress").await.is_err());
        let err = issue(
            &zone,
            "zone-1",
            vec!["ingress".into()],
            Duration::from_secs(60),
        )
        .await;
        assert!(matches!(err, Err(TokenError::NotSynced(_))), "{err:?}");
        let expired = issue(&r, "zone-1", vec!["cp".into()], Duration::ZERO)
            .await
            .unwrap();
        let err = verify(&r, &expired, "zone-1", "cp")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired"), "{err}");
    }
}
