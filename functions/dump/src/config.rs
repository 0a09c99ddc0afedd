//! siphon-dump's settings, read once at cold start.

use siphon::auth::AuthConfig;
use siphon::config::{ConfigError, Env};
use siphon::storage::DbConfig;

/// Everything siphon-dump reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// The bootstrap admin client and the token settings (bearer tokens are checked
    /// here too).
    pub auth: AuthConfig,
    /// `SIPHON_MAX_BODY_BYTES` (default 1 MiB): a larger `$dump-sql` body answers 413.
    pub max_body_bytes: usize,
    /// `SIPHON_DUMP_SQL_TIMEOUT_MS`: statement timeout of `$dump-sql` (default 60,000).
    pub sql_timeout_ms: u64,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            max_body_bytes: env.number(
                "SIPHON_MAX_BODY_BYTES",
                siphon::web::DEFAULT_MAX_BODY_BYTES as u64,
                1024,
                6 * 1024 * 1024,
            )? as usize,
            sql_timeout_ms: env.number("SIPHON_DUMP_SQL_TIMEOUT_MS", 60_000, 1, 900_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_and_refusals() {
        assert_eq!(
            Config::from_env(&Env::default()).unwrap().sql_timeout_ms,
            60_000
        );
        for bad in ["0", "1e3", "-5", "one minute"] {
            let env = Env::from_pairs(&[("SIPHON_DUMP_SQL_TIMEOUT_MS", bad)]);
            assert_eq!(
                Config::from_env(&env).unwrap_err().variable,
                "SIPHON_DUMP_SQL_TIMEOUT_MS"
            );
        }
    }
}
