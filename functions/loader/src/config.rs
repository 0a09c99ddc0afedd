//! siphon-loader's settings, read once at cold start.

use siphon::config::{ConfigError, Env};
use siphon::sources::http::UrlPolicy;
use siphon::sources::s3::S3Options;
use siphon::storage::DbConfig;

/// Everything siphon-loader reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// `SIPHON_LOAD_QUEUE_URL` (required): the rest of a long file is queued here again.
    pub load_queue_url: String,
    /// `SIPHON_URL_ALLOWLIST`: which `https://` inputs may be read.
    pub url_policy: UrlPolicy,
    /// `SIPHON_MAX_RECEIVES`: the load queue's maxReceiveCount (default 5); on the last
    /// receive a failing file is marked `error`.
    pub max_receives: u32,
    /// The function's own S3 client (`SIPHON_S3_FORCE_PATH_STYLE`).
    pub s3: S3Options,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
            url_policy: UrlPolicy::from_env(env),
            max_receives: env.number("SIPHON_MAX_RECEIVES", 5, 1, 1000)? as u32,
            s3: S3Options::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_default_and_refusals() {
        let env = Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "q")]);
        assert_eq!(Config::from_env(&env).unwrap().max_receives, 5);
        let e = Config::from_env(&env.clone().with("SIPHON_MAX_RECEIVES", "five")).unwrap_err();
        assert_eq!(e.variable, "SIPHON_MAX_RECEIVES");
        assert!(e.problem.contains("\"five\""), "{e}");
        assert_eq!(
            Config::from_env(&Env::default()).unwrap_err().variable,
            "SIPHON_LOAD_QUEUE_URL"
        );
    }
}
