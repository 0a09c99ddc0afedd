//! siphon-sweep: the scheduled function (EventBridge, every minute) that gets work whose
//! worker died going again (`siphon::sweep`). One invocation runs `passes` passes
//! `interval` apart, so nothing stalled waits much longer than the interval.

mod config;

use std::sync::Arc;

use serde_json::{json, Value};
use siphon::queue::MessageQueue;
use siphon::storage::Db;
use siphon::sweep::Sweeper;

pub use config::Config;

/// The sweeper of a configuration (the load queue, and the export queue when there is
/// one); what `main` and `make serve` both call. No network call.
pub async fn boot(config: &Config, db: Db) -> siphon::Result<Sweeper> {
    let load_queue: Arc<dyn MessageQueue> = siphon::boot::queue(&config.load_queue_url).await?;
    let mut sweeper = Sweeper::new(db, load_queue, config.options.clone());
    if let Some(q) = siphon::boot::optional_queue(config.export_queue_url.as_deref()).await? {
        sweeper = sweeper.with_export_queue(q);
    }
    Ok(sweeper)
}

/// Runs the passes of one invocation; answers what each pass did.
pub async fn run(config: &Config, sweeper: &Sweeper) -> Value {
    let mut passes = Vec::new();
    for n in 0..config.passes {
        if n > 0 {
            tokio::time::sleep(config.interval).await;
        }
        match sweeper.pass().await {
            Ok(report) => passes.push(json!(report)),
            Err(e) => {
                tracing::error!(error = %e, "sweep pass failed");
                passes.push(json!({"error": e.to_string()}));
            }
        }
    }
    json!({ "passes": passes })
}
