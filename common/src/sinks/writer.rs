//! One file written as a resumable multipart upload.
//!
//! Lines are appended to a part buffer; a full buffer becomes the next part of the
//! object's multipart upload. After each part the caller commits [`FileState`] (upload
//! id, parts with their ETags, lines and bytes so far) together with its own cursor, so
//! another process can continue the file with [`FileWriter::resume`]: the lines after
//! the cursor are read again and the next part number is the same one, which S3 lets
//! be uploaded again (the last upload of a number wins). A file that ends within its
//! first part is stored with one `PUT`.
//!
//! With gzip, every part is one complete gzip member: the concatenation is a valid
//! gzip stream (RFC 1952), and no compressor state has to survive a hand-over.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{ObjectMeta, ObjectSink, SinkError};
pub use crate::model::export::{FileState, WrittenFile};

/// S3 needs every part but the last to have at least 5 MiB.
pub const MIN_PART_BYTES: usize = 5 << 20;

/// How a file is written.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub meta: ObjectMeta,
    /// Every part a gzip member.
    pub gzip: bool,
    /// Bytes (as stored) at which the buffer becomes a part (at least 5 MiB in S3).
    pub part_bytes: usize,
}

/// Writes one object; see the module docs.
pub struct FileWriter {
    sink: Arc<dyn ObjectSink>,
    options: WriteOptions,
    state: FileState,
    /// The part being filled: raw bytes, or the gzip member being compressed.
    raw: BytesMut,
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
    pending_count: u64,
    pending_bytes: u64,
}

impl FileWriter {
    /// A new file at `key`.
    pub fn new(sink: Arc<dyn ObjectSink>, key: &str, options: WriteOptions) -> Self {
        Self::resume(
            sink,
            FileState {
                key: key.to_string(),
                ..FileState::default()
            },
            options,
        )
    }

    /// Continues a file from a committed state (its next line is the first after the
    /// caller's committed cursor).
    pub fn resume(sink: Arc<dyn ObjectSink>, state: FileState, options: WriteOptions) -> Self {
        FileWriter {
            sink,
            state,
            raw: BytesMut::with_capacity(if options.gzip {
                0
            } else {
                options.part_bytes + (64 << 10)
            }),
            gz: None,
            pending_count: 0,
            pending_bytes: 0,
            options,
        }
    }

    /// The committed state (after the last uploaded part).
    pub fn state(&self) -> &FileState {
        &self.state
    }

    /// Lines written so far, pending ones included.
    pub fn count(&self) -> u64 {
        self.state.count + self.pending_count
    }

    /// Uncompressed bytes written so far, pending ones included.
    pub fn bytes(&self) -> u64 {
        self.state.bytes + self.pending_bytes
    }

