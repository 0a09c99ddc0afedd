//! siphon-s3-ingest's settings, read once at cold start.

use siphon::config::{ConfigError, Env};
use siphon::storage::DbConfig;

/// Everything siphon-s3-ingest reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// `SIPHON_LOAD_QUEUE_URL` (required).
    pub load_queue_url: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
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
