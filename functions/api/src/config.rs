//! siphon-api's settings, read once at cold start.

use std::time::Duration;

use siphon::auth::remote::ClientKeyConfig;
use siphon::auth::AuthConfig;
use siphon::config::{ConfigError, Env};
use siphon::exporting::ExportConfig;
use siphon::sessions::ImportConfig;
use siphon::sources::http::UrlPolicy;
use siphon::sources::s3::S3Options;
use siphon::storage::DbConfig;

/// Everything siphon-api reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// The bootstrap admin client and the token settings (`SIPHON_ADMIN_*`,
    /// `SIPHON_TOKEN_*`).
    pub auth: AuthConfig,
    /// `SIPHON_MAX_BODY_BYTES` (default 1 MiB): larger request bodies answer 413.
    pub max_body_bytes: usize,
    /// `SIPHON_LOAD_QUEUE_URL` (required).
    pub load_queue_url: String,
    /// `SIPHON_URL_ALLOWLIST`: which `https://` sources and `endpoint-url`s may be read.
    pub url_policy: UrlPolicy,
    /// `SIPHON_IMPORT_BUCKET` / `SIPHON_IMPORT_PREFIX`: where `resource-file` inputs live.
    pub import: ImportConfig,
    /// `SIPHON_LOAD_SYNC_SECONDS` (default 20, at most 28: API Gateway answers 504 after
    /// 29 s): how long `$load` loads inline before answering 202.
    pub load_sync_budget: Duration,
    /// The function's own S3 client (`SIPHON_S3_FORCE_PATH_STYLE`).
    pub s3: S3Options,
    /// `$export`: the export bucket and its settings (`SIPHON_EXPORT_*`); `None` when
    /// `SIPHON_EXPORT_BUCKET` is not set (then `$export` answers that exports are off).
    pub export: Option<ExportConfig>,
    /// `SIPHON_EXPORT_QUEUE_URL`: where export tasks go (required with an export bucket).
    pub export_queue_url: Option<String>,
    /// `SIPHON_LOAD_DLQ_URL`, `SIPHON_EXPORT_DLQ_URL`: the dead-letter queues the console
    /// lists and retries from (optional).
    pub load_dlq_url: Option<String>,
    pub export_dlq_url: Option<String>,
    /// `SIPHON_PUBLIC_URL`: the base URL clients use, when the `Host` header is not it
    /// (a custom domain behind a proxy). Used for `$export`'s absolute URLs.
    pub public_url: Option<String>,
    /// `SIPHON_DUMP_SQL_TIMEOUT_MS`: statement timeout of a `dump-to-bucket` query, as
    /// `$dump-sql` has it (default 60,000).
    pub dump_sql_timeout_ms: u64,
    /// `SIPHON_CLIENT_KEY` / `SIPHON_CLIENT_KEY_ARN`: siphon's own key as a SMART client
    /// of remote servers (pull imports); its public half is `/.well-known/jwks.json`.
    pub client_key: ClientKeyConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let load_sync_budget = env.seconds("SIPHON_LOAD_SYNC_SECONDS", 20.0)?;
        if load_sync_budget > Duration::from_secs(28) {
            return Err(ConfigError::new(
                "SIPHON_LOAD_SYNC_SECONDS",
                "must be at most 28 (API Gateway ends a request after 29 s)",
            ));
        }
        let export = ExportConfig::from_env(env)?;
        let export_queue_url = match &export {
            Some(_) => Some(env.required("SIPHON_EXPORT_QUEUE_URL")?.to_string()),
            None => None,
        };
        Ok(Config {
            export,
            export_queue_url,
            public_url: env.get("SIPHON_PUBLIC_URL").map(str::to_string),
            dump_sql_timeout_ms: env.number("SIPHON_DUMP_SQL_TIMEOUT_MS", 60_000, 1, 900_000)?,
            load_dlq_url: env.get("SIPHON_LOAD_DLQ_URL").map(str::to_string),
            export_dlq_url: env.get("SIPHON_EXPORT_DLQ_URL").map(str::to_string),
            db: DbConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            max_body_bytes: env.number(
                "SIPHON_MAX_BODY_BYTES",
                siphon::web::DEFAULT_MAX_BODY_BYTES as u64,
                1024,
                6 * 1024 * 1024,
            )? as usize,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
            url_policy: UrlPolicy::from_env(env),
            import: ImportConfig::from_env(env),
            load_sync_budget,
            s3: S3Options::from_env(env)?,
            client_key: ClientKeyConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Env {
        Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "http://127.0.0.1:4566/queue/q")])
    }

    #[test]
    fn defaults_and_refusals() {
        let c = Config::from_env(&base()).unwrap();
        assert_eq!(c.load_sync_budget, Duration::from_secs(20));
        assert_eq!(c.s3.force_path_style, Some(false));
        let e = Config::from_env(&Env::default()).unwrap_err();
        assert_eq!(e.variable, "SIPHON_LOAD_QUEUE_URL");
        for (var, value) in [
            ("SIPHON_LOAD_SYNC_SECONDS", "soon"),
            ("SIPHON_LOAD_SYNC_SECONDS", "60"),
            ("SIPHON_S3_FORCE_PATH_STYLE", "maybe"),
            ("SIPHON_DB_POOL_SIZE", "-1"),
            ("SIPHON_EXPORT_BUCKET", "exports"),
        ] {
            let e = Config::from_env(&base().with(var, value)).unwrap_err();
            let expected = if var == "SIPHON_EXPORT_BUCKET" {
                "SIPHON_EXPORT_QUEUE_URL" // a bucket needs its queue
            } else {
                var
            };
            assert_eq!(e.variable, expected, "{e}");
        }
        assert!(c.export.is_none());
        let with = base()
            .with("SIPHON_EXPORT_BUCKET", "exports")
            .with("SIPHON_EXPORT_QUEUE_URL", "q2")
            .with("SIPHON_EXPORT_PREFIX", "/fhir/");
        let c = Config::from_env(&with).unwrap();
        assert_eq!(c.export.unwrap().prefix, "fhir/");
    }
}