    /// Appends one line (a newline is added).
    pub fn push(&mut self, line: &[u8]) {
        if self.options.gzip {
            let gz = self.gz.get_or_insert_with(|| {
                flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.options.part_bytes + (64 << 10)),
                    flate2::Compression::fast(),
                )
            });
            // Writing into a Vec cannot fail.
            gz.write_all(line).expect("in-memory write");
            gz.write_all(b"\n").expect("in-memory write");
        } else {
            self.raw.extend_from_slice(line);
            self.raw.extend_from_slice(b"\n");
        }
        self.pending_count += 1;
        self.pending_bytes += line.len() as u64 + 1;
    }

    /// Appends a line that is not a row (a CSV header): it is stored but not counted.
    pub fn push_uncounted(&mut self, line: &[u8]) {
        self.push(line);
        self.pending_count -= 1;
    }

    /// True when the pending bytes make a part.
    pub fn part_full(&self) -> bool {
        let stored = match &self.gz {
            Some(gz) => gz.get_ref().len(),
            None => self.raw.len(),
        };
        stored >= self.options.part_bytes
    }

    /// The pending bytes as stored (a finished gzip member), leaving the buffer empty.
    fn take_pending(&mut self) -> Bytes {
        match self.gz.take() {
            Some(gz) => Bytes::from(gz.finish().expect("in-memory write")),
            None => self.raw.split().freeze(),
        }
    }

    /// Uploads the pending lines as the next part. Afterwards [`Self::state`] is what the
    /// caller commits with its cursor.
    pub async fn flush_part(&mut self) -> Result<(), SinkError> {
        let empty = match &self.gz {
            Some(_) => false,
            None => self.raw.is_empty(),
        };
        if empty {
            return Ok(());
        }
        let upload_id = match &self.state.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .sink
                    .start_upload(&self.state.key, &self.options.meta)
                    .await?;
                self.state.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.state.parts.len() as i32 + 1;
        let bytes = self.take_pending();
        let part = self
            .sink
            .upload_part(&self.state.key, &upload_id, number, bytes)
            .await?;
        self.state.parts.push(part);
        self.state.count += std::mem::take(&mut self.pending_count);
        self.state.bytes += std::mem::take(&mut self.pending_bytes);
        Ok(())
    }

    /// Stores what is pending and completes the object.
    pub async fn finish(mut self) -> Result<WrittenFile, SinkError> {
        if self.state.upload_id.is_none() {
            // The whole file fits in one part: one PUT, no upload to leave behind.
            let bytes = self.take_pending();
            self.sink
                .put(&self.state.key, &self.options.meta, bytes)
                .await?;
        } else {
            let upload_id = self.state.upload_id.clone().unwrap_or_default();
            let mut result = self.flush_part().await;
            if result.is_ok() {
                result = self
                    .sink
                    .complete_upload(&self.state.key, &upload_id, &self.state.parts)
                    .await;
            }
            match result {
                Ok(()) => {}
                // Completed by a process that died before it could commit that: the
                // object exists and the upload is gone.
                Err(SinkError::NoSuchUpload(_))
                    if self.sink.size(&self.state.key).await?.is_some() =>
                {
                    self.state.count += std::mem::take(&mut self.pending_count);
                    self.state.bytes += std::mem::take(&mut self.pending_bytes);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(WrittenFile {
            key: self.state.key.clone(),
            count: self.state.count + self.pending_count,
            bytes: self.state.bytes + self.pending_bytes,
        })
    }

    /// Abandons the file: its upload and parts are removed.
    pub async fn abort(self) -> Result<(), SinkError> {
        if let Some(id) = &self.state.upload_id {
            self.sink.abort_upload(&self.state.key, id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::sinks::memory::MemorySink;

    fn options(gzip: bool, part_bytes: usize) -> WriteOptions {
        WriteOptions {
            meta: ObjectMeta {
                content_type: "application/fhir+ndjson".into(),
                content_encoding: gzip.then(|| "gzip".to_string()),
            },
            gzip,
            part_bytes,
        }
    }

    fn line(n: u64) -> Vec<u8> {
        format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p-{n}\",\"pad\":\"{}\"}}",
            "x".repeat(40)
        )
        .into_bytes()
    }

    fn expected(range: std::ops::Range<u64>) -> Vec<u8> {
        range
            .flat_map(|n| [line(n), b"\n".to_vec()].concat())
            .collect()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_small_file_is_one_put_and_a_big_one_a_multipart_upload() {
        let sink = Arc::new(MemorySink::with_small_parts());
        let mut w = FileWriter::new(sink.clone(), "small.ndjson", options(false, 1 << 20));
        for n in 0..10 {
            w.push(&line(n));
        }
        let f = w.finish().await.unwrap();
        assert_eq!((f.count, f.bytes), (10, expected(0..10).len() as u64));
        assert_eq!(
            sink.objects()["small.ndjson"].as_ref(),
            &expected(0..10)[..]
        );
        assert_eq!((sink.calls("put"), sink.calls("start_upload")), (1, 0));

        let mut w = FileWriter::new(sink.clone(), "big.ndjson", options(false, 1000));
        for n in 0..100 {
            w.push(&line(n));
            if w.part_full() {
                w.flush_part().await.unwrap();
            }
        }
        let f = w.finish().await.unwrap();
        assert_eq!(f.count, 100);
        assert_eq!(sink.objects()["big.ndjson"].as_ref(), &expected(0..100)[..]);
        assert!(sink.calls("upload_part") > 5);
        assert_eq!(sink.open_uploads(), 0);
    }

    #[tokio::test]
    async fn a_resumed_file_redoes_only_what_was_not_committed() {
        // gzip: parts fill by compressed size, which grows in deflate's blocks.
        let sink = Arc::new(MemorySink::with_small_parts());
        let mut w = FileWriter::new(sink.clone(), "f.ndjson.gz", options(true, 2000));
        let mut committed = (FileState::default(), 0u64);
        for n in 0..3000 {
            w.push(&line(n));
            if w.part_full() {
                w.flush_part().await.unwrap();
                committed = (w.state().clone(), n + 1); // state + cursor, as a checkpoint
            }
            if n == 1500 {
                break; // the process dies: pending lines (and anything after) are lost
            }
        }
        drop(w);
        let (state, cursor) = committed;
        assert!(cursor > 0 && cursor <= 1500, "{cursor}");
        let mut w = FileWriter::resume(sink.clone(), state, options(true, 2000));
        for n in cursor..3000 {
            w.push(&line(n));
            if w.part_full() {
                w.flush_part().await.unwrap();
            }
        }
        let f = w.finish().await.unwrap();
        assert_eq!(f.count, 3000);
        let stored = &sink.objects()["f.ndjson.gz"];
        assert_eq!(gunzip(stored), expected(0..3000));
        assert_eq!(
            sink.meta("f.ndjson.gz")
                .unwrap()
                .content_encoding
                .as_deref(),
            Some("gzip")
        );
    }

    #[tokio::test]
    async fn a_completion_that_was_not_committed_is_not_done_twice() {
        let sink = Arc::new(MemorySink::with_small_parts());
        let mut w = FileWriter::new(sink.clone(), "c.ndjson", options(false, 400));
        for n in 0..20 {
            w.push(&line(n));
            if w.part_full() {
                w.flush_part().await.unwrap();
            }
        }
        let state = w.state().clone();
        let cursor = state.count;
        w.finish().await.unwrap();
        // Died after completing, before committing: the next worker redoes the tail.
        let mut again = FileWriter::resume(sink.clone(), state, options(false, 400));
        for n in cursor..20 {
            again.push(&line(n));
        }
        let f = again.finish().await.unwrap();
        assert_eq!(f.count, 20);
        assert_eq!(sink.objects()["c.ndjson"].as_ref(), &expected(0..20)[..]);
    }

    #[tokio::test]
    async fn store_failures_surface_and_abort_leaves_nothing() {
        let sink = Arc::new(MemorySink::with_small_parts());
        *sink.fail_parts_after.lock().unwrap() = Some(1);
        let mut w = FileWriter::new(sink.clone(), "a.ndjson", options(false, 100));
        w.push(&line(0));
        w.flush_part().await.unwrap();
        w.push(&line(1));
        let e = w.flush_part().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(w.state().parts.len(), 1);
        w.abort().await.unwrap();
        assert_eq!(sink.open_uploads(), 0);
        assert!(sink.objects().is_empty());
        // S3's 5 MiB minimum is enforced by the store (here: a MemorySink without the
        // small-parts allowance), so real writers use parts of at least MIN_PART_BYTES.
        let strict = Arc::new(MemorySink::new());
        let mut w = FileWriter::new(strict.clone(), "s.ndjson", options(false, 100));
        for n in 0..4 {
            w.push(&line(n));
            w.flush_part().await.unwrap();
        }
        assert!(w.finish().await.is_err());
    }
}
