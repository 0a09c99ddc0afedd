//! Dead letters: load and export messages the queues gave up on (after
//! `SIPHON_MAX_RECEIVES` receives), with what went wrong, and a retry that puts the work
//! back on its queue from its checkpoint.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::exporting::ExportMessage;
use crate::queue::{DeadLetterQueue, LoadMessage, MessageQueue};
use crate::storage::Db;

/// One queue and its dead-letter queue.
pub struct Pair {
    /// `load` or `export`.
    pub name: &'static str,
    pub queue: Arc<dyn MessageQueue>,
    pub dead: Arc<dyn DeadLetterQueue>,
}

/// The dead-letter queues of the load and export queues.
pub struct DeadLetters {
    pub db: Db,
    pub pairs: Vec<Pair>,
}

impl DeadLetters {
    /// Up to `max` dead messages per queue, each with the LoaderFile or export task it
    /// was about and that one's error. Credentials in a message are never shown.
    pub async fn list(&self, max: usize) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for pair in &self.pairs {
            for m in pair.dead.peek(max).await? {
                let mut entry =
                    json!({"id": m.id, "queue": pair.name, "receives": m.receives, "sent": m.sent});
                if let Ok(load) = serde_json::from_str::<LoadMessage>(&m.body) {
                    entry["loaderFile"] = json!(load.loader_file_id);
                    entry["file"] = json!(format!("s3://{}/{}", load.bucket, load.key));
                    if let Some(f) = self.db.loader_file(&load.loader_file_id).await? {
                        entry["status"] = json!(f.status);
                        entry["error"] = json!(f.error);
                    }
                } else if let Ok(export) = serde_json::from_str::<ExportMessage>(&m.body) {
                    entry["task"] = json!(export.task);
                } else {
                    entry["error"] = json!("unreadable message");
                }
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Moves message `id` back to its queue. A LoaderFile that ended in `error` because
    /// of it goes back to `pending` first (its checkpoint kept).
    pub async fn retry(&self, id: &str) -> Result<Value> {
        for pair in &self.pairs {
            let Some(body) = pair.dead.take(id).await? else {
                continue;
            };
            if let Ok(load) = serde_json::from_str::<LoadMessage>(&body) {
                self.db.retry_loader_file(&load.loader_file_id).await?;
            }
            pair.queue.send_bodies(vec![body], None).await?;
            tracing::info!(message = id, queue = pair.name, "dead letter retried");
            return Ok(
                json!({"message": format!("message {id} is back on the {} queue", pair.name)}),
            );
        }
        Err(Error::NotFound(format!("no dead letter {id}")))
    }
}
