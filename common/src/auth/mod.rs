//! HTTP Basic authentication against `Client` resources, authorised by `AccessPolicy`
//! (`engine: allow` linked to the client), as in the Aidbox demo.
//!
//! Client secrets are stored as Argon2id hashes (`secret` is replaced on write and never
//! returned) and checked in constant time. The bootstrap admin client comes from
//! configuration ([`AdminConfig`]: `SIPHON_ADMIN_CLIENT_ID` / `SIPHON_ADMIN_CLIENT_SECRET`,
//! or in AWS the secret `SIPHON_ADMIN_SECRET_ARN`), never from the repository. Clients
//! and policies are read through the [`ClientStore`] port.
//!
//! Under attack: a verified secret is remembered for a short while by the instance
//! ([`cache`]: keyed by an HMAC, never the secret, dropped when the Client changes), so
//! a Client's repeated requests skip Argon2id; wrong secrets spend a failure budget per
//! client id and source ([`budget`]) after which the caller gets 429 with `Retry-After`
//! and nothing is hashed; an unknown client id is verified against a dummy hash, so it
//! costs and answers what a wrong secret does. Argon2id runs on the blocking pool, at
//! most one verification per core at a time, so a flood of guesses cannot stall the
//! requests that are already verified.

pub mod budget;
pub mod cache;

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};

use self::budget::{BudgetLimits, FailureBudget};
use self::cache::{CacheLimits, VerifiedCache};

use crate::config::{ConfigError, Env, Secret};
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;
pub use crate::storage::clients::ClientStore;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub admin: bool,
}

/// Hashes a client secret (Argon2id, random salt, PHC string).
pub fn hash_secret(secret: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a secret: {e}")))
}

/// Checks a secret against its stored hash (constant time inside Argon2).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// Prepares a resource for storage: a `Client`'s plain `secret` becomes `secretHash`.
pub fn protect(ty: &ResourceType, mut resource: Value) -> Result<Value> {
    if ty.as_str() == "Client" {
        if let Some(obj) = resource.as_object_mut() {
            if let Some(secret) = obj.remove("secret") {
                let secret = secret
                    .as_str()
                    .ok_or_else(|| Error::BadRequest("Client.secret must be a string".into()))?;
                obj.insert("secretHash".into(), Value::String(hash_secret(secret)?));
            }
        }
    }
    Ok(resource)
}

/// Removes what must never leave the service from a resource about to be returned.
pub fn redact(mut resource: Value) -> Value {
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("secretHash");
        obj.remove("secret");
        if obj.get("resourceType").and_then(Value::as_str) == Some("LoaderFile") {
            // A LoaderFile read from a presigned URL: the query string is a credential.
            if let Some(Value::String(url)) = obj.get_mut("url") {
                if let Some(cut) = url.find(['?', '#']) {
                    url.truncate(cut);
                }
            }
            // The SQS receipt handle kept with a lease controls that message.
            if let Some(Value::Object(lease)) = obj.get_mut("lease") {
                lease.remove("receipt");
            }
        }
    }
    resource
}

/// Where the bootstrap admin client comes from.
#[derive(Clone, Debug, Default)]
pub enum AdminConfig {
    /// No admin client.
    #[default]
    None,
    /// `SIPHON_ADMIN_CLIENT_ID` + `SIPHON_ADMIN_CLIENT_SECRET` (local development).
    Static { client_id: String, secret: Secret },
    /// `SIPHON_ADMIN_SECRET_ARN`: a Secrets Manager secret `{"client_id", "client_secret"}`,
    /// read on first use.
    SecretArn(String),
}

impl AdminConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match (
            env.get("SIPHON_ADMIN_CLIENT_ID"),
            env.get("SIPHON_ADMIN_CLIENT_SECRET"),
        ) {
            (Some(id), Some(secret)) => {
                return Ok(AdminConfig::Static {
                    client_id: id.to_string(),
                    secret: Secret::new(secret),
                })
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "SIPHON_ADMIN_CLIENT_SECRET",
                    "is required when SIPHON_ADMIN_CLIENT_ID is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "SIPHON_ADMIN_CLIENT_ID",
                    "is required when SIPHON_ADMIN_CLIENT_SECRET is set",
                ))
            }
            (None, None) => {}
        }
        Ok(match env.get("SIPHON_ADMIN_SECRET_ARN") {
            Some(arn) => AdminConfig::SecretArn(arn.to_string()),
            None => AdminConfig::None,
        })
    }
}

