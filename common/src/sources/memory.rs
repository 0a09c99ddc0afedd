//! An in-memory [`Source`]: objects are byte vectors, optionally delivered in small
//! chunks or failing after a number of bytes, to exercise the streaming paths.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Location, OpenedObject, Source, SourceError};

/// Objects held in memory.
#[derive(Clone, Default)]
pub struct MemorySource {
    objects: Arc<Mutex<HashMap<Location, Arc<Vec<u8>>>>>,
    /// Bytes per read call (small values exercise partial reads).
    pub chunk: Option<usize>,
    /// Fail every read after this many bytes with a network-like error.
    pub fail_after: Option<usize>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers at most `bytes` per read call.
    pub fn chunked(mut self, bytes: usize) -> Self {
        self.chunk = Some(bytes);
        self
    }

    /// Fails every read after `bytes` bytes, like a dropped connection.
    pub fn failing_after(mut self, bytes: usize) -> Self {
        self.fail_after = Some(bytes);
        self
    }

    /// Stores `bytes` at `location` (replacing what was there).
    pub fn put(&self, location: impl Into<Location>, bytes: Vec<u8>) {
        let location = location.into();
        self.objects
            .lock()
            .unwrap()
            .insert(location, Arc::new(bytes));
    }
}

fn etag_of(bytes: &[u8]) -> String {
    // FNV-1a: a stable fingerprint, enough to tell versions apart in tests.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("\"{h:016x}\"")
}

impl Source for MemorySource {
    fn open<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        self.open_from(location, if_match, None, 0)
    }

    /// Honours `from` as a store that reads ranges does (past the end: the whole object).
    fn open_from<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a super::Credential>,
        from: u64,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        if credential.is_some() {
            return self.open_authorized(location, if_match, credential);
        }
        Box::pin(async move {
            let bytes = self
                .objects
                .lock()
                .unwrap()
                .get(location)
                .cloned()
                .ok_or_else(|| {
                    SourceError::NotFound(format!("object {location} does not exist"))
                })?;
            let etag = etag_of(&bytes);
            if let Some(want) = if_match {
                if want != etag {
                    return Err(SourceError::Changed(format!(
                        "object {location} changed since it was queued (etag {etag}, expected {want})"
                    )));
                }
            }
            let offset = if from < bytes.len() as u64 { from } else { 0 };
            Ok(OpenedObject {
                size: Some(bytes.len() as u64),
                etag: Some(etag),
                offset,
                body: Box::new(MemoryReader {
                    bytes,
                    pos: offset as usize,
                    chunk: self.chunk.unwrap_or(usize::MAX),
                    fail_after: self.fail_after,
                }),
            })
        })
    }
}

struct MemoryReader {
    bytes: Arc<Vec<u8>>,
    pos: usize,
    chunk: usize,
    fail_after: Option<usize>,
}

impl AsyncRead for MemoryReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut end = self
            .bytes
            .len()
            .min(self.pos + self.chunk.min(buf.remaining()));
        if let Some(limit) = self.fail_after {
            if self.pos >= limit {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                )));
            }
            end = end.min(limit);
        }
        let pos = self.pos;
        buf.put_slice(&self.bytes[pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}
