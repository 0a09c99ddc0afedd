//! siphon-s3-ingest's settings, read once at cold start.

use siphon::config::{ConfigError, Env};
use siphon::sources::http::UrlPolicy;
use siphon::sources::s3::S3Options;
use siphon::storage::DbConfig;

/// Everything siphon-s3-ingest reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// `SIPHON_LOAD_QUEUE_URL` (required).
    pub load_queue_url: String,
    /// `SIPHON_EXPORT_QUEUE_URL` (optional): with it, a new S3 Inventory run that a
    /// configured `Inventory` covers is imported (its planning goes on this queue).
    pub export_queue_url: Option<String>,
    /// The function's own S3 client, which reads the inventories.
    pub s3: S3Options,
    /// `SIPHON_URL_ALLOWLIST`.
    pub url_policy: UrlPolicy,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
            export_queue_url: env.get("SIPHON_EXPORT_QUEUE_URL").map(str::to_string),
            s3: S3Options::from_env(env)?,
            url_policy: UrlPolicy::from_env(env),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_required() {
        let e = Config::from_env(&Env::default()).unwrap_err();
        assert_eq!(e.variable, "SIPHON_LOAD_QUEUE_URL");
        assert!(Config::from_env(&Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "q")])).is_ok());
    }
}
