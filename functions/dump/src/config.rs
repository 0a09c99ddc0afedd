//! siphon-dump's settings, read once at cold start.

use siphon::auth::AdminConfig;
use siphon::config::{ConfigError, Env};
use siphon::storage::DbConfig;

/// Everything siphon-dump reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// The bootstrap admin client.
    pub admin: AdminConfig,
    /// `SIPHON_DUMP_SQL_TIMEOUT_MS`: statement timeout of `$dump-sql` (default 60,000).
    pub sql_timeout_ms: u64,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            admin: AdminConfig::from_env(env)?,
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
