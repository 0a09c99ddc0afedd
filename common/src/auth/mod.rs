//! Who may call siphon, and what they may do.
//!
//! Two ways in, one vocabulary:
//! - **HTTP Basic** against `Client` resources (secret stored as an Argon2id hash, as in
//!   the Aidbox demo), and the bootstrap admin from configuration ([`AdminConfig`]);
//! - **SMART Backend Services** bearer tokens ([`backend`]: a client signs a JWT
//!   assertion with its registered keys and gets a short-lived access token, [`tokens`]).
//!
//! The other way round, [`remote`] is siphon as a SMART client of another server (pull
//! imports): its own key, the assertions it signs, the tokens it holds.
//!
//! Either way a client's rights are SMART scopes ([`scopes`]) granted by the
//! AccessPolicies that link it (`scope`, or `engine: allow` for the data operations of
//! the seed's demo); [`Principal`] is what every route checks. The admin alone manages
//! Clients, AccessPolicies, LoaderFiles, Inventories and dead letters.
//!
//! Under attack: a verified secret is remembered for a short while by the instance
//! ([`cache`]: keyed by an HMAC, never the secret, dropped when the Client changes), so
//! a Client's repeated requests skip Argon2id; wrong secrets and failed assertions
//! spend a failure budget per client id and source, and per client id from anywhere
//! ([`budget`]), after which the caller gets 429 with `Retry-After` and nothing is
//! hashed; an unknown client id is verified against a dummy hash, so it costs and
//! answers what a wrong secret does; a stored hash with other Argon2 parameters than
//! siphon's is refused without being run. Argon2id runs on the blocking pool, at most
//! one verification per core at a time. Verifying a bearer token is one HMAC and a
//! memory lookup.

pub mod backend;
pub mod budget;
pub mod cache;
pub mod jwt;
pub mod principal;
pub mod remote;
pub mod scopes;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};

use self::backend::{Issued, KeySets, OAuthError, TokenRequest};
use self::budget::{BudgetLimits, FailureBudget};
use self::cache::{CacheLimits, VerifiedCache};
pub use self::principal::{Principal, Via};
use self::scopes::Grants;
use self::tokens::Generations;

use crate::config::{ConfigError, Env, Secret};
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;
use crate::sources::http::HttpSource;
pub use crate::storage::clients::{ClientRecord, ClientStore};

/// Hashes a client secret (Argon2id with siphon's parameters, random salt, PHC string).
pub fn hash_secret(secret: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash a secret: {e}")))
}

/// True when `phc` is an Argon2id hash with exactly siphon's parameters. Anything else
/// (another algorithm, a memory cost of gigabytes, thousands of passes) is refused
/// before it is run: a hash is never trusted to say how much work checking it costs.
pub fn hash_is_current(phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let want = argon2::Params::default();
    let param = |name: &str| h.params.get_decimal(name);
    h.algorithm.as_str() == "argon2id"
        && h.version == Some(0x13)
        && param("m") == Some(want.m_cost())
        && param("t") == Some(want.t_cost())
        && param("p") == Some(want.p_cost())
        && h.params.iter().count() == 3
        && h.hash
            .is_some_and(|o| o.len() == argon2::Params::DEFAULT_OUTPUT_LEN)
}