/// Checks `Authorization` headers.
pub struct Authenticator {
    clients: Arc<dyn ClientStore>,
    config: AdminConfig,
    admin: OnceCell<Option<(String, Secret)>>,
    cache: VerifiedCache,
    budget: FailureBudget,
    /// One Argon2id verification per core at a time.
    hashing: Semaphore,
}

/// What stands for the stored hash in the cache entries of the configured admin (its
/// secret does not change within an instance).
const ADMIN_VERSION: &str = "configured admin client";

/// The hash an unknown client's secret is verified against (same parameters as real
/// ones), so that an unknown id takes as long as a wrong secret.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret("not-a-client").unwrap_or_default())
}

impl Authenticator {
    /// An authenticator with the default cache and failure budget.
    pub fn new(clients: Arc<dyn ClientStore>, config: AdminConfig) -> Self {
        Self::with_limits(
            clients,
            config,
            CacheLimits::default(),
            BudgetLimits::default(),
        )
    }

    /// An authenticator with its own cache and budget limits.
    pub fn with_limits(
        clients: Arc<dyn ClientStore>,
        config: AdminConfig,
        cache: CacheLimits,
        budget: BudgetLimits,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Authenticator {
            clients,
            config,
            admin: OnceCell::new(),
            cache: VerifiedCache::new(cache),
            budget: FailureBudget::new(budget),
            hashing: Semaphore::new(cores),
        }
    }

    async fn admin(&self) -> Result<&Option<(String, Secret)>> {
        self.admin
            .get_or_try_init(|| async {
                match &self.config {
                    AdminConfig::None => Ok(None),
                    AdminConfig::Static { client_id, secret } => {
                        Ok(Some((client_id.clone(), secret.clone())))
                    }
                    AdminConfig::SecretArn(arn) => {
                        let raw = crate::secrets::secret_string(arn, "the admin secret").await?;
                        let v: Value = serde_json::from_str(&raw)
                            .map_err(|_| Error::Internal("the admin secret is not JSON".into()))?;
                        match (v["client_id"].as_str(), v["client_secret"].as_str()) {
                            (Some(id), Some(s)) => Ok(Some((id.to_string(), Secret::new(s)))),
                            _ => Err(Error::Internal(
                                "the admin secret needs client_id and client_secret".into(),
                            )),
                        }
                    }
                }
            })
            .await
    }

    /// Authenticates and authorises one request from its `Authorization` header;
    /// `source` is the caller's address when known (API Gateway's `sourceIp`, the peer
    /// of `make serve`). 401 without or with wrong credentials, 429 once the failure
    /// budget of this client id (and source) is spent, 403 when no AccessPolicy allows.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        source: Option<&str>,
    ) -> Result<Principal> {
        let (id, secret) = parse_basic(authorization)?;
        if let Some((admin_id, admin_secret)) = self.admin().await? {
            if id == *admin_id {
                // Remembered like a Client's, so guesses do not lock out an active admin.
                if !self.cache.contains(&id, ADMIN_VERSION, &secret) {
                    let last = self.take_attempt(&id, source)?;
                    if !bool::from(secret.as_bytes().ct_eq(admin_secret.expose().as_bytes())) {
                        self.failed(&id, source, last);
                        return Err(unauthorized());
                    }
                    self.budget.give_back(&id, source);
                    self.cache.insert(&id, ADMIN_VERSION, &secret);
                }
                return Ok(Principal {
                    client_id: id,
                    admin: true,
                });
            }
        }
        let hash = self.clients.secret_hash(&id).await?;
        let cached = hash
            .as_deref()
            .is_some_and(|h| self.cache.contains(&id, h, &secret));
        if !cached {
            let last = self.take_attempt(&id, source)?;
            // An unknown client is verified against a dummy hash: same cost, same answer.
            let ok = self
                .verify(&secret, hash.as_deref().unwrap_or_else(|| dummy_hash()))
                .await?
                && hash.is_some();
            match &hash {
                Some(h) if ok => {
                    self.budget.give_back(&id, source);
                    self.cache.insert(&id, h, &secret);
                }
                _ => {
                    self.failed(&id, source, last);
                    return Err(unauthorized());
                }
            }
        }
        if !self.clients.is_allowed(&id).await? {
            return Err(Error::Forbidden(format!(
                "no AccessPolicy allows client {id:?}"
            )));
        }
        Ok(Principal {
            client_id: id,
            admin: false,
        })
    }
}

