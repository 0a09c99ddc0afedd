//! Where ndjson files come from: one abstraction, [`Source`], for every origin.
//!
//! - [`s3::S3Source`]: an S3 (or S3-compatible: LocalStack, MinIO, R2) bucket.
//! - [`memory::MemorySource`]: bytes held in memory, for tests and tools.

pub mod http;
pub mod memory;
pub mod s3;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::AsyncRead;

/// An object inside a bucket: `s3://bucket/key`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
}

impl ObjectLocation {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectLocation {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// Parses `s3://bucket/key`.
    pub fn parse_s3_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty()).then(|| ObjectLocation::new(bucket, key))
    }

    /// The file name part of the key (`dir/Patient.ndjson.gz` -> `Patient.ndjson.gz`).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl fmt::Display for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Where a file lives: an object in a bucket, or an `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    S3(ObjectLocation),
    Url(String),
}

impl Location {
    /// The file name part (`.../Patient.ndjson.gz` -> `Patient.ndjson.gz`), without a
    /// URL's query string.
    pub fn file_name(&self) -> &str {
        match self {
            Location::S3(o) => o.file_name(),
            Location::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                path.rsplit('/').next().unwrap_or(path)
            }
        }
    }
}

impl From<ObjectLocation> for Location {
    fn from(o: ObjectLocation) -> Self {
        Location::S3(o)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3(o) => o.fmt(f),
            // Never the query string: presigned URLs carry credentials there.
            Location::Url(u) => f.write_str(u.split(['?', '#']).next().unwrap_or(u)),
        }
    }
}

/// An opened object: its metadata and a body streamed on demand.
pub struct OpenedObject {
    /// Size in bytes as stored (compressed), when known.
    pub size: Option<u64>,
    /// The entity tag, when the store gives one.
    pub etag: Option<String>,
    /// The bytes, streamed: never held whole in memory.
    pub body: Box<dyn AsyncRead + Send + Unpin>,
}

/// Why an object could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No such bucket or key.
    #[error("{0}")]
    NotFound(String),
    /// Credentials refused or not allowed to read.
    #[error("{0}")]
    AccessDenied(String),
    /// The object changed since it was queued (its etag no longer matches).
    #[error("{0}")]
    Changed(String),
    /// Network or throttling: worth a retry.
    #[error("{0}")]
    Transient(String),
    /// Anything else, permanent.
    #[error("{0}")]
    Other(String),
    /// The URL is not allowed (scheme, address, allow-list): a caller error, HTTP 400.
    #[error("{0}")]
    Refused(String),
}

impl SourceError {
    /// True when a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }
}

/// Something that opens files for reading. `if_match` asks for exactly that version
/// (an etag); a store that cannot check it may ignore it.
pub trait Source: Send + Sync {
    fn open<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>>;
}

/// Checks a URL before anything is stored or fetched (scheme, resolved addresses,
/// allow-list): what `$import`, `$load` and load-from-bucket's `endpoint-url` answer 400 by.
pub trait UrlGuard: Send + Sync {
    fn check<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), SourceError>>;
}

impl UrlGuard for http::HttpSource {
    fn check<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(http::HttpSource::check(self, url))
    }
}

/// Sends each location to the source that reads it: buckets to `s3`, URLs to `http`.
pub struct Routed {
    pub s3: Arc<dyn Source>,
    pub http: Arc<dyn Source>,
}

impl Source for Routed {
    fn open<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match location {
            Location::S3(_) => self.s3.open(location, if_match),
            Location::Url(_) => self.http.open(location, if_match),
        }
    }
}

impl Source for http::HttpSource {
    fn open<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            match location {
                Location::Url(url) => self.open_url(url, if_match).await,
                Location::S3(o) => Err(SourceError::Other(format!(
                    "{o} is in a bucket, not at a URL"
                ))),
            }
        })
    }
}
