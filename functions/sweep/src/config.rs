//! siphon-sweep's settings, read once at cold start.

use std::time::Duration;

use siphon::config::{ConfigError, Env};
use siphon::storage::DbConfig;
use siphon::sweep::SweepOptions;

/// Everything siphon-sweep reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub db: DbConfig,
    /// `SIPHON_LOAD_QUEUE_URL` (required): where stalled files are re-delivered.
    pub load_queue_url: String,
    /// `SIPHON_EXPORT_QUEUE_URL` (optional): where stalled export tasks are re-delivered.
    pub export_queue_url: Option<String>,
    /// `SIPHON_SWEEP_PASSES` (default 2) passes per invocation,
    pub passes: u32,
    /// `SIPHON_SWEEP_INTERVAL_SECONDS` (default 30) apart: with a one-minute schedule, a
    /// stalled file waits at most about 30 s for a pass.
    pub interval: Duration,
    /// `SIPHON_SWEEP_GRACE_SECONDS` (default 5): how long after its lease ran out a file
    /// counts as stalled; `SIPHON_SWEEP_GIVE_UP_AFTER` (default 5): workers in a row dead
    /// on a file without progress before it ends in `error`, provided it has not moved
    /// for `SIPHON_SWEEP_GIVE_UP_STUCK_SECONDS` (default 900) either.
    pub options: SweepOptions,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            db: DbConfig::from_env(env)?,
            load_queue_url: env.required("SIPHON_LOAD_QUEUE_URL")?.to_string(),
            export_queue_url: env.get("SIPHON_EXPORT_QUEUE_URL").map(str::to_string),
            passes: env.number("SIPHON_SWEEP_PASSES", 2, 1, 10)? as u32,
            interval: env.seconds("SIPHON_SWEEP_INTERVAL_SECONDS", 30.0)?,
            options: SweepOptions {
                grace: env.seconds("SIPHON_SWEEP_GRACE_SECONDS", 5.0)?,
                give_up_after: env.number("SIPHON_SWEEP_GIVE_UP_AFTER", 5, 1, 1000)? as u32,
                give_up_stuck: env.seconds("SIPHON_SWEEP_GIVE_UP_STUCK_SECONDS", 900.0)?,
                ..SweepOptions::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let env = Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "q")]);
        let c = Config::from_env(&env).unwrap();
        assert_eq!((c.passes, c.interval.as_secs()), (2, 30));
        assert_eq!(c.options.grace.as_secs(), 5);
        assert_eq!(c.options.give_up_after, 5);
        assert_eq!(c.options.give_up_stuck.as_secs(), 900);
        for (var, bad) in [
            ("SIPHON_SWEEP_PASSES", "0"),
            ("SIPHON_SWEEP_INTERVAL_SECONDS", "-1"),
            ("SIPHON_SWEEP_GRACE_SECONDS", "soon"),
            ("SIPHON_SWEEP_GIVE_UP_AFTER", "0"),
            ("SIPHON_SWEEP_GIVE_UP_STUCK_SECONDS", "never"),
        ] {
            let e = Config::from_env(&env.clone().with(var, bad)).unwrap_err();
            assert_eq!(e.variable, var);
        }
    }
}
