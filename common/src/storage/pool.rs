//! Postgres connection settings and the process-wide pool.
//!
//! Settings ([`DbConfig::from_env`]):
//! - `DATABASE_URL` (`postgres://user:pass@host:port/db?sslmode=...`), or
//! - `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, and the password from `PGPASSWORD` or,
//!   in AWS, from the Secrets Manager secret `SIPHON_DB_SECRET_ARN` (JSON with a
//!   `password` key, as RDS writes it, or the bare password).
//! - `PGSSLMODE` / `sslmode=`: `disable`, `prefer`, `require` (encrypt; verify only when
//!   `PGSSLROOTCERT` names a CA bundle, as libpq does), `verify-ca`/`verify-full`
//!   (verify against `PGSSLROOTCERT` or the Mozilla roots). TLS is rustls, never OpenSSL.
//! - `SIPHON_DB_POOL_SIZE` (default 4).
//! - The read-only login caller-written SQL runs under (`$dump-sql`, query dumps): role
//!   `siphon_reader` with `SIPHON_READER_PASSWORD`, or in AWS the secret
//!   `SIPHON_READER_SECRET_ARN` (JSON with `password`, or the bare password); same host
//!   and database. See [`Db::reader`].
//!
//! Nothing touches the network until the first query: a cold start stays cheap, and the
//! pool (with `RecyclingMethod::Verified`, since a frozen Lambda sandbox can wake up with
//! dead sockets) is reused by every warm invocation.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{ConfigError, Env};
use crate::error::{Error, Result};

/// How the server certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVerify {
    /// Encrypt but accept any certificate (libpq's `require` without a root cert).
    None,
    /// Verify the chain and the host name.
    Full,
}

/// Everything needed to open connections; building it does no I/O.
#[derive(Clone)]
pub struct DbConfig {
    pg: tokio_postgres::Config,
    verify: TlsVerify,
    root_cert: Option<String>,
    password_secret_arn: Option<String>,
    pool_size: usize,
    reader: Option<ReaderLogin>,
    /// `SIPHON_READER_UNRESTRICTED_FUNCTIONS=allow`: accept a read-only role that can
    /// still execute the functions `infra/sql/reader-role.sql` revokes (a managed
    /// database where they cannot be revoked); the query check then stands alone.
    allow_unrestricted_reader: bool,
}

/// The read-only role (its grants are kept by the migrations and `ensure_table`).
pub const READER_ROLE: &str = "siphon_reader";

