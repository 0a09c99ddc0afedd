//! siphon-s3-ingest: S3 `ObjectCreated` events, delivered directly or through an SQS
//! queue (the S3 notification target), become queued loads.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::Value;
use siphon::ingestion::events::{created_objects, ingest};
use siphon::ingestion::queue::LoadQueue;
use siphon::storage::Db;

/// Handles an event of either shape. For an SQS batch, records that fail are reported
/// as batch item failures; for a direct S3 event, a failure fails the invocation (S3
/// retries it).
pub async fn handle(db: &Db, queue: &dyn LoadQueue, event: Value) -> Result<Value, siphon::Error> {
    let records = event
        .get("Records")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let from_sqs = records
        .first()
        .is_some_and(|r| r.get("eventSource").and_then(|s| s.as_str()) == Some("aws:sqs"));
    if !from_sqs {
        for object in created_objects(&event) {
            ingest(db, queue, &object).await?;
        }
        return Ok(serde_json::json!({"status": "ok"}));
    }
    let mut response = SqsBatchResponse::default();
    for record in records {
        let wrapped = serde_json::json!({"Records": [record.clone()]});
        for object in created_objects(&wrapped) {
            if let Err(e) = ingest(db, queue, &object).await {
                tracing::error!(file = %object.location, error = %e, "cannot queue the file");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record
                    .get("messageId")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string();
                response.batch_item_failures.push(failure);
                break;
            }
        }
    }
    serde_json::to_value(response).map_err(|e| siphon::Error::Internal(e.to_string()))
}
