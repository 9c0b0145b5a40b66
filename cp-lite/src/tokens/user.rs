//! User tokens (Kuma's `generate user-token`): who calls the REST API from
//! somewhere other than the CP's own host, and the groups they are in.
//! Issued by an admin, signed with `user-token-signing-key-1` (a global
//! secret; zones check with its public half, synced from the global).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{KeyName, Lifetime, TokenError, sign, verify_signed};
use crate::resources::Resources;

/// The group whose members may do everything (Kuma's name).
pub const ADMIN_GROUP: &str = "mesh-system:admin";
/// Every holder of a valid token is in it (Kuma's name).
pub const AUTHENTICATED_GROUP: &str = "mesh-system:authenticated";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Groups", default)]
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub lifetime: Lifetime,
}

impl super::TokenClaims for UserClaims {
    fn lifetime(&mut self) -> &mut Lifetime {
        &mut self.lifetime
    }
}

pub(super) fn key() -> KeyName {
    (String::new(), "user-token-signing-key-1".into())
}

pub async fn issue(
    resources: &Resources,
    name: &str,
    groups: Vec<String>,
    valid_for: Duration,
) -> Result<String, TokenError> {
    let claims = UserClaims {
        name: name.into(),
        groups,
        ..Default::default()
    };
    sign(resources, &key(), claims, valid_for).await
}

/// Where the admin's token is kept: the data dir, 0600 (Kuma keeps its
/// `admin-user-token` as a global secret). It lets an operator act as
/// admin from another host, or on this one when local callers are not
/// admins (`--api-localhost-is-admin=false`).
pub const ADMIN_TOKEN_FILE: &str = "admin-user-token";

/// How long the admin token lasts; a new one is written at the first
/// start after it ends (or when it no longer verifies).
const ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Writes the admin token into `dir` unless a valid one is there.
pub async fn ensure_admin_token(
    resources: &Resources,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, TokenError> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path)
        && verify(resources, &existing)
            .await
            .is_ok_and(|c| c.groups.iter().any(|g| g == ADMIN_GROUP))
    {
        return Ok(path);
    }
    let groups = vec![ADMIN_GROUP.to_string(), AUTHENTICATED_GROUP.to_string()];
    let token = issue(resources, "admin", groups, ADMIN_TOKEN_LIFETIME).await?;
    crate::private_files::write(&path, &token, 0o600).map_err(|source| TokenError::File {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(path = %path.display(), "admin user token written (0600)");
    Ok(path)
}

pub async fn verify(resources: &Resources, token: &str) -> Result<UserClaims, TokenError> {
    verify_signed(
        resources,
        &key(),
        "user",
        "this control plane's user-token key",
        token,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Role;
    use crate::store::SqliteStore;

    async fn resources() -> Resources {
        let store = SqliteStore::in_memory().unwrap();
        Resources::open(Box::new(store), Role::Standalone, "test")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_user_token_names_its_user_and_only_this_cp_can_make_one() {
        let r = resources().await;
        let t = issue(
            &r,
            "jane",
            vec![ADMIN_GROUP.into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let claims = verify(&r, &t).await.unwrap();
        assert_eq!((claims.name.as_str(), claims.groups.len()), ("jane", 1));
        let other = resources().await;
        let forged = issue(&other, "jane", vec![], Duration::from_secs(60))
            .await
            .unwrap();
        let err = verify(&r, &forged).await.unwrap_err().to_string();
        assert!(err.contains("signature is not valid"), "{err}");
        // A dataplane token is no user token.
        let dp = super::super::dataplane::issue(
            &r,
            super::super::dataplane::Claims {
                mesh: "default".into(),
                ..Default::default()
            },
            Duration::from_secs(60),
        )
        .await;
        if let Ok(dp) = dp {
            assert!(verify(&r, &dp).await.is_err());
        }
    }
}
