//! Automatic ingestion: an S3 `ObjectCreated` record (direct, or wrapped in an SQS
//! message) creates or refreshes the object's LoaderFile and queues it.

use serde::Deserialize;

use super::queue::{LoadMessage, LoadQueue};
use crate::error::Result;
use crate::loading::loader_file::{FileOptions, LoaderFile};
use crate::sources::ObjectLocation;
use crate::storage::Db;

/// One object named by an S3 event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedObject {
    pub location: ObjectLocation,
    pub etag: Option<String>,
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Records", default)]
    records: Vec<serde_json::Value>,
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

/// The `*.ndjson.gz` objects created in an event of either shape: an S3 event, or an
/// SQS event whose message bodies are S3 events. `s3:TestEvent` and other events give
/// nothing.
pub fn created_objects(event: &serde_json::Value) -> Vec<CreatedObject> {
    let mut out = Vec::new();
    let Ok(outer) = serde_json::from_value::<Event>(event.clone()) else {
        return out;
    };
    for record in outer.records {
        if let Some(body) = record.get("body").and_then(|b| b.as_str()) {
            // SQS record: the body is an S3 event (or a test event).
            if let Ok(inner) = serde_json::from_str::<serde_json::Value>(body) {
                out.extend(created_objects(&inner));
            }
            continue;
        }
        let name = record
            .get("eventName")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let s3 = &record["s3"];
        let (Some(bucket), Some(key)) =
            (s3["bucket"]["name"].as_str(), s3["object"]["key"].as_str())
        else {
            continue;
        };
        let key = decode_key(key);
        if !key.ends_with(".ndjson.gz") {
            continue;
        }
        let etag = s3["object"]["eTag"]
            .as_str()
            .map(|e| format!("\"{}\"", e.trim_matches('"')));
        out.push(CreatedObject {
            location: ObjectLocation::new(bucket, key),
            etag,
            size: s3["object"]["size"].as_u64(),
        });
    }
    out
}

/// Creates (or, for a new version of the object, resets) the LoaderFile and queues it.
/// A duplicate event for the same version queues nothing. Returns whether it queued.
pub async fn ingest(db: &Db, queue: &dyn LoadQueue, object: &CreatedObject) -> Result<bool> {
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
    queue.send(std::slice::from_ref(&message), None).await?;
    tracing::info!(file = %object.location, loader_file = file.id, "queued");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(
            decode_key("my+dir/Patient%2B1.ndjson.gz"),
            "my dir/Patient+1.ndjson.gz"
        );
        assert_eq!(decode_key("a%2Fb/%C3%A9.ndjson.gz"), "a/b/é.ndjson.gz");
        assert_eq!(decode_key("x&y=z.ndjson.gz"), "x&y=z.ndjson.gz");
    }
}
