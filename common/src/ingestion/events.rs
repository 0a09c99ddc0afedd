//! Automatic ingestion: an S3 `ObjectCreated` record (direct, or wrapped in an SQS
//! message) creates or refreshes the object's LoaderFile and queues it.
//!
//! Events are read with the `aws_lambda_events` types (`S3Event`, `SqsEvent`).

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{FileOptions, LoaderFile, ObjectLocation};
use crate::queue::{self, LoadMessage, MessageQueue};
use crate::storage::Db;

/// One object named by an S3 event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedObject {
    pub location: ObjectLocation,
    pub etag: Option<String>,
    pub size: Option<u64>,
}

/// What s3-ingest is invoked with: S3 events directly, or an SQS batch whose message
/// bodies are S3 events (the bucket notification's target queue).
#[derive(Debug)]
pub enum IngestEvent {
    Direct(S3Event),
    Queued(SqsEvent),
}

impl IngestEvent {
    /// Tells the two shapes apart by the first record's `eventSource` (`aws:sqs`).
    pub fn from_value(event: Value) -> Result<Self> {
        let from_sqs = event["Records"][0]["eventSource"].as_str() == Some("aws:sqs");
        if from_sqs {
            serde_json::from_value(event)
                .map(IngestEvent::Queued)
                .map_err(|e| Error::BadRequest(format!("not an SQS event: {e}")))
        } else {
            serde_json::from_value(event)
                .map(IngestEvent::Direct)
                .map_err(|e| Error::BadRequest(format!("not an S3 event: {e}")))
        }
    }
}

/// Keys in S3 events are URL-encoded with `+` for space.
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    url::form_urlencoded::parse(
        format!("k={}", spaced.replace('&', "%26").replace('=', "%3D")).as_bytes(),
    )
    .next()
    .map(|(_, v)| v.into_owned())
    .unwrap_or(spaced)
}

/// The records of an S3 event that say an object was created, with its bucket and
/// decoded key.
fn created(
    event: &S3Event,
) -> impl Iterator<Item = (&aws_lambda_events::event::s3::S3EventRecord, &str, String)> {
    event
        .records
        .iter()
        .filter(|r| {
            r.event_name
                .as_deref()
                .is_some_and(|n| n.starts_with("ObjectCreated:"))
        })
        .filter_map(|r| {
            let bucket = r.s3.bucket.name.as_deref()?;
            Some((r, bucket, decode_key(r.s3.object.key.as_deref()?)))
        })
}

/// The `*.ndjson.gz` objects an S3 event says were created.
pub fn created_objects(event: &S3Event) -> Vec<CreatedObject> {
    created(event)
        .filter_map(|(r, bucket, key)| {
            key.ends_with(".ndjson.gz").then(|| CreatedObject {
                location: ObjectLocation::new(bucket, key),
                etag: r
                    .s3
                    .object
                    .e_tag
                    .as_deref()
                    .map(|e| format!("\"{}\"", e.trim_matches('"'))),
                size: r.s3.object.size.and_then(|s| u64::try_from(s).ok()),
            })
        })
        .collect()
}

/// The objects in one SQS message body: an S3 event, or nothing (the `s3:TestEvent` S3
/// sends when a notification is configured, or anything else).
pub fn objects_in_body(body: &str) -> Vec<CreatedObject> {
    serde_json::from_str::<S3Event>(body)
        .map(|e| created_objects(&e))
        .unwrap_or_default()
}

/// The `manifest.checksum` objects an S3 event says were created: S3 writes that file
/// last, so each means a complete new S3 Inventory run.
pub fn written_manifests(event: &S3Event) -> Vec<ObjectLocation> {
    created(event)
        .filter_map(|(_, bucket, key)| {
            (key == "manifest.checksum" || key.ends_with("/manifest.checksum"))
                .then(|| ObjectLocation::new(bucket, key))
        })
        .collect()
}

/// What to do when S3 says a new inventory run is complete (the port inventory
/// imports plug into: `inventory::auto`).
pub trait ManifestListener: Send + Sync {
    /// `checksum` is the new run's `manifest.checksum`.
    fn manifest_written<'a>(
        &'a self,
        checksum: &'a ObjectLocation,
    ) -> futures::future::BoxFuture<'a, Result<()>>;
}

/// Everything one S3 event asks for.
async fn handle_event(
    db: &Db,
    queue: &dyn MessageQueue,
    listener: Option<&dyn ManifestListener>,
    event: &S3Event,
) -> Result<()> {
    for object in created_objects(event) {
        ingest(db, queue, &object).await?;
    }
    for checksum in written_manifests(event) {
        match listener {
            Some(l) => l.manifest_written(&checksum).await?,
            None => tracing::warn!(
                manifest = %checksum,
                "an inventory manifest was written, but automatic inventory imports are off here (no export queue)"
            ),
        }
    }
    Ok(())
}