impl Authenticator {
    /// A wrong secret (its attempt stays counted); says so in the log when it was the
    /// last one a budget allowed (once per window: the 429s that follow are not logged).
    fn failed(&self, id: &str, source: Option<&str>, last: bool) {
        if last {
            tracing::warn!(
                client_id = id,
                source = source.unwrap_or("unknown"),
                "wrong secrets: failure budget spent, answering 429 until the window closes"
            );
        }
    }

    /// Takes an attempt out of the failure budget, or answers 429 (nothing hashed).
    fn take_attempt(&self, id: &str, source: Option<&str>) -> Result<bool> {
        match self.budget.take(id, source) {
            Ok(last) => Ok(last),
            Err(wait) => Err(Error::Throttled {
                message: format!(
                    "too many wrong secrets for client {id:?}; retry after {} s",
                    wait.as_secs()
                ),
                retry_after_secs: wait.as_secs(),
            }),
        }
    }

    /// Argon2id on the blocking pool, one verification per core at a time.
    async fn verify(&self, secret: &str, phc: &str) -> Result<bool> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Error::Internal("the verifier is closed".into()))?;
        let (secret, phc) = (secret.to_string(), phc.to_string());
        tokio::task::spawn_blocking(move || verify_secret(&secret, &phc))
            .await
            .map_err(|e| Error::Internal(format!("secret verification failed: {e}")))
    }
}

fn unauthorized() -> Error {
    Error::Unauthorized(
        "wrong or missing credentials (HTTP Basic with a Client id and secret)".into(),
    )
}

