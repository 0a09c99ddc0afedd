//! Where exported files go: one abstraction, [`ObjectSink`], for every destination.
//!
//! - [`s3::S3Sink`]: an S3 (or S3-compatible: LocalStack, MinIO, R2) bucket.
//! - [`memory::MemorySink`]: objects held in memory, for unit tests of the writers.
//!
//! Files are written as multipart uploads whose state (upload id, parts and their
//! ETags) lives in the caller's checkpoint, so a writer that dies, or hands over before
//! its deadline, can be continued by another process: see [`writer`].

pub mod memory;
pub mod parquet;
pub mod s3;
pub mod writer;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use crate::model::export::Part;

/// How an object is labelled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(rename = "contentType")]
    pub content_type: String,
    /// `gzip` when the bytes are gzip-compressed for transport (`Content-Encoding`).
    #[serde(
        rename = "contentEncoding",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_encoding: Option<String>,
}

/// Why writing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The upload id is unknown to the store (completed, aborted or expired).
    #[error("{0}")]
    NoSuchUpload(String),
    /// No such bucket, access denied, or anything else permanent.
    #[error("{0}")]
    Refused(String),
    /// Network or throttling: worth a retry.
    #[error("{0}")]
    Transient(String),
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

impl From<SinkError> for crate::error::Error {
    fn from(e: SinkError) -> Self {
        match e {
            // A transient store failure is retried by the queue like a lost connection.
            SinkError::Transient(m) => crate::error::Error::Unavailable(m),
            other => crate::error::Error::Internal(other.to_string()),
        }
    }
}

/// Something that stores objects. Keys are relative to the sink's bucket.
pub trait ObjectSink: Send + Sync {
    /// Stores a whole (small) object at once.
    fn put<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Starts a multipart upload; returns its id.
    fn start_upload<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
    ) -> BoxFuture<'a, Result<String, SinkError>>;
    /// Uploads part `number` (1-based; every part but the last at least 5 MiB). Uploading
    /// the same number again replaces the part.
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Part, SinkError>>;
    /// Completes an upload from its parts, in order.
    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [Part],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Abandons an upload and its parts (an unknown upload is not an error).
    fn abort_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// The object's size, or `None` when it does not exist.
    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, SinkError>>;
    /// Deletes an object (a missing one is not an error).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Checks that the bucket exists and may be reached (S3: `HeadBucket`, which needs
    /// `s3:ListBucket`); a missing bucket or a denied access is [`SinkError::Refused`]
    /// with a message that says which.
    fn check_bucket(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
    /// A URL that lets anyone holding it GET the object for `ttl`.
    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<String, SinkError>>;
}
