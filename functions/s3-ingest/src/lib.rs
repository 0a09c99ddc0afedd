//! siphon-s3-ingest: S3 `ObjectCreated` events, delivered directly or through an SQS
//! queue (the S3 notification target), become queued loads
//! (`siphon::ingestion::events`). This crate reads the configuration and routes.

mod config;

use std::sync::Arc;

use serde_json::Value;
use siphon::ingestion::events::{self, IngestEvent, ManifestListener};
use siphon::inventory::auto::AutoImport;
use siphon::queue::MessageQueue;
use siphon::sources::http::HttpSource;
use siphon::storage::Db;

pub use config::Config;

/// What a sandbox keeps: the database, the load queue, and the automatic imports of new
/// S3 Inventory runs when an export queue is configured.
pub struct Ingest {
    pub db: Db,
    pub queue: Arc<dyn MessageQueue>,
    pub auto: Option<AutoImport>,
}

/// Everything s3-ingest needs, from its configuration; what `main` and `make serve` both
/// call. No network call.
pub async fn boot(config: &Config, db: Db) -> siphon::Result<Ingest> {
    let queue = siphon::boot::queue(&config.load_queue_url).await?;
    let auto = match siphon::boot::optional_queue(config.export_queue_url.as_deref()).await? {
        Some(tasks) => {
            let s3 = siphon::sources::s3::client(&config.s3).await?;
            Some(auto_import(config, &db, tasks, s3))
        }
        None => None,
    };
    Ok(Ingest { db, queue, auto })
}

impl Ingest {
    /// One event (see [`handle`]).
    pub async fn handle(&self, event: Value) -> Result<Value, siphon::Error> {
        let listener = self.auto.as_ref().map(|a| a as &dyn ManifestListener);
        handle(&self.db, self.queue.as_ref(), listener, event).await
    }
}

/// Handles an event of either shape: `{"status": "ok"}` for a direct S3 event (a failure
/// fails the invocation, S3 retries it), the `batchItemFailures` answer for an SQS batch.
/// `listener` starts the imports of new S3 Inventory runs (`manifest.checksum` events).
pub async fn handle(
    db: &Db,
    queue: &dyn MessageQueue,
    listener: Option<&dyn ManifestListener>,
    event: Value,
) -> Result<Value, siphon::Error> {
    let answer = events::handle(db, queue, listener, IngestEvent::from_value(event)?).await?;
    Ok(match answer {
        None => serde_json::json!({"status": "ok"}),
        Some(batch) => {
            serde_json::to_value(batch).map_err(|e| siphon::Error::Internal(e.to_string()))?
        }
    })
}

/// Automatic inventory imports, when an export queue is configured: `task_queue` takes
/// the planning tasks, `s3` (the function's own client) reads the inventories.
pub fn auto_import(
    config: &Config,
    db: &Db,
    task_queue: Arc<dyn MessageQueue>,
    s3: aws_sdk_s3::Client,
) -> AutoImport {
    AutoImport {
        db: db.clone(),
        task_queue,
        s3: siphon::sources::s3::S3Source::new(s3),
        guard: Arc::new(HttpSource::new(config.url_policy.clone())),
    }
}
