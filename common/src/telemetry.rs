//! Structured logs for every binary: JSON lines on stdout (CloudWatch parses them),
//! level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::Env;

/// Installs the global subscriber once; later calls are no-ops. A `RUST_LOG` that does
/// not parse falls back to `info` and says so.
pub fn init(env: &Env) {
    let (filter, bad) = match env.get("RUST_LOG").map(EnvFilter::try_new) {
        None => (EnvFilter::new("info"), None),
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time() // Lambda stamps every line itself
        .try_init();
    if let Some(problem) = bad {
        tracing::warn!(
            variable = "RUST_LOG",
            problem,
            "unusable log filter; logging at info"
        );
    }
}