/// Creates (or, for a new version of the object, resets) the LoaderFile and queues it.
/// A duplicate event for the same version queues nothing. Returns whether it queued.
pub async fn ingest(db: &Db, queue: &dyn MessageQueue, object: &CreatedObject) -> Result<bool> {
    let pending = LoaderFile::pending(
        &object.location,
        object.etag.clone(),
        object.size,
        FileOptions::default(),
    );
    let (file, created) = db.create_loader_file(&pending).await?;
    let queue_it = created
        || db
            .reset_loader_file_if_new_version(&file, object.etag.as_deref(), object.size)
            .await?;
    if !queue_it {
        tracing::info!(file = %object.location, etag = ?object.etag, "duplicate event: this version is already queued");
        return Ok(false);
    }
    // The event's etag: `file` may be the version before the reset.
    let message = LoadMessage {
        etag: object.etag.clone(),
        ..LoadMessage::for_file(&file, Default::default())
    };
    queue::send(queue, std::slice::from_ref(&message), None).await?;
    tracing::info!(file = %object.location, loader_file = file.id, "queued");
    Ok(true)
}

/// Handles one invocation. A direct S3 event fails as a whole (S3 retries it); an SQS
/// batch reports the messages whose object could not be queued as batch item failures.
///
/// `listener` is told about new inventory runs (`manifest.checksum` objects).
pub async fn handle(
    db: &Db,
    queue: &dyn MessageQueue,
    listener: Option<&dyn ManifestListener>,
    event: IngestEvent,
) -> Result<Option<SqsBatchResponse>> {
    match event {
        IngestEvent::Direct(event) => {
            handle_event(db, queue, listener, &event).await?;
            Ok(None)
        }
        IngestEvent::Queued(event) => {
            let mut response = SqsBatchResponse::default();
            for record in event.records {
                let Some(event) = record
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<S3Event>(b).ok())
                else {
                    continue;
                };
                if let Err(e) = handle_event(db, queue, listener, &event).await {
                    tracing::error!(message_id = record.message_id.as_deref(), error = %e, "cannot handle the S3 event; it will be redelivered");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = record.message_id.clone().unwrap_or_default();
                    response.batch_item_failures.push(failure);
                }
            }
            Ok(Some(response))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(
            decode_key("my+dir/Patient%2B1.ndjson.gz"),
            "my dir/Patient+1.ndjson.gz"
        );
        assert_eq!(decode_key("a%2Fb/%C3%A9.ndjson.gz"), "a/b/é.ndjson.gz");
        assert_eq!(decode_key("x&y=z.ndjson.gz"), "x&y=z.ndjson.gz");
    }

    fn sample() -> Value {
        let text = include_str!("../../../infra/events/s3-object-created.json");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_sample_events_parse_into_objects() {
        let IngestEvent::Direct(event) = IngestEvent::from_value(sample()).unwrap() else {
            panic!("direct")
        };
        let objects = created_objects(&event);
        assert_eq!(
            objects,
            vec![CreatedObject {
                location: ObjectLocation::new("siphon-samples", "Patient.ndjson.gz"),
                etag: Some("\"0123456789abcdef0123456789abcdef\"".into()),
                size: Some(1024),
            }]
        );
        let queued: Value = serde_json::from_str(include_str!(
            "../../../infra/events/sqs-s3-object-created.json"
        ))
        .unwrap();
        let IngestEvent::Queued(sqs) = IngestEvent::from_value(queued).unwrap() else {
            panic!("queued")
        };
        assert_eq!(
            objects_in_body(sqs.records[0].body.as_deref().unwrap()).len(),
            1
        );
    }

    #[test]
    fn other_events_give_nothing() {
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert!(objects_in_body(&test_event.to_string()).is_empty());
        assert!(objects_in_body("not json").is_empty());
        let mut removed = sample();
        removed["Records"][0]["eventName"] = json!("ObjectRemoved:Delete");
        let IngestEvent::Direct(e) = IngestEvent::from_value(removed).unwrap() else {
            panic!()
        };
        assert!(created_objects(&e).is_empty());
        let mut other = sample();
        other["Records"][0]["s3"]["object"]["key"] = json!("notes.txt");
        let IngestEvent::Direct(e) = IngestEvent::from_value(other).unwrap() else {
            panic!()
        };
        assert!(created_objects(&e).is_empty());
        assert!(IngestEvent::from_value(json!({"Records": [{"eventSource": "aws:s3"}]})).is_err());
    }
}