fn parse_basic(header: Option<&str>) -> Result<(String, String)> {
    let value = header.ok_or_else(unauthorized)?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (id, secret) = text.split_once(':').ok_or_else(unauthorized)?;
    Ok((id.to_string(), secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("s3cret"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret!", &h));
    }

    #[test]
    fn basic_headers_parse() {
        assert_eq!(
            parse_basic(Some("Basic YnVsay1jbGllbnQ6c2VjcmV0")).unwrap(),
            ("bulk-client".into(), "secret".into())
        );
        for bad in [
            None,
            Some("Bearer x"),
            Some("Basic !!!"),
            Some("Basic Ym9ndXM="),
        ] {
            assert!(matches!(
                parse_basic(bad).unwrap_err(),
                Error::Unauthorized(_)
            ));
        }
    }

    #[test]
    fn clients_are_stored_hashed_and_returned_without_secrets() {
        let client = ResourceType::parse("Client").unwrap();
        let stored = protect(
            &client,
            serde_json::json!({"secret": "secret", "grant_types": ["basic"]}),
        )
        .unwrap();
        assert!(stored.get("secret").is_none());
        assert!(verify_secret(
            "secret",
            stored["secretHash"].as_str().unwrap()
        ));
        assert_eq!(
            redact(stored),
            serde_json::json!({"grant_types": ["basic"]})
        );
    }

    #[test]
    fn admin_config_needs_both_halves() {
        let both = Env::from_pairs(&[
            ("SIPHON_ADMIN_CLIENT_ID", "admin"),
            ("SIPHON_ADMIN_CLIENT_SECRET", "s3cret"),
        ]);
        assert!(matches!(
            AdminConfig::from_env(&both).unwrap(),
            AdminConfig::Static { .. }
        ));
        let half = Env::from_pairs(&[("SIPHON_ADMIN_CLIENT_ID", "admin")]);
        let e = AdminConfig::from_env(&half).unwrap_err();
        assert_eq!(e.variable, "SIPHON_ADMIN_CLIENT_SECRET");
        let arn = Env::from_pairs(&[("SIPHON_ADMIN_SECRET_ARN", "arn:aws:secretsmanager:x")]);
        assert!(matches!(
            AdminConfig::from_env(&arn).unwrap(),
            AdminConfig::SecretArn(_)
        ));
        assert!(!format!("{:?}", AdminConfig::from_env(&both).unwrap()).contains("s3cret"));
    }

    #[tokio::test]
    async fn clients_and_admin_authenticate_against_the_store() {
        let clients = Arc::new(crate::storage::clients::MemoryClients::default());
        clients.put("ok", Some(hash_secret("pw").unwrap()), true);
        clients.put("nopolicy", Some(hash_secret("pw").unwrap()), false);
        let auth = Authenticator::new(
            clients,
            AdminConfig::Static {
                client_id: "admin".into(),
                secret: Secret::new("adm"),
            },
        );
        let basic = |id: &str, s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"))
            )
        };
        assert!(
            auth.check(Some(&basic("admin", "adm")), None)
                .await
                .unwrap()
                .admin
        );
        assert!(
            !auth
                .check(Some(&basic("ok", "pw")), None)
                .await
                .unwrap()
                .admin
        );
        for (id, s) in [("admin", "x"), ("ok", "x"), ("ghost", "pw")] {
            assert!(matches!(
                auth.check(Some(&basic(id, s)), None).await,
                Err(Error::Unauthorized(_))
            ));
        }
        assert!(matches!(
            auth.check(Some(&basic("nopolicy", "pw")), None).await,
            Err(Error::Forbidden(_))
        ));
    }

    fn basic(id: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    #[tokio::test]
    async fn a_verified_secret_is_remembered_until_the_client_changes() {
        let clients = Arc::new(crate::storage::clients::MemoryClients::default());
        clients.put("c", Some(hash_secret("old").unwrap()), true);
        let auth = Authenticator::new(clients.clone(), AdminConfig::None);
        let header = basic("c", "old");
        auth.check(Some(&header), None).await.unwrap();
        assert_eq!(auth.cache.len(), 1);
        auth.check(Some(&header), None).await.unwrap();
        assert_eq!(auth.cache.len(), 1, "a hit adds nothing");
        // The secret changes: the old one is refused at once, the new one works.
        clients.put("c", Some(hash_secret("new").unwrap()), true);
        assert!(matches!(
            auth.check(Some(&header), None).await,
            Err(Error::Unauthorized(_))
        ));
        auth.check(Some(&basic("c", "new")), None).await.unwrap();
        // The client is deleted: nothing cached lets its secret in.
        clients.put("c", None, true);
        assert!(matches!(
            auth.check(Some(&basic("c", "new")), None).await,
            Err(Error::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn an_active_admin_is_not_locked_out_by_guesses() {
        let auth = Authenticator::new(
            Arc::new(crate::storage::clients::MemoryClients::default()),
            AdminConfig::Static {
                client_id: "admin".into(),
                secret: Secret::new("adm"),
            },
        );
        let src = Some("203.0.113.9");
        assert!(
            auth.check(Some(&basic("admin", "adm")), src)
                .await
                .unwrap()
                .admin
        );
        for _ in 0..20 {
            let _ = auth.check(Some(&basic("admin", "guess")), src).await;
        }
        assert!(matches!(
            auth.check(Some(&basic("admin", "guess")), src).await,
            Err(Error::Throttled { .. })
        ));
        assert!(
            auth.check(Some(&basic("admin", "adm")), src)
                .await
                .unwrap()
                .admin
        );
    }

    #[tokio::test]
    async fn wrong_secrets_spend_a_budget_then_429_without_locking_out_a_cached_client() {
        let clients = Arc::new(crate::storage::clients::MemoryClients::default());
        clients.put("c", Some(hash_secret("pw").unwrap()), true);
        let auth = Authenticator::with_limits(
            clients,
            AdminConfig::Static {
                client_id: "admin".into(),
                secret: Secret::new("adm"),
            },
            CacheLimits::default(),
            BudgetLimits {
                per_client: 3,
                per_source: 100,
                window: std::time::Duration::from_secs(60),
                max_keys: 100,
            },
        );
        let src = Some("203.0.113.9");
        auth.check(Some(&basic("c", "pw")), src).await.unwrap();
        for id in ["c", "ghost", "admin"] {
            for _ in 0..3 {
                assert!(matches!(
                    auth.check(Some(&basic(id, "guess")), src).await,
                    Err(Error::Unauthorized(_))
                ));
            }
            match auth.check(Some(&basic(id, "guess")), src).await {
                Err(Error::Throttled {
                    retry_after_secs, ..
                }) => assert!((1..=60).contains(&retry_after_secs)),
                other => panic!("{id}: expected 429, got {other:?}"),
            }
        }
        // The right secret of an uncached client is refused too while the budget is
        // spent (nothing is hashed), but the cached client keeps working, and another
        // source still has its own budget.
        assert!(matches!(
            auth.check(Some(&basic("admin", "adm")), src).await,
            Err(Error::Throttled { .. })
        ));
        auth.check(Some(&basic("c", "pw")), src).await.unwrap();
        assert!(matches!(
            auth.check(Some(&basic("c", "guess")), Some("198.51.100.7"))
                .await,
            Err(Error::Unauthorized(_))
        ));
    }
}
