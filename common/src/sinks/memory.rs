//! An in-memory [`ObjectSink`], for unit tests of the writers: it enforces S3's part
//! rules (numbers from 1, at least 5 MiB but the last) and counts calls, and can be told
//! to fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{ObjectMeta, ObjectSink, Part, SinkError};

/// S3's smallest part but the last.
pub const MIN_PART: usize = 5 << 20;

#[derive(Default)]
struct State {
    objects: BTreeMap<String, (ObjectMeta, Bytes)>,
    uploads: HashMap<String, (String, ObjectMeta, BTreeMap<i32, Bytes>)>,
    next: u64,
    calls: BTreeMap<&'static str, u64>,
}

/// Objects in memory.
#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
    /// Fail `upload_part` with a transient error after this many successful ones.
    pub fail_parts_after: Mutex<Option<u64>>,
    /// Accept parts smaller than 5 MiB (tests with small data).
    pub small_parts: bool,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that accepts parts of any size.
    pub fn with_small_parts() -> Self {
        MemorySink {
            small_parts: true,
            ..Default::default()
        }
    }

    /// The stored objects, by key.
    pub fn objects(&self) -> BTreeMap<String, Bytes> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .map(|(k, (_, b))| (k.clone(), b.clone()))
            .collect()
    }

    /// An object's labels.
    pub fn meta(&self, key: &str) -> Option<ObjectMeta> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(m, _)| m.clone())
    }

    /// Multipart uploads still open.
    pub fn open_uploads(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    /// How many times `call` was made.
    pub fn calls(&self, call: &'static str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(call)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, call: &'static str) {
        *self.state.lock().unwrap().calls.entry(call).or_default() += 1;
    }
}

fn ready<'a, T: Send + 'a>(v: Result<T, SinkError>) -> BoxFuture<'a, Result<T, SinkError>> {
    Box::pin(async move { v })
}

impl ObjectSink for MemorySink {
    fn put<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        self.count("put");
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(key.to_string(), (meta.clone(), bytes));
        ready(Ok(()))
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
    ) -> BoxFuture<'a, Result<String, SinkError>> {
        self.count("start_upload");
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let id = format!("upload-{}", s.next);
        s.uploads
            .insert(id.clone(), (key.to_string(), meta.clone(), BTreeMap::new()));
        ready(Ok(id))
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Part, SinkError>> {
        self.count("upload_part");
        {
            let mut fail = self.fail_parts_after.lock().unwrap();
            if let Some(n) = fail.as_mut() {
                if *n == 0 {
                    return ready(Err(SinkError::Transient(
                        "injected: connection reset".into(),
                    )));
                }
                *n -= 1;
            }
        }
        let mut s = self.state.lock().unwrap();
        let Some((k, _, parts)) = s.uploads.get_mut(upload_id) else {
            return ready(Err(SinkError::NoSuchUpload(format!(
                "no upload {upload_id}"
            ))));
        };
        if k != key || !(1..=10_000).contains(&number) {
            return ready(Err(SinkError::Refused(format!(
                "bad part {number} of {key}"
            ))));
        }
        let etag = format!("\"{}-{}\"", number, bytes.len());
        parts.insert(number, bytes);
        ready(Ok(Part { number, etag }))
    }

    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [Part],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        self.count("complete_upload");
        let mut s = self.state.lock().unwrap();
        let Some((k, meta, stored)) = s.uploads.remove(upload_id) else {
            return ready(Err(SinkError::NoSuchUpload(format!(
                "no upload {upload_id}"
            ))));
        };
        if k != key || parts.is_empty() {
            return ready(Err(SinkError::Refused(format!("bad completion of {key}"))));
        }
        let mut body = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let Some(bytes) = stored.get(&p.number) else {
                return ready(Err(SinkError::Refused(format!(
                    "part {} missing",
                    p.number
                ))));
            };
            if p.etag != format!("\"{}-{}\"", p.number, bytes.len()) {
                return ready(Err(SinkError::Refused(format!(
                    "part {} etag mismatch",
                    p.number
                ))));
            }
            if !self.small_parts && i + 1 < parts.len() && bytes.len() < MIN_PART {
                return ready(Err(SinkError::Refused(format!(
                    "part {} is too small",
                    p.number
                ))));
            }
            body.extend_from_slice(bytes);
        }
        s.objects.insert(k, (meta, Bytes::from(body)));
        ready(Ok(()))
    }

    fn abort_upload<'a>(
        &'a self,
        _key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        self.count("abort_upload");
        self.state.lock().unwrap().uploads.remove(upload_id);
        ready(Ok(()))
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, SinkError>> {
        let size = self
            .state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(_, b)| b.len() as u64);
        ready(Ok(size))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        self.count("delete");
        self.state.lock().unwrap().objects.remove(key);
        ready(Ok(()))
    }

    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<String, SinkError>> {
        ready(Ok(format!("memory://{key}?expires={}", ttl.as_secs())))
    }
}
