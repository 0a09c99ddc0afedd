//! SMART Backend Services towards a remote Bulk Data server: siphon as the confidential
//! client ("client-confidential-asymmetric"). siphon signs a client assertion (ES384)
//! with its own key, trades it at the remote's `token_endpoint` (read from the remote's
//! `.well-known/smart-configuration`) for an access token, and sends that token until
//! shortly before it expires. The public half of the key is published at
//! `/.well-known/jwks.json`: the URL (or the set itself) to register with the remote.
//!
//! Every request goes through the URL guard ([`HttpSource::call_with_body`]); what the
//! remote answers is bounded and never logged as a credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::auth::jwt::{Jwk, SigningKey};
use crate::config::{ConfigError, Env, Secret};
use crate::error::{Error, Result};
use crate::model::pull::RemoteAuth;
use crate::sources::http::{HeaderName, HeaderValue, HttpSource, Method};
use crate::sources::SourceError;

/// The largest token or SMART configuration answer read.
const MAX_ANSWER: u64 = 64 << 10;
/// A client assertion's lifetime (SMART: at most five minutes).
const ASSERTION_SECONDS: i64 = 300;
/// The scope asked for when the request names none.
pub const DEFAULT_SCOPE: &str = "system/*.read";

/// Where siphon's own client key comes from.
#[derive(Clone, Debug, Default)]
pub enum ClientKeyConfig {
    /// No key: pulls with `auth` type `smart` are refused.
    #[default]
    None,
    /// `SIPHON_CLIENT_KEY`: the key itself (local settings).
    Static(Secret),
    /// `SIPHON_CLIENT_KEY_ARN`: a Secrets Manager secret holding it, read on first use.
    SecretArn(String),
}

impl ClientKeyConfig {
    /// `SIPHON_CLIENT_KEY` (a P-384 private key, PKCS#8, as PEM or base64 DER; checked
    /// here) or `SIPHON_CLIENT_KEY_ARN`.
    pub fn from_env(env: &Env) -> std::result::Result<Self, ConfigError> {
        match (
            env.get("SIPHON_CLIENT_KEY"),
            env.get("SIPHON_CLIENT_KEY_ARN"),
        ) {
            (Some(text), _) => {
                parse_key(text).map_err(|e| ConfigError::new("SIPHON_CLIENT_KEY", e))?;
                Ok(ClientKeyConfig::Static(Secret::new(text)))
            }
            (None, Some(arn)) => Ok(ClientKeyConfig::SecretArn(arn.to_string())),
            (None, None) => Ok(ClientKeyConfig::None),
        }
    }
}

/// A signing key from its text: a PKCS#8 P-384 private key as PEM
/// (`-----BEGIN PRIVATE KEY-----`) or as base64 DER. Its `kid` is its RFC 7638
/// thumbprint.
pub fn parse_key(text: &str) -> std::result::Result<SigningKey, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "is not PEM or base64: give a PKCS#8 P-384 private key".to_string())?;
    let unnamed = SigningKey::from_pkcs8(&der, "")
        .map_err(|_| "is not a PKCS#8 P-384 (ES384) private key with its public key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384)".to_string())?;
    let kid = thumbprint(&unnamed.public_jwk());
    SigningKey::from_pkcs8(&der, &kid).map_err(|_| "cannot be read twice".to_string())
}

/// The RFC 7638 thumbprint of an EC public key: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(jwk: &Jwk) -> String {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
        jwk.crv.as_deref().unwrap_or_default(),
        jwk.kty,
        jwk.x.as_deref().unwrap_or_default(),
        jwk.y.as_deref().unwrap_or_default()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The FHIR base of a kick-off URL: `[base]/$export`, `[base]/Patient/$export` or
