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
    /// Where `body` starts in the object: the offset asked of [`Source::open_from`] when
    /// the store sent only the rest (HTTP or S3 `Range`), else 0 (the whole object).
    pub offset: u64,
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

/// What a request sends to the origin of the URL it is made for, and never to another
/// (a redirect elsewhere goes without it): an `Authorization` value (a pull's token or
/// password) and the headers a submission's provider asked for (`fileRequestHeader`).
/// Never shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub authorization: Option<String>,
    /// (name, value), checked when they were accepted (`model::pull::FileHeader`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        write!(
            f,
            "Credential(authorization: {}, headers: {names:?})",
            if self.authorization.is_some() {
                "<redacted>"
            } else {
                "none"
            }
        )
    }
}

impl Credential {
    /// An `Authorization` value alone.
    pub fn authorization(value: impl Into<String>) -> Self {
        Credential {
            authorization: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.authorization.is_none() && self.headers.is_empty()
    }

    /// `Some(self)` unless there is nothing to send.
    pub fn some(&self) -> Option<&Credential> {
        (!self.is_empty()).then_some(self)
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

    /// [`Source::open`] sending `credential` (the `Authorization` header of a pull
    /// import's remote, a provider's headers). A source that cannot send one refuses
    /// rather than read without.
    fn open_authorized<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a Credential>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match credential {
            None => self.open(location, if_match),
            Some(_) => Box::pin(async move {
                Err(SourceError::Other(format!(
                    "{location} cannot be read with a credential from this source"
                )))
            }),
        }
    }

    /// [`Source::open_authorized`] from byte `from` on, for a load resuming at its
    /// checkpoint without reading what it committed again. A source that can read a
    /// range answers with [`OpenedObject::offset`] `== from`; one that cannot (or a server
    /// that ignores `Range`) with the whole object and offset 0, which the caller reads
    /// past. `size` stays the whole object's.
    fn open_from<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a Credential>,
        from: u64,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        let _ = from;
        self.open_authorized(location, if_match, credential)
    }
}

/// The `Range` header value asking for an object from byte `from` to its end.
pub(crate) fn range_from(from: u64) -> String {
    format!("bytes={from}-")
}

/// Where a ranged answer starts and the whole object's size, from its `Content-Range`
/// (`bytes 100-199/200`; the size may be `*`).
pub(crate) fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
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
        credential: Option<&'a Credential>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match location {
            Location::S3(_) => self.s3.open_authorized(location, if_match, credential),
            Location::Url(_) => self.http.open_authorized(location, if_match, credential),
        }
    }

    fn open_from<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a Credential>,
        from: u64,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        match location {
            Location::S3(_) => self.s3.open_from(location, if_match, credential, from),
            Location::Url(_) => self.http.open_from(location, if_match, credential, from),
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
        credential: Option<&'a Credential>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            match location {
                Location::Url(url) => self.open_url_with(url, if_match, credential).await,
                Location::S3(o) => Err(SourceError::Other(format!(
                    "{o} is in a bucket, not at a URL"
                ))),
            }
        })
    }

    fn open_from<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a Credential>,
        from: u64,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            match location {
                Location::Url(url) => self.open_url_from(url, if_match, credential, from).await,
                Location::S3(o) => Err(SourceError::Other(format!(
                    "{o} is in a bucket, not at a URL"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_gives_the_start_and_the_whole_size() {
        assert_eq!(range_from(1234), "bytes=1234-");
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range(""), None);
    }
}