/// Checks a secret against its stored hash (constant time inside Argon2). A hash whose
/// parameters are not siphon's is refused unrun (and said in the log).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    if !hash_is_current(phc) {
        tracing::warn!("a stored secret hash does not have siphon's Argon2id parameters; refused without running it");
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// Prepares a resource for storage: a `Client`'s plain `secret` becomes `secretHash`.
/// A `secretHash` sent by a caller is refused: only siphon writes hashes. A `bulkSubmit`
/// registration that cannot be read is refused when written, not when first used.
pub fn protect(ty: &ResourceType, mut resource: Value) -> Result<Value> {
    if ty.as_str() == "Client" {
        if let Some(obj) = resource.as_object_mut() {
            if obj.contains_key("secretHash") {
                return Err(Error::BadRequest(
                    "Client.secretHash is written by siphon only: send `secret`".into(),
                ));
            }
            if let Some(secret) = obj.remove("secret") {
                let secret = secret
                    .as_str()
                    .ok_or_else(|| Error::BadRequest("Client.secret must be a string".into()))?;
                obj.insert("secretHash".into(), Value::String(hash_secret(secret)?));
            }
            if let Some(registration) = obj.get("bulkSubmit") {
                crate::model::submission::ProviderAuth::parse(registration)
                    .map_err(Error::BadRequest)?;
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

/// What a client's AccessPolicies grant: the union of their `scope`s, and what
/// `engine: allow` means ([`scopes::ENGINE_ALLOW`]) for a policy without one.
pub fn grants_of(record: &ClientRecord) -> Grants {
    record.policies.iter().fold(Grants::default(), |g, p| {
        let written = match &p.scope {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        };
        match (written, p.engine_allow) {
            (Some(s), _) => g.union(&Grants::parse(&s)),
            (None, true) => g.union(&Grants::parse(scopes::ENGINE_ALLOW)),
            (None, false) => g,
        }
    })
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

/// Everything authentication reads from the environment.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// The bootstrap admin client.
    pub admin: AdminConfig,
    /// Where the token signing key comes from; `None`: no bearer tokens.
    pub token_key: Option<TokenKey>,
    /// `SIPHON_TOKEN_LIFETIME_SECONDS` (default 300, at most 300, as SMART advises).
    pub token_lifetime: Duration,
    /// `SIPHON_TOKEN_RECHECK_SECONDS` (default 5): how long an instance trusts what it
    /// last read of a token's client.
    pub token_recheck: Duration,
}

/// Where the HS256 key of access tokens comes from.
#[derive(Clone, Debug)]
pub enum TokenKey {
    /// `SIPHON_TOKEN_KEY` (local development): at least 32 characters.
    Static(Secret),
    /// `SIPHON_TOKEN_KEY_ARN`: a Secrets Manager secret, read on first use.
    SecretArn(String),
}

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let token_key = match (env.get("SIPHON_TOKEN_KEY"), env.get("SIPHON_TOKEN_KEY_ARN")) {
            (Some(k), _) if k.len() < 32 => {
                return Err(ConfigError::new(
                    "SIPHON_TOKEN_KEY",
                    "must be at least 32 characters (e.g. openssl rand -hex 32)",
                ))
            }
            (Some(k), _) => Some(TokenKey::Static(Secret::new(k))),
            (None, Some(arn)) => Some(TokenKey::SecretArn(arn.to_string())),
            (None, None) => None,
        };
        Ok(AuthConfig {
            admin: AdminConfig::from_env(env)?,
            token_key,
            token_lifetime: Duration::from_secs(env.number(
                "SIPHON_TOKEN_LIFETIME_SECONDS",
                300,
                10,
                300,
            )?),
            token_recheck: env.seconds("SIPHON_TOKEN_RECHECK_SECONDS", 5.0)?,
        })
    }
}

/// Checks `Authorization` headers and issues access tokens.
pub struct Authenticator {
    clients: Arc<dyn ClientStore>,
    config: AuthConfig,
    admin: OnceCell<Option<(String, Secret)>>,
    key: OnceCell<Option<Secret>>,
    cache: VerifiedCache,
    budget: FailureBudget,
    generations: Generations,
    keys: KeySets,
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

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Authenticator {
    /// An authenticator with the default cache and failure budget, Basic only.
    pub fn new(clients: Arc<dyn ClientStore>, config: AdminConfig) -> Self {
        Self::configured(
            clients,
            AuthConfig {
                admin: config,
                ..AuthConfig::default()
            },
            None,
        )
    }

    /// An authenticator for `config`; `http` fetches clients' `jwks_uri`s (through its
    /// URL guard).
    pub fn configured(
        clients: Arc<dyn ClientStore>,
        config: AuthConfig,
        http: Option<HttpSource>,
    ) -> Self {
        Self::with_limits(
            clients,
            config,
            http,
            CacheLimits::default(),
            BudgetLimits::default(),
        )
    }

    /// An authenticator with its own cache and budget limits.
    pub fn with_limits(
        clients: Arc<dyn ClientStore>,
        config: AuthConfig,
        http: Option<HttpSource>,
        cache: CacheLimits,
        budget: BudgetLimits,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let recheck = if config.token_recheck.is_zero() {
            Duration::from_secs(5)
        } else {
            config.token_recheck
        };
        Authenticator {
            clients,
            admin: OnceCell::new(),
            key: OnceCell::new(),
            cache: VerifiedCache::new(cache),
            budget: FailureBudget::new(budget),
            generations: Generations::new(recheck),
            keys: KeySets::new(http),
            hashing: Semaphore::new(cores),
            config,
        }
    }

    async fn admin(&self) -> Result<&Option<(String, Secret)>> {
        self.admin
            .get_or_try_init(|| async {
                match &self.config.admin {
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

    /// The access token key, if tokens are configured.
    async fn token_key(&self) -> Result<Option<&Secret>> {
        self.key
            .get_or_try_init(|| async {
                match &self.config.token_key {
                    None => Ok(None),
                    Some(TokenKey::Static(k)) => Ok(Some(k.clone())),
                    Some(TokenKey::SecretArn(arn)) => {
                        let k = crate::secrets::secret_string(arn, "the token signing key").await?;
                        if k.len() < 32 {
                            return Err(Error::Internal(
                                "the token signing key is shorter than 32 characters".into(),
                            ));
                        }
                        Ok(Some(Secret::new(k)))
                    }
                }
            })
            .await
            .map(Option::as_ref)
    }

    /// True when bearer tokens are issued and accepted.
    pub fn tokens_enabled(&self) -> bool {
        self.config.token_key.is_some()
    }

    /// Authenticates one request from its `Authorization` header (Basic or Bearer);
    /// `source` is the caller's address when known (API Gateway's `sourceIp`, the peer
    /// of `make serve`). 401 without or with wrong credentials, 429 once the failure
    /// budget of this client id (and source) is spent, 403 when no AccessPolicy grants
    /// the client anything.
    pub async fn check(
        &self,
        authorization: Option<&str>,
        source: Option<&str>,
    ) -> Result<Principal> {
        let checked = self.authenticate(authorization, source).await;
        let refused = match &checked {
            Err(Error::Unauthorized(_)) => Some("AuthFailures"),
            Err(Error::Throttled { .. }) => Some("Throttled"),
            _ => None,
        };
        if let Some(name) = refused {
            crate::metrics::record("auth", None, &[crate::metrics::count(name, 1)]);
        }
        checked
    }

    async fn authenticate(
        &self,
        authorization: Option<&str>,
        source: Option<&str>,
    ) -> Result<Principal> {
        if let Some(token) = authorization.and_then(bearer) {
            return self.check_bearer(token).await;
        }
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
                return Ok(Principal::admin(&id));
            }
        }
        let record = self.clients.client(&id).await?;
        let hash = record.as_ref().and_then(|r| r.secret_hash.clone());
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
        let grants = record.as_ref().map(grants_of).unwrap_or_default();
        if grants.is_empty() {
            return Err(Error::Forbidden(format!(
                "no AccessPolicy grants client {id:?} anything"
            )));
        }
        Ok(Principal::client(&id, grants, Via::Basic))
    }

    /// A bearer token: its HMAC, expiry, and that its client is still the one it was
    /// issued to (same generation), read at most every `token_recheck`.
    async fn check_bearer(&self, token: &str) -> Result<Principal> {
        let Some(key) = self.token_key().await? else {
            return Err(Error::Unauthorized(
                "bearer tokens are not enabled here: use HTTP Basic".into(),
            ));
        };
        let claims =
            tokens::verify(key.expose().as_bytes(), token, now_secs()).ok_or_else(invalid_token)?;
        let current = match self.generations.fresh(&claims.client_id) {
            Some(g) => g,
            None => {
                let g = self
                    .clients
                    .client(&claims.client_id)
                    .await?
                    .map(|r| r.generation);
                self.generations.remember(&claims.client_id, g.clone());
                g
            }
        };
        if current.as_deref() != Some(claims.generation.as_str()) {
            return Err(invalid_token());
        }
        Ok(Principal::client(
            &claims.client_id,
            Grants::parse(&claims.scope),
            Via::Token,
        ))
    }

    /// The token endpoint: checks a client assertion (see [`backend`]) sent to
    /// `token_url` from `source` and issues an access token.
    pub async fn issue_token(
        &self,
        body: &[u8],
        token_url: &str,
        source: Option<&str>,
    ) -> std::result::Result<Issued, OAuthError> {
        let issued = self.grant(body, token_url, source).await;
        let name = match &issued {
            Ok(_) => "TokensIssued",
            Err(OAuthError::Throttled { .. }) => "Throttled",
            Err(_) => "AuthFailures",
        };
        crate::metrics::record("token", None, &[crate::metrics::count(name, 1)]);
        issued
    }

    async fn grant(
        &self,
        body: &[u8],
        token_url: &str,
        source: Option<&str>,
    ) -> std::result::Result<Issued, OAuthError> {
        let key = self.signing_key().await?;
        let request = TokenRequest::parse(body)?;
        request.check_grant()?;
        let refuse = |why: &str, client: &str| {
            tracing::warn!(client_id = client, reason = why, "client assertion refused");
        };
        let jws = jwt::decode(&request.client_assertion).map_err(|e| {
            refuse(&e.to_string(), "");
            OAuthError::InvalidClient
        })?;
        let claimed = jws
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(256)
            .collect::<String>();
        let last = match self.budget.take(&claimed, source) {
            Ok(last) => last,
            Err(wait) => {
                return Err(OAuthError::Throttled {
                    retry_after_secs: wait.as_secs(),
                })
            }
        };
        let fail = |why: &str, e: OAuthError| {
            refuse(why, &claimed);
            self.failed(&claimed, source, last);
            e
        };
        let assertion = backend::check_claims(&jws.claims, token_url, now_secs())
            .map_err(|why| fail(&why, OAuthError::InvalidClient))?;
        let record = match self.clients.client(&assertion.client_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(fail("no such client", OAuthError::InvalidClient)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a client");
                return Err(OAuthError::Unavailable);
            }
        };
        if let Err(why) = self.check_signature(&jws, &record).await {
            return Err(fail(why, OAuthError::InvalidClient));
        }
        // The client is who it says; what it asks for is checked before its jti is
        // spent, so a refused scope leaves the assertion usable.
        self.budget.give_back(&claimed, source);
        let (_, scope) = backend::granted(&request.scope, &grants_of(&record))?;
        if !self.spend_jti(&assertion).await? {
            refuse("jti replayed", &claimed);
            return Err(OAuthError::InvalidClient);
        }
        let lifetime = self.config.token_lifetime.max(Duration::from_secs(10));
        tracing::info!(
            client_id = assertion.client_id,
            scope,
            "access token issued"
        );
        Ok(Issued {
            access_token: tokens::issue(
                key.expose().as_bytes(),
                &assertion.client_id,
                &scope,
                &record.generation,
                lifetime,
                now_secs(),
            ),
            token_type: "bearer",
            expires_in: lifetime.as_secs(),
            scope,
        })
    }

    /// The key access tokens are signed with; none means this server issues no tokens.
    async fn signing_key(&self) -> std::result::Result<Secret, OAuthError> {
        match self.token_key().await {
            Ok(Some(k)) => Ok(k.clone()),
            Ok(None) => Err(OAuthError::InvalidRequest(
                "this server issues no tokens (SIPHON_TOKEN_KEY is not set)".into(),
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the token signing key");
                Err(OAuthError::Unavailable)
            }
        }
    }

    /// Checks the assertion's header (an accepted algorithm, a `kid`, a `jku` only if it
    /// is the registered `jwks_uri`) and its signature by one of the client's keys
    /// (fetched again from its `jwks_uri` when none has the `kid`). `Err` says why not.
    async fn check_signature(
        &self,
        jws: &jwt::Jws<'_>,
        record: &ClientRecord,
    ) -> std::result::Result<(), &'static str> {
        if !jwt::ASSERTION_ALGORITHMS.contains(&jws.header.alg.as_str()) {
            return Err("algorithm not accepted");
        }
        let Some(kid) = jws.header.kid.as_deref() else {
            return Err("no kid in the header");
        };
        if let Some(jku) = &jws.header.jku {
            if record.jwks_uri.as_deref() != Some(jku.as_str()) {
                return Err("jku is not the registered jwks_uri");
            }
        }
        let mut verified = self.verify_with_keys(jws, record, kid, false).await;
        if verified.is_none() && record.jwks_uri.is_some() {
            verified = self.verify_with_keys(jws, record, kid, true).await;
        }
        match verified {
            Some(true) => Ok(()),
            Some(false) => Err("bad signature"),
            None => Err("no key with that kid"),
        }
    }

    /// Records the assertion's `jti` until it expires (with the clock skew): `false`
    /// when it was seen before (a replay).
    async fn spend_jti(
        &self,
        assertion: &backend::Assertion,
    ) -> std::result::Result<bool, OAuthError> {
        let exp = chrono::DateTime::from_timestamp(assertion.exp + backend::SKEW, 0)
            .unwrap_or_else(chrono::Utc::now);
        self.clients
            .remember_jti(&assertion.client_id, &assertion.jti, exp)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot record a jti");
                OAuthError::Unavailable
            })
    }

    /// `Some(ok)` when a key of the client named `kid` fits the algorithm (inline, or
    /// from its `jwks_uri`, fetched again when `refetch`); `None` when none does.
    async fn verify_with_keys(
        &self,
        jws: &jwt::Jws<'_>,
        record: &ClientRecord,
        kid: &str,
        refetch: bool,
    ) -> Option<bool> {
        let mut keys = Vec::new();
        if !refetch {
            if let Some(set) = &record.jwks {
                keys.extend(jwt::keys_of(set));
            }
        }
        if let Some(uri) = &record.jwks_uri {
            keys.extend(self.keys.keys(uri, refetch).await);
        }
        let alg = jws.header.alg.as_str();
        let candidates: Vec<&jwt::Jwk> = keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid) && k.fits(alg))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates.iter().any(|k| jws.verify_with(k).is_ok()))
    }

    /// Verifies a secret that guards something else (an `$import` session's `secret`)
    /// under the same failure budget as client secrets, keyed by `what`, on the blocking
    /// pool. 429 once the budget is spent.
    pub async fn verify_guarded(
        &self,
        what: &str,
        source: Option<&str>,
        secret: &str,
        phc: &str,
    ) -> Result<bool> {
        let last = self.take_attempt(what, source)?;
        let ok = self.verify(secret, phc).await?;
        if ok {
            self.budget.give_back(what, source);
        } else {
            self.failed(what, source, last);
        }
        Ok(ok)
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
        "wrong or missing credentials (HTTP Basic with a Client id and secret, or a bearer token)"
            .into(),
    )
}