/// The read-only role's login.
#[derive(Clone)]
struct ReaderLogin {
    user: String,
    password: Option<String>,
    secret_arn: Option<String>,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("DbConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("dbname", &self.pg.get_dbname())
            .field("user", &self.pg.get_user())
            .field("ssl_mode", &self.pg.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

impl DbConfig {
    /// Reads the settings described in the module docs. A password never appears in an
    /// error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut cfg = match env.get("DATABASE_URL") {
            Some(url) => Self::from_url(url)?,
            None => {
                let mut pg = tokio_postgres::Config::new();
                pg.host(env.get("PGHOST").unwrap_or("127.0.0.1"));
                pg.port(env.parse::<u16>("PGPORT", "a port number")?.unwrap_or(5432));
                pg.dbname(env.get("PGDATABASE").unwrap_or("siphon"));
                pg.user(env.get("PGUSER").unwrap_or("siphon"));
                if let Some(pw) = env.get("PGPASSWORD") {
                    pg.password(pw);
                }
                let mut cfg = Self::from_pg(pg);
                cfg.set_ssl_mode(env.get("PGSSLMODE").unwrap_or("prefer"))
                    .map_err(|p| ConfigError::new("PGSSLMODE", p))?;
                cfg
            }
        };
        cfg.password_secret_arn = env.get("SIPHON_DB_SECRET_ARN").map(str::to_string);
        cfg.root_cert = env.get("PGSSLROOTCERT").map(str::to_string);
        if cfg.root_cert.is_some() {
            cfg.verify = TlsVerify::Full;
        }
        cfg.pool_size = env.number("SIPHON_DB_POOL_SIZE", 4, 1, 1000)? as usize;
        let reader_user = READER_ROLE;
        let password = env.get("SIPHON_READER_PASSWORD").map(str::to_string);
        let secret_arn = env.get("SIPHON_READER_SECRET_ARN").map(str::to_string);
        cfg.allow_unrestricted_reader = match env.get("SIPHON_READER_UNRESTRICTED_FUNCTIONS") {
            None | Some("") | Some("refuse") => false,
            Some("allow") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "SIPHON_READER_UNRESTRICTED_FUNCTIONS",
                    "must be allow or refuse",
                ))
            }
        };
        if password.is_some() || secret_arn.is_some() {
            cfg.reader = Some(ReaderLogin {
                user: reader_user.to_string(),
                password,
                secret_arn,
            });
        }
        Ok(cfg)
    }

    /// Parses a `postgres://` URL; `sslmode` may also be `verify-ca` or `verify-full`.
    /// Errors never repeat the URL (it may hold a password).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::new("DATABASE_URL", why);
        let mut parsed =
            url::Url::parse(url).map_err(|e| bad(format!("not a URL ({e}); value hidden")))?;
        let mut sslmode = None;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, v)| {
                if k == "sslmode" {
                    sslmode = Some(v.to_string());
                    false
                } else {
                    true
                }
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        let pg: tokio_postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|_| bad("not a Postgres URL (value hidden: it may hold a password)".into()))?;
        let mut cfg = Self::from_pg(pg);
        cfg.set_ssl_mode(sslmode.as_deref().unwrap_or("prefer"))
            .map_err(bad)?;
        Ok(cfg)
    }

    fn from_pg(mut pg: tokio_postgres::Config) -> Self {
        pg.application_name("siphon");
        pg.connect_timeout(Duration::from_secs(10));
        pg.keepalives_idle(Duration::from_secs(30));
        DbConfig {
            pg,
            verify: TlsVerify::None,
            root_cert: None,
            password_secret_arn: None,
            pool_size: 4,
            reader: None,
            allow_unrestricted_reader: false,
        }
    }

    fn set_ssl_mode(&mut self, mode: &str) -> Result<(), String> {
        let (ssl, verify) = match mode {
            "disable" => (SslMode::Disable, TlsVerify::None),
            "prefer" | "allow" => (SslMode::Prefer, TlsVerify::None),
            "require" => (SslMode::Require, TlsVerify::None),
            "verify-ca" | "verify-full" => (SslMode::Require, TlsVerify::Full),
            other => {
                return Err(format!(
                "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            ))
            }
        };
        self.pg.ssl_mode(ssl);
        self.verify = verify;
        Ok(())
    }

    /// Logs caller-written SQL in as `user` with `password` (tests and tools).
    pub fn with_reader(mut self, user: &str, password: &str) -> Self {
        self.reader = Some(ReaderLogin {
            user: user.to_string(),
            password: Some(password.to_string()),
            secret_arn: None,
        });
        self
    }

    /// Maximum number of pooled connections.
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// The driver configuration (password included: do not log it).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// The TLS connector every connection uses (plain TCP when sslmode is `disable`).
    pub fn tls(&self) -> Result<MakeRustlsConnect> {
        tls_connector(self.verify, self.root_cert.as_deref())
    }
}

/// Shared pool handle: cheap to clone, built on first use, migrated once per process.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    config: DbConfig,
    known_tables: std::sync::Mutex<std::collections::HashSet<String>>,
    pool: OnceCell<Pool>,
    migrated: OnceCell<()>,
    reader_checked: OnceCell<()>,
}

impl Db {
    /// A handle that connects lazily.
    pub fn new(config: DbConfig) -> Self {
        Db {
            inner: Arc::new(Inner {
                config,
                known_tables: Default::default(),
                pool: OnceCell::new(),
                migrated: OnceCell::new(),
                reader_checked: OnceCell::new(),
            }),
        }
    }

    /// Resource tables known to exist in this database.
    pub(crate) fn known_tables(&self) -> &std::sync::Mutex<std::collections::HashSet<String>> {
        &self.inner.known_tables
    }

    /// The configuration this handle was built from.
    pub fn config(&self) -> &DbConfig {
        &self.inner.config
    }

    /// A pooled connection, with the schema migrated.
    pub async fn client(&self) -> Result<Object> {
        let pool = self
            .inner
            .pool
            .get_or_try_init(|| self.build_pool())
            .await?;
        let mut client = pool.get().await?;
        if !self.inner.migrated.initialized() {
            let c: &mut tokio_postgres::Client = &mut client;
            self.inner
                .migrated
                .get_or_try_init(|| async { super::migrations::migrate(c).await.map(|_| ()) })
                .await?;
        }
        Ok(client)
    }

