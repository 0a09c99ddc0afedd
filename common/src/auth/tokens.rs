//! siphon's access tokens: short-lived HS256 JWTs under the token signing key, carrying
//! the client, the granted scopes and the client's *generation* (see
//! `storage::clients::ClientRecord::generation`).
//!
//! Verifying one is an HMAC and a lookup in [`Generations`], a per-instance memory of
//! each client's current generation refreshed at most every `token_recheck`
//! (`SIPHON_TOKEN_RECHECK_SECONDS`): no Argon2, no database round trip on the hot path, and a
//! token stops working within that interval (5 s by default) when its client is deleted,
//! its keys change or its policies change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jwt;

/// The issuer written into (and required of) siphon's tokens.
const ISSUER: &str = "siphon";

/// Claims of a valid access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessClaims {
    pub client_id: String,
    pub scope: String,
    pub generation: String,
}

/// Makes an access token for `client_id` with `scope` at `generation`, valid for
/// `lifetime` from `now` (seconds since the epoch).
pub fn issue(
    key: &[u8],
    client_id: &str,
    scope: &str,
    generation: &str,
    lifetime: Duration,
    now: i64,
) -> String {
    jwt::sign_hs256(
        key,
        &json!({
            "iss": ISSUER,
            "sub": client_id,
            "scope": scope,
            "gen": generation,
            "iat": now,
            "exp": now + lifetime.as_secs() as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

/// Checks an access token's signature, issuer and expiry at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Option<AccessClaims> {
    let claims = jwt::verify_hs256(key, token).ok()?;
    let s = |k: &str| claims.get(k).and_then(Value::as_str);
    if s("iss") != Some(ISSUER) || claims.get("exp").and_then(Value::as_i64)? <= now {
        return None;
    }
    Some(AccessClaims {
        client_id: s("sub")?.to_string(),
        scope: s("scope")?.to_string(),
        generation: s("gen")?.to_string(),
    })
}

/// What one instance last read of each client's generation (`None`: no such client).
pub struct Generations {
    recheck: Duration,
    seen: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// Clients remembered at most (the oldest half is dropped when full).
const MAX_CLIENTS: usize = 10_000;

impl Generations {
    pub fn new(recheck: Duration) -> Self {
        Generations {
            recheck,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The remembered generation of `client_id`, if read less than `recheck` ago.
    pub fn fresh(&self, client_id: &str) -> Option<Option<String>> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(client_id)
            .filter(|(_, at)| at.elapsed() < self.recheck)
            .map(|(g, _)| g.clone())
    }

    /// Remembers what was just read of `client_id`.
    pub fn remember(&self, client_id: &str, generation: Option<String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_CLIENTS && !seen.contains_key(client_id) {
            let recheck = self.recheck;
            seen.retain(|_, (_, at)| at.elapsed() < recheck);
            if seen.len() >= MAX_CLIENTS {
                seen.clear();
            }
        }
        seen.insert(client_id.to_string(), (generation, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_client_scope_and_generation_until_they_expire() {
        let t = issue(
            b"k",
            "c",
            "system/Patient.rs",
            "7:9",
            Duration::from_secs(300),
            1_000,
        );
        let claims = verify(b"k", &t, 1_299).unwrap();
        assert_eq!(claims.client_id, "c");
        assert_eq!(claims.scope, "system/Patient.rs");
        assert_eq!(claims.generation, "7:9");
        assert!(verify(b"k", &t, 1_300).is_none(), "expired");
        assert!(verify(b"other", &t, 1_000).is_none(), "another key");
        let foreign = jwt::sign_hs256(
            b"k",
            &json!({"iss": "x", "sub": "c", "scope": "", "gen": "1", "exp": 2_000}),
        );
        assert!(verify(b"k", &foreign, 1_000).is_none(), "another issuer");
    }

    #[test]
    fn generations_are_trusted_for_the_recheck_interval_only() {
        let g = Generations::new(Duration::from_millis(50));
        assert_eq!(g.fresh("c"), None);
        g.remember("c", Some("1".into()));
        assert_eq!(g.fresh("c"), Some(Some("1".into())));
        g.remember("gone", None);
        assert_eq!(g.fresh("gone"), Some(None));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.fresh("c"), None);
    }
}
