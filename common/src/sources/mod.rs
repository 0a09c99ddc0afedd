//! Where ndjson files come from: one abstraction, [`Source`], for every origin.
//!
//! - [`s3::S3Source`]: an S3 (or S3-compatible: LocalStack, MinIO, R2) bucket.
//! - [`aws`]: the guarded HTTP client and SDK configuration every AWS client is built from.
//! - [`memory::MemorySource`]: bytes held in memory, for tests and tools.

pub mod aws;
pub mod http;
pub mod memory;
pub mod s3;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::AsyncRead;

pub use crate::model::location::{Location, ObjectLocation};

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

/// A source failure as the answer to a request that named the source: the caller's
/// store or URL is what is wrong (400), unless it failed for now (500, try again).
impl From<SourceError> for crate::error::Error {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Transient(m) => crate::error::Error::Unavailable(m),
            SourceError::NotFound(m)
            | SourceError::AccessDenied(m)
            | SourceError::Changed(m)
            | SourceError::Other(m)
            | SourceError::Refused(m) => crate::error::Error::BadRequest(m),
        }
    }
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

    /// [`Source::open`] sending `authorization` (the `Authorization` header of a pull
    /// import's remote). A source that cannot send one refuses rather than read without.
    fn open_authorized<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match authorization {
            None => self.open(location, if_match),
            Some(_) => Box::pin(async move {
                Err(SourceError::Other(format!(
                    "{location} cannot be read with a credential from this source"
                )))
            }),
        }
    }
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

    fn open_authorized<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match location {
            Location::S3(_) => self.s3.open_authorized(location, if_match, authorization),
            Location::Url(_) => self.http.open_authorized(location, if_match, authorization),
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

    fn open_authorized<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            match location {
                Location::Url(url) => self.open_url_with(url, if_match, authorization).await,
                Location::S3(o) => Err(SourceError::Other(format!(
                    "{o} is in a bucket, not at a URL"
                ))),
            }
        })
    }
}