    async fn build_pool(&self) -> Result<Pool> {
        let cfg = &self.inner.config;
        let mut pg = cfg.pg.clone();
        if let Some(arn) = &cfg.password_secret_arn {
            pg.password(fetch_password(arn).await?);
        }
        let manager = Manager::from_config(
            pg,
            cfg.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the connection pool: {e}")))
    }
}

impl Db {
    /// A new connection that logged in as the read-only role (never the service user
    /// switched with `SET ROLE`): what caller-written SQL runs on. It is not pooled; the
    /// caller drops it when done. The first one of a process checks the role can do no
    /// more than it should (see `super::reader`).
    pub async fn reader(&self) -> Result<tokio_postgres::Client> {
        let cfg = &self.inner.config;
        let login = cfg.reader.as_ref().ok_or_else(|| {
            Error::Internal(
                "caller-written SQL runs under a read-only login, and none is configured: \
                 set SIPHON_READER_PASSWORD (or SIPHON_READER_SECRET_ARN)"
                    .into(),
            )
        })?;
        // The service's migrations first: the role's grants come with the tables.
        drop(self.client().await?);
        let mut pg = cfg.pg.clone();
        pg.user(&login.user);
        pg.application_name("siphon-reader");
        match (&login.password, &login.secret_arn) {
            (Some(p), _) => {
                pg.password(p.as_str());
            }
            (None, Some(arn)) => {
                pg.password(fetch_password(arn).await?);
            }
            (None, None) => {}
        }
        let (client, connection) = pg.connect(cfg.tls()?).await.map_err(|e| {
            Error::Internal(format!(
                "cannot log in as the read-only role {:?}: {}",
                login.user,
                crate::error::DbError::from(e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "read-only connection ended with an error");
            }
        });
        self.inner
            .reader_checked
            .get_or_try_init(|| {
                super::reader::check(&client, &login.user, cfg.allow_unrestricted_reader)
            })
            .await?;
        Ok(client)
    }
}

async fn fetch_password(arn: &str) -> Result<String> {
    let raw = crate::secrets::secret_string(arn, "the database secret").await?;
    let raw = raw.as_str();
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => v
            .get("password")
            .and_then(|p| p.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Internal("the database secret has no \"password\" key".into())),
        Err(_) => Ok(raw.to_string()),
    }
}

fn tls_connector(verify: TlsVerify, root_cert: Option<&str>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS set-up: {e}")))?;
    let config = match verify {
        TlsVerify::Full => {
            let mut roots = rustls::RootCertStore::empty();
            match root_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        Error::Internal(format!("cannot read PGSSLROOTCERT {path}: {e}"))
                    })?;
                    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                        let cert: rustls::pki_types::CertificateDer<'static> =
                            cert.map_err(|e| {
                                Error::Internal(format!("bad certificate in {path}: {e}"))
                            })?;
                        roots.add(cert).map_err(|e| {
                            Error::Internal(format!("bad certificate in {path}: {e}"))
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsVerify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's `sslmode=require` without a root certificate: the channel is encrypted and
/// the handshake signatures are checked, but the certificate chain is not.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_errors_never_show_a_password() {
        let env = Env::from_pairs(&[(
            "DATABASE_URL",
            "postgres://u:pw-secret@db.example:6543/x?sslmode=require",
        )]);
        let cfg = DbConfig::from_env(&env).unwrap();
        assert_eq!(cfg.pg_config().get_dbname(), Some("x"));
        assert_eq!(cfg.pg_config().get_ports(), &[6543]);
        assert_eq!(cfg.pool_size, 4);
        assert!(!format!("{cfg:?}").contains("pw-secret"));
        for bad in [
            "postgres://u:pw-secret@h/x?sslmode=sometimes",
            "not a url pw-secret",
        ] {
            let e = DbConfig::from_env(&Env::from_pairs(&[("DATABASE_URL", bad)])).unwrap_err();
            assert_eq!(e.variable, "DATABASE_URL");
            assert!(!e.to_string().contains("pw-secret"), "{e}");
        }
        let e = DbConfig::from_env(&Env::from_pairs(&[("PGPORT", "54x")])).unwrap_err();
        assert_eq!(e.variable, "PGPORT");
        let e = DbConfig::from_env(&Env::from_pairs(&[("SIPHON_DB_POOL_SIZE", "0")])).unwrap_err();
        assert_eq!(e.variable, "SIPHON_DB_POOL_SIZE");
        let cfg = DbConfig::from_env(&Env::from_pairs(&[("PGSSLROOTCERT", "/ca.pem")])).unwrap();
        assert_eq!(cfg.verify, TlsVerify::Full);
    }
}
