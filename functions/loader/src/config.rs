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
    /// `SIPHON_LEASE_SECONDS` (default 30) and `SIPHON_HEARTBEAT_SECONDS` (default 10):
    /// how long a claim on a file lasts unless renewed, and how often a live worker
    /// renews it. A dead worker's file is stalled once its lease runs out.
    pub lease: std::time::Duration,
    pub heartbeat: std::time::Duration,
    /// `SIPHON_MAX_GZIP_RATIO` (default 100): a gzip file may inflate at most this many
    /// times its compressed size (plus 8 MiB); past it the file ends in `error`.
    pub max_gzip_ratio: u64,
    /// `SIPHON_MAX_FILE_BYTES` (default 68719476736, 64 GiB): at most this many bytes are
    /// read from one file's source, compressed or not; past it the file ends in `error`.
    pub max_file_bytes: u64,
    /// `SIPHON_CLIENT_KEY` / `SIPHON_CLIENT_KEY_ARN`: siphon's own key as a SMART client
    /// of remote servers (pull imports with `auth` type `smart`).
    pub client_key: siphon::auth::remote::ClientKeyConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let lease = env.seconds("SIPHON_LEASE_SECONDS", 30.0)?;
        let heartbeat = env.seconds("SIPHON_HEARTBEAT_SECONDS", 10.0)?;
        if heartbeat.is_zero() || heartbeat * 2 > lease {
            return Err(ConfigError::new(
                "SIPHON_HEARTBEAT_SECONDS",
                format!(
                    "{} s must be more than 0 and at most half of SIPHON_LEASE_SECONDS ({} s)",
                    heartbeat.as_secs_f64(),
                    lease.as_secs_f64()
                ),
            ));
        }
        Ok(Config {
            db: DbConfig::from_env(env)?,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
            url_policy: UrlPolicy::from_env(env),
            max_receives: env.number("SIPHON_MAX_RECEIVES", 5, 1, 1000)? as u32,
            s3: S3Options::from_env(env)?,
            lease,
            heartbeat,
            max_gzip_ratio: env.number("SIPHON_MAX_GZIP_RATIO", 100, 2, 100_000)?,
            max_file_bytes: env.number("SIPHON_MAX_FILE_BYTES", 64 << 30, 1 << 20, u64::MAX)?,
            client_key: siphon::auth::remote::ClientKeyConfig::from_env(env)?,
        })
    }

    /// The loader's options with this configuration's lease and heartbeat.
    pub fn load_options(&self) -> siphon::loading::LoadOptions {
        siphon::loading::LoadOptions {
            lease: self.lease,
            heartbeat: self.heartbeat,
            max_expansion: self.max_gzip_ratio,
            max_file_bytes: self.max_file_bytes,
            ..Default::default()
        }
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
        let c = Config::from_env(&env).unwrap();
        assert_eq!((c.lease.as_secs(), c.heartbeat.as_secs()), (30, 10));
        let e = Config::from_env(&env.clone().with("SIPHON_HEARTBEAT_SECONDS", "20")).unwrap_err();
        assert_eq!(e.variable, "SIPHON_HEARTBEAT_SECONDS");
    }

    #[test]
    fn a_file_is_read_up_to_64_gib_unless_told_otherwise() {
        let env = Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "q")]);
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.load_options().max_file_bytes, 64 << 30);
        let c = Config::from_env(&env.clone().with("SIPHON_MAX_FILE_BYTES", "2097152")).unwrap();
        assert_eq!(c.load_options().max_file_bytes, 2 << 20);
        let e = Config::from_env(&env.clone().with("SIPHON_MAX_FILE_BYTES", "1000")).unwrap_err();
        assert_eq!(e.variable, "SIPHON_MAX_FILE_BYTES");
        assert!(e.problem.contains("out of range"), "{e}");
    }
}