fn invalid_token() -> Error {
    Error::Unauthorized(
        "the bearer token is invalid or expired, or its client changed: get a new one".into(),
    )
}

/// The token of an `Authorization: Bearer` header.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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
        for bad in [None, Some("Basic !!!"), Some("Basic Ym9ndXM=")] {
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
        clients.delete("c");
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
            AuthConfig {
                admin: AdminConfig::Static {
                    client_id: "admin".into(),
                    secret: Secret::new("adm"),
                },
                ..AuthConfig::default()
            },
            None,
            CacheLimits::default(),
            BudgetLimits {
                per_client: 3,
                per_source: 100,
                per_client_anywhere: 100,
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

    mod tokens_and_assertions {
        use super::super::*;
        use crate::storage::clients::{MemoryClients, Policy};
        use serde_json::json;

        const URL: &str = "https://fhir.example.org/auth/token";

        fn setup(scope: &str) -> (Arc<MemoryClients>, Authenticator, jwt::SigningKey) {
            let key =
                jwt::SigningKey::from_pkcs8(&jwt::SigningKey::generate_pkcs8(), "k1").unwrap();
            let clients = Arc::new(MemoryClients::default());
            clients.put_record(
                "bdt",
                ClientRecord {
                    jwks: Some(json!({"keys": [key.public_jwk()]})),
                    policies: vec![Policy {
                        engine_allow: false,
                        scope: Some(json!(scope)),
                    }],
                    ..ClientRecord::default()
                },
            );
            let auth = Authenticator::configured(
                clients.clone(),
                AuthConfig {
                    token_key: Some(TokenKey::Static(Secret::new("k".repeat(32)))),
                    token_lifetime: Duration::from_secs(300),
                    token_recheck: Duration::from_millis(50),
                    ..AuthConfig::default()
                },
                None,
            );
            (clients, auth, key)
        }

        fn assertion(key: &jwt::SigningKey, claims: Value) -> String {
            let now = chrono::Utc::now().timestamp();
            let mut c = json!({"iss": "bdt", "sub": "bdt", "aud": URL, "exp": now + 240,
                               "jti": uuid::Uuid::new_v4().to_string()});
            for (k, v) in claims.as_object().unwrap() {
                c[k] = v.clone();
            }
            key.sign(&c)
        }

        fn form(assertion: &str, scope: &str) -> Vec<u8> {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "client_credentials")
                .append_pair("scope", scope)
                .append_pair("client_assertion_type", backend::JWT_BEARER)
                .append_pair("client_assertion", assertion)
                .finish()
                .into_bytes()
        }

        #[tokio::test]
        async fn an_assertion_buys_a_token_that_works_until_its_client_changes() {
            let (clients, auth, key) = setup("system/Patient.rs system/Observation.rs");
            let issued = auth
                .issue_token(
                    &form(&assertion(&key, json!({})), "system/*.read"),
                    URL,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(issued.token_type, "bearer");
            assert_eq!(issued.expires_in, 300);
            assert_eq!(issued.scope, "system/Patient.rs system/Observation.rs");
            let header = format!("Bearer {}", issued.access_token);
            let who = auth.check(Some(&header), None).await.unwrap();
            assert_eq!(who.client_id, "bdt");
            assert_eq!(who.via, Via::Token);
            assert!(who.may("Patient", scopes::Perm::Read));
            assert!(!who.may("Patient", scopes::Perm::Create));
            // A tampered token, another key's token: refused.
            let mut forged = issued.access_token.clone();
            forged.pop();
            assert!(matches!(
                auth.check(Some(&format!("Bearer {forged}")), None).await,
                Err(Error::Unauthorized(_))
            ));
            // The client's keys change: the token stops working within the recheck.
            let record = clients.client("bdt").await.unwrap().unwrap();
            clients.put_record("bdt", record);
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert!(matches!(
                auth.check(Some(&header), None).await,
                Err(Error::Unauthorized(_))
            ));
            // Deleted: same.
            clients.delete("bdt");
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert!(auth.check(Some(&header), None).await.is_err());
        }

        #[tokio::test]
        async fn each_broken_assertion_is_invalid_client() {
            let (_, auth, key) = setup("system/*.rs");
            let other =
                jwt::SigningKey::from_pkcs8(&jwt::SigningKey::generate_pkcs8(), "k1").unwrap();
            let unknown_kid =
                jwt::SigningKey::from_pkcs8(&jwt::SigningKey::generate_pkcs8(), "k9").unwrap();
            let now = chrono::Utc::now().timestamp();
            for (why, token) in [
                (
                    "wrong aud",
                    assertion(&key, json!({"aud": "https://evil.example/token"})),
                ),
                ("expired", assertion(&key, json!({"exp": now - 120}))),
                ("exp too far", assertion(&key, json!({"exp": now + 900}))),
                (
                    "unknown client",
                    assertion(&key, json!({"iss": "ghost", "sub": "ghost"})),
                ),
                ("sub is not iss", assertion(&key, json!({"sub": "other"}))),
                ("bad signature", assertion(&other, json!({}))),
                ("unknown kid", assertion(&unknown_kid, json!({}))),
                ("not a JWT", "abc.def.ghi".to_string()),
            ] {
                let e = auth
                    .issue_token(&form(&token, "system/*.rs"), URL, None)
                    .await;
                assert_eq!(e, Err(backend::OAuthError::InvalidClient), "{why}");
            }
            // A replayed jti.
            let once = assertion(&key, json!({}));
            auth.issue_token(&form(&once, "system/*.rs"), URL, None)
                .await
                .unwrap();
            assert_eq!(
                auth.issue_token(&form(&once, "system/*.rs"), URL, None)
                    .await,
                Err(backend::OAuthError::InvalidClient),
                "replay"
            );
            // Nothing allowed of what is asked.
            assert_eq!(
                auth.issue_token(
                    &form(&assertion(&key, json!({})), "system/Patient.cud"),
                    URL,
                    None
                )
                .await,
                Err(backend::OAuthError::InvalidScope)
            );
            // Wrong grant type.
            let body = b"grant_type=password&scope=x".to_vec();
            assert_eq!(
                auth.issue_token(&body, URL, None).await,
                Err(backend::OAuthError::UnsupportedGrantType)
            );
        }

        #[tokio::test]
        async fn hs_and_none_algorithms_are_refused() {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let (_, auth, key) = setup("system/*.rs");
            let claims = json!({"iss": "bdt", "sub": "bdt", "aud": URL,
                "exp": chrono::Utc::now().timestamp() + 60, "jti": "x1"});
            let none = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1"}).to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            // HMAC keyed with the client's public key (algorithm confusion).
            let x = key.public_jwk().x.unwrap();
            let hs = jwt::sign_hs256(x.as_bytes(), &claims);
            for token in [none, hs] {
                assert_eq!(
                    auth.issue_token(&form(&token, "system/*.rs"), URL, None)
                        .await,
                    Err(backend::OAuthError::InvalidClient)
                );
            }
        }
    }

    #[test]
    fn hashes_with_other_parameters_are_refused_unrun() {
        let good = hash_secret("pw").unwrap();
        assert!(hash_is_current(&good));
        // The same secret hashed with a huge memory cost, more passes, or argon2i.
        let salt = SaltString::generate(&mut OsRng);
        for params in [
            argon2::Params::new(262_144, 2, 1, None).unwrap(),
            argon2::Params::new(19_456, 50, 1, None).unwrap(),
            argon2::Params::new(19_456, 2, 4, None).unwrap(),
        ] {
            let h = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(!hash_is_current(&h), "{h}");
            let started = std::time::Instant::now();
            assert!(!verify_secret("pw", &h));
            assert!(started.elapsed() < std::time::Duration::from_millis(20));
        }
        let argon2i = Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(!verify_secret("pw", &argon2i));
        assert!(!verify_secret("pw", "$pbkdf2$whatever"));
    }

    #[test]
    fn a_caller_written_hash_is_refused() {
        let client = ResourceType::parse("Client").unwrap();
        let e = protect(
            &client,
            serde_json::json!({"secretHash": "$argon2id$v=19$m=8,t=1,p=1$x$y"}),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)));
    }

    #[test]
    fn policies_grant_their_scopes_and_engine_allow_the_data_operations() {
        use crate::storage::clients::Policy;
        let record = |policies: Vec<Policy>| ClientRecord {
            policies,
            ..ClientRecord::default()
        };
        let allow = record(vec![Policy {
            engine_allow: true,
            scope: None,
        }]);
        assert_eq!(
            grants_of(&allow).to_string(),
            "system/*.cruds system/$dump-sql"
        );
        let listed = record(vec![
            Policy {
                engine_allow: false,
                scope: Some(serde_json::json!("system/Patient.rs")),
            },
            Policy {
                engine_allow: true,
                scope: Some(serde_json::json!([
                    "system/Observation.c",
                    "system/Observation.u"
                ])),
            },
        ]);
        assert_eq!(
            grants_of(&listed).to_string(),
            "system/Patient.rs system/Observation.cu"
        );
        assert!(grants_of(&record(vec![Policy::default()])).is_empty());
    }
}