/// `[base]/Group/{id}/$export` without the operation, the query and the fragment.
pub fn fhir_base(export_url: &str) -> std::result::Result<url::Url, SourceError> {
    let mut url = url::Url::parse(export_url)
        .map_err(|e| SourceError::Other(format!("exportUrl is not a URL: {e}")))?;
    let mut segments: Vec<String> = url
        .path_segments()
        .map(|s| s.map(str::to_string).collect())
        .unwrap_or_default();
    if matches!(
        segments.last().map(String::as_str),
        Some("$export" | "%24export")
    ) {
        segments.pop();
    }
    let n = segments.len();
    if segments.last().map(String::as_str) == Some("Patient") {
        segments.pop();
    } else if n >= 2 && segments[n - 2] == "Group" {
        segments.truncate(n - 2);
    }
    url.set_path(&segments.join("/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

struct Cached {
    token: String,
    until: Instant,
}

/// siphon's client key and the access tokens it holds, shared by the tasks and loads of
/// one instance.
#[derive(Default)]
pub struct RemoteCredentials {
    config: ClientKeyConfig,
    key: OnceCell<Option<Arc<SigningKey>>>,
    /// (discovery URL, client id, scope) -> token.
    tokens: Mutex<HashMap<(String, String, String), Cached>>,
}

impl std::fmt::Debug for RemoteCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCredentials")
            .field("configured", &self.configured())
            .finish_non_exhaustive()
    }
}

impl RemoteCredentials {
    pub fn new(config: ClientKeyConfig) -> Self {
        RemoteCredentials {
            config,
            ..Default::default()
        }
    }

    /// Whether siphon has a client key (SMART pulls are possible).
    pub fn configured(&self) -> bool {
        !matches!(self.config, ClientKeyConfig::None)
    }

    /// The key, read on first use.
    pub async fn key(&self) -> Result<Option<Arc<SigningKey>>> {
        self.key
            .get_or_try_init(|| async {
                let text = match &self.config {
                    ClientKeyConfig::None => return Ok(None),
                    ClientKeyConfig::Static(s) => s.expose().to_string(),
                    ClientKeyConfig::SecretArn(arn) => {
                        crate::secrets::secret_string(arn, "the client key secret").await?
                    }
                };
                parse_key(&text)
                    .map(|k| Some(Arc::new(k)))
                    .map_err(|e| Error::Internal(format!("the client key {e}")))
            })
            .await
            .cloned()
    }

    /// The JWK Set siphon publishes (`{"keys": []}` without a key).
    pub async fn jwks(&self) -> Result<Value> {
        let keys: Vec<Jwk> = self.key().await?.iter().map(|k| k.public_jwk()).collect();
        Ok(json!({ "keys": keys }))
    }

    /// The `Authorization` value for `auth` towards the remote of `export_url`: the
    /// configured header, or for `smart` an access token (fetched, or held until 30 s
    /// before it expires).
    pub async fn authorization(
        &self,
        http: &HttpSource,
        auth: &RemoteAuth,
        export_url: &str,
    ) -> std::result::Result<Option<String>, SourceError> {
        let Some(slot) = token_slot(auth, export_url)? else {
            return Ok(auth.header());
        };
        if let Some(c) = self.lock().get(&slot) {
            if c.until > Instant::now() {
                return Ok(Some(format!("Bearer {}", c.token)));
            }
        }
        let (discovery, client_id, scope) = &slot;
        let (token, lifetime) = self.fetch(http, discovery, client_id, scope).await?;
        let until =
            Instant::now() + lifetime.saturating_sub((lifetime / 2).min(Duration::from_secs(30)));
        self.lock().insert(
            slot,
            Cached {
                token: token.clone(),
                until,
            },
        );
        Ok(Some(format!("Bearer {token}")))
    }

    /// Drops the token held for `auth` towards the remote of `export_url`, so the next
    /// request fetches a new one: the remote refused it (revoked, or expired before the
    /// lifetime it announced). Nothing for credentials siphon does not fetch.
    pub fn forget(&self, auth: &RemoteAuth, export_url: &str) -> bool {
        let Ok(Some(slot)) = token_slot(auth, export_url) else {
            return false;
        };
        self.lock().remove(&slot);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Cached>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One token request: discovery, a signed assertion, the token endpoint.
    async fn fetch(
        &self,
        http: &HttpSource,
        discovery: &str,
        client_id: &str,
        scope: &str,
    ) -> std::result::Result<(String, Duration), SourceError> {
        let key = self
            .key()
            .await
            .map_err(|e| SourceError::Transient(e.to_string()))?
            .ok_or_else(|| {
                SourceError::Refused(
                    "siphon holds no client key (SIPHON_CLIENT_KEY or SIPHON_CLIENT_KEY_ARN)"
                        .into(),
                )
            })?;
        let token_url = discover(http, discovery).await?;
        let now = chrono::Utc::now().timestamp();
        let assertion = key.sign(&json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
            "jti": uuid::Uuid::new_v4().to_string(),
        }));
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope)
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", &assertion)
            .finish();
        let headers = [
            header("content-type", "application/x-www-form-urlencoded"),
            header("accept", "application/json"),
        ];
        let answer = http
            .call_with_body(Method::POST, &token_url, &headers, None, form.into())
            .await?;
        let status = answer.status;
        let body = read_json(answer, "the token endpoint").await;
        match status {
            200 => token_of(&body?),
            429 | 500..=599 => Err(SourceError::Transient(format!(
                "the remote's token endpoint answered HTTP {status}"
            ))),
            _ => {
                let body = body.unwrap_or_default();
                let text = |k: &str| {
                    body[k]
                        .as_str()
                        .map(|s| s.chars().take(200).collect::<String>())
                        .unwrap_or_default()
                };
                Err(SourceError::AccessDenied(format!(
                    "the remote's token endpoint refused client {client_id:?}: HTTP {status} {} {}",
                    text("error"),
                    text("error_description")
                )))
            }
        }
    }
}

