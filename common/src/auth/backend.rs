//! SMART Backend Services ("client-confidential-asymmetric"): the token endpoint.
//!
//! A client registered with public keys (a Client with `jwks`, or `jwks_uri` where it
//! publishes them) signs a short-lived JWT assertion and trades it for an access token:
//!
//! 1. `grant_type=client_credentials`, `client_assertion_type=...:jwt-bearer`;
//! 2. the assertion's `iss` = `sub` = a registered client id, `aud` = this token URL,
//!    `exp` in the future and at most 5 minutes ahead, a `jti`;
//! 3. its signature verifies (RS256/384/512, ES256/384) with a key of the client chosen
//!    by `kid`; a `jku` header must be the client's registered `jwks_uri`; an unknown
//!    `kid` refetches the `jwks_uri` (at most every [`REFETCH_AFTER`]);
//! 4. the `jti` was never used before (remembered in Postgres until `exp`, so every
//!    instance agrees);
//! 5. the scope granted is the requested one intersected with what the client's
//!    AccessPolicies allow; nothing left is `invalid_scope`.
//!
//! Failures answer RFC 6749 error codes and nothing more precise (what failed is logged
//! for the operator, never told to the caller). Failed assertions spend the same failure
//! budget as wrong Basic secrets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use super::jwt::{self, Jwk};
use super::scopes::Grants;
use crate::sources::http::HttpSource;

/// The assertion type SMART Backend Services uses.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead an assertion's `exp` may be.
pub const MAX_ASSERTION_LIFETIME: i64 = 300;
/// Clock skew tolerated on `exp` and `iat`.
pub const SKEW: i64 = 30;
/// A `jwks_uri` is fetched again at most this often for an unknown `kid` (a key just
/// rotated in works within a second; a flood of made-up `kid`s makes at most one fetch
/// a second per registered URL, and spends the failure budget).
pub const REFETCH_AFTER: Duration = Duration::from_secs(1);
/// Fetched key sets are kept this long.
pub const KEYS_TTL: Duration = Duration::from_secs(300);
/// The largest key set read from a `jwks_uri`.
pub const MAX_JWKS_BYTES: u64 = 64 * 1024;

/// An RFC 6749 section 5.2 error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthError {
    /// 400: a parameter is missing or repeated.
    InvalidRequest(String),
    /// 401: the client could not be authenticated (whatever the reason).
    InvalidClient,
    /// 400: the assertion is not acceptable (claims, replay).
    InvalidGrant,
    /// 400: nothing of what was asked is allowed.
    InvalidScope,
    /// 400: not `client_credentials`.
    UnsupportedGrantType,
    /// 429: too many failures for this client or source.
    Throttled { retry_after_secs: u64 },
    /// 503: the store could not be read; try again.
    Unavailable,
}

impl OAuthError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient => 401,
            OAuthError::Throttled { .. } => 429,
            OAuthError::Unavailable => 503,
            _ => 400,
        }
    }

    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::Throttled { .. } => "slow_down",
            OAuthError::Unavailable => "temporarily_unavailable",
        }
    }

    /// The JSON body: `error` and a description that tells no more than the code.
    pub fn body(&self) -> Value {
        let description = match self {
            OAuthError::InvalidRequest(m) => m.clone(),
            OAuthError::InvalidClient => "client authentication failed".into(),
            OAuthError::InvalidGrant => "the client assertion is not acceptable".into(),
            OAuthError::InvalidScope => "none of the requested scopes is allowed".into(),
            OAuthError::UnsupportedGrantType => "only client_credentials is supported".into(),
            OAuthError::Throttled { retry_after_secs } => {
                format!("too many failed attempts; retry after {retry_after_secs} s")
            }
            OAuthError::Unavailable => "try again later".into(),
        };
        serde_json::json!({"error": self.code(), "error_description": description})
    }
}

/// A successful token response.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Issued {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

/// The form fields of a token request (each at most once).
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub scope: String,
    pub client_assertion_type: String,
    pub client_assertion: String,
}

