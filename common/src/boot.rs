//! What every function does at cold start, written once: read the environment, start
//! the JSON logs, fix the allocator, parse the typed `Config` (a bad value stops here,
//! naming the variable), and build the shared pieces the functions' own `boot`s
//! assemble: queues by URL, the function's own S3 client. Each Lambda's `main.rs` calls
//! [`config`] and its crate's `boot`; `make serve` calls the same `boot`s.
//!
//! Nothing here touches the network: clients connect on first use.

use std::sync::Arc;

use crate::config::{ConfigError, Env};
use crate::error::Result;
use crate::queue::{MessageQueue, SqsQueue};

/// The cold start's first steps: the environment, telemetry, the allocator, and the
/// function's typed configuration from `parse` (logged and returned when it fails).
pub fn config<C>(parse: impl FnOnce(&Env) -> Result<C, ConfigError>) -> Result<C, ConfigError> {
    let env = Env::from_process();
    crate::telemetry::init(&env);
    crate::memory::tune();
    parse(&env).inspect_err(|e| tracing::error!(error = %e, "cold start failed"))
}

/// The SQS queue at `url`, on the function's own AWS configuration.
pub async fn queue(url: &str) -> Result<Arc<SqsQueue>> {
    Ok(Arc::new(SqsQueue::connect(url).await?))
}

/// The queue at `url` when one is configured.
pub async fn optional_queue(url: Option<&str>) -> Result<Option<Arc<dyn MessageQueue>>> {
    Ok(match url {
        Some(url) => Some(queue(url).await? as Arc<dyn MessageQueue>),
        None => None,
    })
}
