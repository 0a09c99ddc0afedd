//! siphon-s3-ingest: S3 `ObjectCreated` events, delivered directly or through an SQS
//! queue (the S3 notification target), become queued loads
//! (`siphon::ingestion::events`). This crate reads the configuration and routes.

mod config;

use serde_json::Value;
use siphon::ingestion::events::{self, IngestEvent};
use siphon::queue::MessageQueue;
use siphon::storage::Db;

pub use config::Config;

/// Handles an event of either shape: `{"status": "ok"}` for a direct S3 event (a failure
/// fails the invocation, S3 retries it), the `batchItemFailures` answer for an SQS batch.
pub async fn handle(
    db: &Db,
    queue: &dyn MessageQueue,
    event: Value,
) -> Result<Value, siphon::Error> {
    let answer = events::handle(db, queue, IngestEvent::from_value(event)?).await?;
    Ok(match answer {
        None => serde_json::json!({"status": "ok"}),
        Some(batch) => {
            serde_json::to_value(batch).map_err(|e| siphon::Error::Internal(e.to_string()))?
        }
    })
}