impl TokenRequest {
    /// Reads an `application/x-www-form-urlencoded` body; a repeated or missing field
    /// is `invalid_request`.
    pub fn parse(body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let mut seen: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if seen.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::InvalidRequest(format!("{k} is repeated")));
            }
        }
        let mut take = |k: &str| seen.remove(k).unwrap_or_default();
        let request = TokenRequest {
            grant_type: take("grant_type"),
            scope: take("scope"),
            client_assertion_type: take("client_assertion_type"),
            client_assertion: take("client_assertion"),
        };
        if request.grant_type.is_empty() {
            return Err(OAuthError::InvalidRequest("grant_type is missing".into()));
        }
        Ok(request)
    }

    /// Checks the form is SMART Backend Services': `client_credentials` with a JWT
    /// bearer assertion.
    pub fn check_grant(&self) -> Result<(), OAuthError> {
        if self.grant_type != "client_credentials" {
            return Err(OAuthError::UnsupportedGrantType);
        }
        if self.client_assertion_type != JWT_BEARER {
            return Err(OAuthError::InvalidRequest(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        if self.client_assertion.is_empty() {
            return Err(OAuthError::InvalidRequest(
                "client_assertion is missing".into(),
            ));
        }
        Ok(())
    }
}

/// The checked claims of an assertion.
#[derive(Debug, PartialEq, Eq)]
pub struct Assertion {
    pub client_id: String,
    pub jti: String,
    pub exp: i64,
}

/// Checks an assertion's claims (not its signature) at `now` against `token_url`.
/// The reason a check failed is for the log only.
pub fn check_claims(claims: &Value, token_url: &str, now: i64) -> Result<Assertion, String> {
    let s = |k: &str| claims.get(k).and_then(Value::as_str);
    let iss = s("iss").ok_or("iss is missing")?;
    if s("sub") != Some(iss) {
        return Err("sub is not iss".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == token_url,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud is not {token_url}"));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("exp is missing or not a number")?;
    if exp <= now - SKEW {
        return Err("expired".into());
    }
    if exp > now + MAX_ASSERTION_LIFETIME + SKEW {
        return Err("exp is more than 5 minutes ahead".into());
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        if iat > now + SKEW {
            return Err("iat is in the future".into());
        }
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
        if nbf > now + SKEW {
            return Err("not valid yet (nbf)".into());
        }
    }
    let jti = s("jti").filter(|j| !j.is_empty() && j.len() <= 256);
    let jti = jti.ok_or("jti is missing")?;
    if iss.is_empty() || iss.len() > 256 {
        return Err("iss is not a client id".into());
    }
    Ok(Assertion {
        client_id: iss.to_string(),
        jti: jti.to_string(),
        exp,
    })
}

/// Key sets fetched from `jwks_uri`s, through the URL guard.
pub struct KeySets {
    http: Option<HttpSource>,
    fetched: Mutex<HashMap<String, (Vec<Jwk>, Instant)>>,
}

impl KeySets {
    /// Fetches with `http` (its URL policy applies to every fetch and redirect); without
    /// one, clients must register their keys inline.
    pub fn new(http: Option<HttpSource>) -> Self {
        KeySets {
            http,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// The keys at `url`: from memory while fresh; `refetch` (an unknown `kid`) fetches
    /// again unless the last fetch was less than [`REFETCH_AFTER`] ago. A fetch that
    /// fails gives no keys (logged).
    pub async fn keys(&self, url: &str, refetch: bool) -> Vec<Jwk> {
        let mut fetched = self.fetched.lock().await;
        if let Some((keys, at)) = fetched.get(url) {
            let age = at.elapsed();
            if age < KEYS_TTL && (!refetch || age < REFETCH_AFTER) {
                return keys.clone();
            }
        }
        let keys = match self.fetch(url).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(jwks_uri = %shown(url), error = %e, "cannot fetch a client's key set");
                Vec::new()
            }
        };
        if fetched.len() > 1_000 {
            fetched.clear();
        }
        fetched.insert(url.to_string(), (keys.clone(), Instant::now()));
        keys
    }

    async fn fetch(&self, url: &str) -> Result<Vec<Jwk>, String> {
        let http = self
            .http
            .as_ref()
            .ok_or("jwks_uri keys are not fetched by this function")?;
        let opened = tokio::time::timeout(Duration::from_secs(10), http.open_url(url, None))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        let mut limited = opened.body.take(MAX_JWKS_BYTES + 1);
        let read = limited.read_to_end(&mut body);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| "timed out reading".to_string())?
            .map_err(|e| e.to_string())?;
        if body.len() as u64 > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        let set: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        Ok(jwt::keys_of(&set))
    }
}

/// A URL as it may be logged (no query: it could carry a credential).
fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or("")
}

/// The scope a token gets: each requested scope intersected with what is allowed,
/// written as the client wrote it when granted whole (`system/*.read` stays `.read`:
/// clients look for the names they asked for), in v2 form when granted in part, left
/// out when not at all. Nothing granted (an empty request included) is `invalid_scope`.
pub fn granted(requested: &str, allowed: &Grants) -> Result<(Grants, String), OAuthError> {
    let mut grants = Grants::default();
    let mut written = Vec::new();
    for token in requested.split_ascii_whitespace() {
        let asked = Grants::parse(token);
        let got = asked.intersect(allowed);
        if got.is_empty() {
            continue;
        }
        if got == asked {
            written.push(token.to_string());
        } else {
            written.push(got.to_string());
        }
        grants = grants.union(&got);
    }
    if grants.is_empty() {
        return Err(OAuthError::InvalidScope);
    }
    written.dedup();
    Ok((grants, written.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://fhir.example.org/auth/token";

    #[test]
    fn only_client_credentials_with_a_jwt_assertion_is_a_grant() {
        let form = |body: &str| TokenRequest::parse(body.as_bytes()).unwrap().check_grant();
        let jwt = "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";
        assert!(form(&format!(
            "grant_type=client_credentials&{jwt}&client_assertion=x"
        ))
        .is_ok());
        assert!(matches!(
            form(&format!("grant_type=password&{jwt}&client_assertion=x")),
            Err(OAuthError::UnsupportedGrantType)
        ));
        assert!(matches!(
            form("grant_type=client_credentials&client_assertion_type=basic&client_assertion=x"),
            Err(OAuthError::InvalidRequest(m)) if m.contains("client_assertion_type")
        ));
        assert!(matches!(
            form(&format!("grant_type=client_credentials&{jwt}")),
            Err(OAuthError::InvalidRequest(m)) if m.contains("client_assertion is missing")
        ));
    }

    fn claims(over: Value) -> Value {
        let mut c = json!({"iss": "c", "sub": "c", "aud": URL, "exp": 1_100, "jti": "j1"});
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn good_claims_pass() {
        let a = check_claims(&claims(json!({})), URL, 1_000).unwrap();
        assert_eq!(
            a,
            Assertion {
                client_id: "c".into(),
                jti: "j1".into(),
                exp: 1_100
            }
        );
        check_claims(&claims(json!({"aud": ["x", URL]})), URL, 1_000).unwrap();
    }

    #[test]
    fn each_bad_claim_is_refused() {
        for (over, why) in [
            (json!({"iss": null}), "iss"),
            (json!({"sub": "d"}), "sub"),
            (json!({"aud": "https://other.example.org/token"}), "aud"),
            (json!({"aud": null}), "aud"),
            (json!({"exp": 900}), "expired"),
            (json!({"exp": "1100"}), "exp"),
            (json!({"exp": 1_000 + 301 + SKEW}), "5 minutes"),
            (json!({"jti": null}), "jti"),
            (json!({"jti": ""}), "jti"),
            (json!({"iat": 1_000 + SKEW + 1}), "iat"),
            (json!({"nbf": 1_000 + SKEW + 1}), "nbf"),
        ] {
            let e = check_claims(&claims(over.clone()), URL, 1_000).unwrap_err();
            assert!(e.contains(why), "{over}: {e}");
        }
    }

    #[test]
    fn token_requests_are_forms_with_single_fields() {
        let r = TokenRequest::parse(
            b"grant_type=client_credentials&scope=system%2F*.rs&client_assertion=x",
        )
        .unwrap();
        assert_eq!(r.scope, "system/*.rs");
        assert_eq!(r.client_assertion, "x");
        assert!(matches!(
            TokenRequest::parse(b"scope=x"),
            Err(OAuthError::InvalidRequest(_))
        ));
        assert!(matches!(
            TokenRequest::parse(b"grant_type=a&grant_type=b"),
            Err(OAuthError::InvalidRequest(_))
        ));
    }

    #[test]
    fn the_granted_scope_is_the_intersection_written_as_asked() {
        let allowed = Grants::parse("system/*.rs");
        let g = |asked| granted(asked, &allowed).map(|(_, s)| s);
        assert_eq!(g("system/*.read").unwrap(), "system/*.read");
        assert_eq!(
            g("system/Patient.read system/Observation.rs").unwrap(),
            "system/Patient.read system/Observation.rs"
        );
        assert_eq!(g("system/*.*").unwrap(), "system/*.rs");
        assert_eq!(g("system/*.cruds system/$dump-sql").unwrap(), "system/*.rs");
        for refused in [
            "",
            "launch fhirUser",
            "system/Patient.write",
            "system/Patient.cud",
            "system/UnknownResource.read",
            "system/Patient.xyz",
            "system/Patient.rs?a=b",
        ] {
            assert_eq!(g(refused), Err(OAuthError::InvalidScope), "{refused:?}");
        }
        let patients = Grants::parse("system/Patient.rs");
        assert_eq!(
            granted("system/*.read", &patients).unwrap().1,
            "system/Patient.rs"
        );
    }

    #[test]
    fn errors_say_only_their_code() {
        assert_eq!(OAuthError::InvalidClient.status(), 401);
        assert_eq!(OAuthError::InvalidClient.body()["error"], "invalid_client");
        assert_eq!(OAuthError::InvalidScope.status(), 400);
        assert_eq!(
            OAuthError::UnsupportedGrantType.body()["error"],
            "unsupported_grant_type"
        );
    }
}
