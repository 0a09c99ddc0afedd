//! siphon-export's settings, read once at cold start.

use siphon::config::{ConfigError, Env};
use siphon::exporting::task::TaskOptions;
use siphon::sources::s3::S3Options;
use siphon::storage::DbConfig;

/// Everything siphon-export reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// `SIPHON_EXPORT_QUEUE_URL` (required): the rest of a long task is queued here again.
    pub export_queue_url: String,
    /// `SIPHON_EXPORT_BUCKET` (required): where `$export` files go.
    pub export_bucket: String,
    /// `SIPHON_MAX_RECEIVES` (default 5): on the last receive a failing task fails.
    pub max_receives: u32,
    /// Leases, part and file sizes (`SIPHON_LEASE_SECONDS`, `SIPHON_EXPORT_PART_MB`, ...).
    pub task: TaskOptions,
    /// The function's own S3 client (`SIPHON_S3_FORCE_PATH_STYLE`).
    pub s3: S3Options,
    /// `SIPHON_LOAD_QUEUE_URL` (optional): where inventory imports queue their files;
    /// without it, inventory planning tasks fail saying so.
    pub load_queue_url: Option<String>,
    /// `SIPHON_CLIENT_KEY` / `SIPHON_CLIENT_KEY_ARN`: siphon's own key as a SMART client
    /// of remote servers (pull imports with `auth` type `smart`).
    pub client_key: siphon::auth::remote::ClientKeyConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            export_queue_url: env.required("SIPHON_EXPORT_QUEUE_URL")?.to_string(),
            export_bucket: env.required("SIPHON_EXPORT_BUCKET")?.to_string(),
            max_receives: env.number("SIPHON_MAX_RECEIVES", 5, 1, 1000)? as u32,
            task: TaskOptions::from_env(env)?,
            s3: S3Options::from_env(env)?,
            load_queue_url: env.get("SIPHON_LOAD_QUEUE_URL").map(str::to_string),
            client_key: siphon::auth::remote::ClientKeyConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_settings_and_sizes() {
        let env = Env::from_pairs(&[
            ("SIPHON_EXPORT_QUEUE_URL", "q"),
            ("SIPHON_EXPORT_BUCKET", "b"),
        ]);
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.task.part_bytes, 8 << 20);
        assert_eq!(c.task.file_max_bytes, 1 << 30);
        for (var, bad) in [
            ("SIPHON_EXPORT_PART_MB", "4"),
            ("SIPHON_EXPORT_FILE_MAX_RESOURCES", "0"),
            ("SIPHON_LEASE_SECONDS", "long"),
        ] {
            assert_eq!(
                Config::from_env(&env.clone().with(var, bad))
                    .unwrap_err()
                    .variable,
                var
            );
        }
        assert_eq!(
            Config::from_env(&Env::from_pairs(&[("SIPHON_EXPORT_QUEUE_URL", "q")]))
                .unwrap_err()
                .variable,
            "SIPHON_EXPORT_BUCKET"
        );
    }
}