/// What a worker fetches a pull's credentials with: siphon's key and tokens, and the
/// guarded HTTP client the token requests go through. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RemoteAccess {
    pub credentials: Arc<RemoteCredentials>,
    pub http: HttpSource,
}

impl RemoteAccess {
    /// The `Authorization` value for `auth` towards the remote of `export_url`.
    pub async fn authorization(
        &self,
        auth: &RemoteAuth,
        export_url: &str,
    ) -> std::result::Result<Option<String>, SourceError> {
        self.credentials
            .authorization(&self.http, auth, export_url)
            .await
    }

    /// See [`RemoteCredentials::forget`]: `true` when there was a token to renew.
    pub fn forget(&self, auth: &RemoteAuth, export_url: &str) -> bool {
        self.credentials.forget(auth, export_url)
    }

    /// What a worker without remote access can send: a static credential; `smart` is
    /// refused.
    pub fn without_key(auth: &RemoteAuth) -> std::result::Result<Option<String>, SourceError> {
        match auth {
            RemoteAuth::Smart { .. } => Err(SourceError::Refused(
                "this worker holds no client key for SMART pulls".into(),
            )),
            other => Ok(other.header()),
        }
    }
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// Where a `smart` credential's token is held: (discovery URL, client id, scope). The
/// discovery URL is the registered `oauthMetadataUrl`, or the kick-off URL's FHIR base's
/// `.well-known/smart-configuration`. `None` for credentials siphon does not fetch.
type TokenSlot = (String, String, String);

fn token_slot(
    auth: &RemoteAuth,
    export_url: &str,
) -> std::result::Result<Option<TokenSlot>, SourceError> {
    let RemoteAuth::Smart {
        client_id,
        scope,
        metadata,
    } = auth
    else {
        return Ok(None);
    };
    let discovery = match metadata {
        Some(m) => m.clone(),
        None => format!(
            "{}/.well-known/smart-configuration",
            fhir_base(export_url)?.as_str().trim_end_matches('/')
        ),
    };
    Ok(Some((discovery, client_id.clone(), scope.clone())))
}

/// The `token_endpoint` of the SMART configuration at `url`, which must offer
/// `private_key_jwt` when it lists its methods. A submission's `oauthMetadataUrl` may
/// instead name OAuth 2.0 Protected Resource Metadata (RFC 9728): its first
/// `authorization_servers` issuer's metadata (RFC 8414) then gives the endpoint.
async fn discover(http: &HttpSource, url: &str) -> std::result::Result<String, SourceError> {
    let mut config = metadata(http, url, "the SMART configuration").await?;
    let mut from = url.to_string();
    if config.get("token_endpoint").is_none() {
        if let Some(issuer) = config["authorization_servers"][0]
            .as_str()
            .map(str::to_string)
        {
            let issuer = issuer.as_str();
            from = authorization_server_metadata(issuer).ok_or_else(|| {
                SourceError::Other(format!("{url}: issuer {issuer:?} is not an https URL"))
            })?;
            config = metadata(http, &from, "the authorization server's metadata").await?;
            if config["issuer"].as_str() != Some(issuer) {
                return Err(SourceError::Other(format!(
                    "{from}: its issuer is not {issuer:?} (RFC 8414 section 3.3)"
                )));
            }
        }
    }
    let endpoint = config["token_endpoint"]
        .as_str()
        .and_then(|t| url::Url::parse(t).ok())
        .ok_or_else(|| SourceError::Other(format!("{from}: no token_endpoint URL")))?;
    if let Some(methods) = config["token_endpoint_auth_methods_supported"].as_array() {
        if !methods.iter().any(|m| m == "private_key_jwt") {
            return Err(SourceError::Other(format!(
                "{from}: the token endpoint does not take private_key_jwt"
            )));
        }
    }
    Ok(endpoint.to_string())
}

/// One metadata document (`what`), as JSON.
async fn metadata(
    http: &HttpSource,
    url: &str,
    what: &str,
) -> std::result::Result<Value, SourceError> {
    let headers = [header("accept", "application/json")];
    let answer = http.call(Method::GET, url, &headers, None).await?;
    let status = answer.status;
    let body = read_json(answer, what).await;
    match status {
        200 => body,
        429 | 500..=599 => Err(SourceError::Transient(format!("{url}: HTTP {status}"))),
        _ => Err(SourceError::Other(format!(
            "{url}: HTTP {status}: the remote publishes no {}",
            what.trim_start_matches("the ")
        ))),
    }
}

/// Where an issuer publishes its metadata (RFC 8414 section 3.1: the well-known path
/// between the host and the issuer's own path). `None` unless the issuer is an http(s)
/// URL without query or fragment.
fn authorization_server_metadata(issuer: &str) -> Option<String> {
    let u = url::Url::parse(issuer).ok()?;
    if !matches!(u.scheme(), "https" | "http") || issuer.contains(['?', '#']) {
        return None;
    }
    let path = u.path().trim_end_matches('/');
    Some(format!(
        "{}/.well-known/oauth-authorization-server{path}",
        u.origin().ascii_serialization()
    ))
}

/// A JSON answer, read up to [`MAX_ANSWER`] bytes.
async fn read_json(
    mut answer: crate::sources::http::Answer,
    what: &str,
) -> std::result::Result<Value, SourceError> {
    let mut body = Vec::new();
    (&mut answer.body)
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| SourceError::Transient(format!("{what}: {e}")))?;
    if body.len() as u64 > MAX_ANSWER {
        return Err(SourceError::Other(format!(
            "{what}: the answer is larger than {MAX_ANSWER} bytes"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| SourceError::Other(format!("{what}: the answer is not JSON: {e}")))
}

/// The access token and its lifetime from a token answer (RFC 6749 section 5.1).
fn token_of(body: &Value) -> std::result::Result<(String, Duration), SourceError> {
    let token = body["access_token"]
        .as_str()
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| SourceError::Other("the token answer has no usable access_token".into()))?;
    if !body["token_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(SourceError::Other(
            "the token answer's token_type is not bearer".into(),
        ));
    }
    let seconds = body["expires_in"].as_u64().unwrap_or(300).clamp(1, 3600);
    Ok((token.to_string(), Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fhir_base_drops_the_kick_off_path_at_every_level() {
        for (url, base) in [
            (
                "https://ehr.example/fhir/$export?_type=Patient",
                "https://ehr.example/fhir",
            ),
            (
                "https://ehr.example/fhir/Patient/$export",
                "https://ehr.example/fhir",
            ),
            (
                "https://ehr.example/r4/Group/g-1/$export#x",
                "https://ehr.example/r4",
            ),
            ("https://ehr.example/$export", "https://ehr.example/"),
        ] {
            assert_eq!(fhir_base(url).unwrap().as_str(), base, "{url}");
        }
    }

    #[test]
    fn a_key_reads_as_pem_or_base64_and_is_named_by_its_thumbprint() {
        let der = SigningKey::generate_pkcs8();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
            &b64[..64],
            &b64[64..]
        );
        let a = parse_key(&b64).unwrap().public_jwk();
        let b = parse_key(&pem).unwrap().public_jwk();
        assert_eq!(a, b);
        assert_eq!(a.kid.as_deref(), Some(thumbprint(&a).as_str()));
        assert_eq!(thumbprint(&a).len(), 43);
        assert!(parse_key("bm90IGEga2V5").unwrap_err().contains("P-384"));
        assert!(parse_key("%%%").unwrap_err().contains("base64"));
    }

    #[test]
    fn a_token_answer_needs_a_bearer_token() {
        let ok =
            token_of(&json!({"access_token": "t.1", "token_type": "Bearer", "expires_in": 120}));
        assert_eq!(ok.unwrap(), ("t.1".to_string(), Duration::from_secs(120)));
        for bad in [
            json!({"token_type": "bearer"}),
            json!({"access_token": "a b", "token_type": "bearer"}),
            json!({"access_token": "t", "token_type": "mac"}),
        ] {
            assert!(token_of(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_issuer_publishes_its_metadata_at_the_rfc_8414_path() {
        assert_eq!(
            authorization_server_metadata("https://auth.example.org").as_deref(),
            Some("https://auth.example.org/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            authorization_server_metadata("https://auth.example.org/tenant/1/").as_deref(),
            Some("https://auth.example.org/.well-known/oauth-authorization-server/tenant/1")
        );
        for bad in ["file:///etc/passwd", "https://a.example/?x=1", "not a url"] {
            assert_eq!(authorization_server_metadata(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_registered_metadata_url_is_where_the_token_comes_from() {
        let smart = |metadata: Option<&str>| RemoteAuth::Smart {
            client_id: "siphon".into(),
            scope: "system/*.rs".into(),
            metadata: metadata.map(str::to_string),
        };
        let (discovery, client, scope) =
            token_slot(&smart(None), "https://ehr.example/fhir/Group/g/$export")
                .unwrap()
                .unwrap();
        assert_eq!(
            discovery,
            "https://ehr.example/fhir/.well-known/smart-configuration"
        );
        assert_eq!((client.as_str(), scope.as_str()), ("siphon", "system/*.rs"));
        let registered = "https://p.example/.well-known/oauth-protected-resource";
        let slot = token_slot(&smart(Some(registered)), "https://p.example/m/1.json")
            .unwrap()
            .unwrap();
        assert_eq!(slot.0, registered);
        assert_eq!(
            token_slot(&RemoteAuth::None, "https://p.example/m").unwrap(),
            None
        );
    }
}
