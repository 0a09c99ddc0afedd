//! The decoding half of the pipeline, run on a blocking thread: bytes -> gzip (any
//! number of members, or none: plain ndjson is detected by content) -> lines ->
//! validation -> COPY-encoded batches sent to the writer through a small channel, so
//! decoding overlaps with Postgres and memory stays bounded by a few batches.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::validate::{validate_line, validate_line_fhir, Valid};
use crate::model::line_error::LineError;
use crate::model::loader_file::Checkpoint;
use crate::model::validation::{Enable, Validation};
use crate::resource_type::ResourceType;
use crate::storage::copy_in::{encode_row, Chunk, Row};
use crate::validation::{FoundRef, Validator};

/// How to cut the stream.
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    /// The file's type (from its name), or `None`: each line names its own.
    pub file_type: Option<ResourceType>,
    /// Lines already committed by an earlier run: read past them, do not emit them.
    pub skip_lines: u64,
    /// The input starts right after this checkpoint (the source sent the rest of a plain
    /// file from its `bytes` on): lines and bytes count on from it, nothing is skipped.
    pub start: Option<Checkpoint>,
    /// A longer line is an error (not an out-of-memory).
    pub max_line_bytes: usize,
    /// A batch is sent when it holds this many rows...
    pub batch_rows: usize,
    /// ...or this many encoded bytes.
    pub batch_bytes: usize,
    /// Validate only, encode nothing (strict mode's first pass).
    pub validate_only: bool,
    /// The FHIR checks (`validation`); off: only the line rules.
    pub validation: Validation,
    /// The types the file's owner may write (`None`: any; `"*"`: every data type): a
    /// line of another type is a line error, never a row. System types are never
    /// loaded, whoever asks.
    pub writes: Option<Vec<String>>,
    /// A gzip file may inflate to at most this many times the compressed bytes read so
    /// far (plus [`EXPANSION_FLOOR`]); past that the file ends in error (a gzip bomb).
    pub max_expansion: u64,
    /// At most this many bytes are read from the source, compressed or not (a body
    /// that never ends); past that the file ends in error.
    pub max_file_bytes: u64,
}

/// Inflated bytes always allowed, whatever the ratio (a tiny file of a few resources).
pub const EXPANSION_FLOOR: u64 = 8 << 20;

/// A limit the file went past (inflation, size): the file ends in error.
#[derive(Debug)]
struct OverLimit(String);
impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OverLimit {}

/// Counts the bytes read from the source, and stops past `cap` of them.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
    cap: u64,
}
impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.read.get() + n as u64;
        self.read.set(read);
        if read > self.cap {
            return Err(io::Error::other(OverLimit(format!(
                "the file is longer than {} bytes, the most SIPHON_MAX_FILE_BYTES allows \
                 ({read} read)",
                self.cap
            ))));
        }
        Ok(n)
    }
}

/// Stops the decompressed stream once it outgrows `ratio` times the compressed bytes.
struct Capped<R> {
    inner: R,
    compressed: std::rc::Rc<std::cell::Cell<u64>>,
    out: u64,
    ratio: u64,
}
impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let allowed = self
            .compressed
            .get()
            .saturating_mul(self.ratio)
            .saturating_add(EXPANSION_FLOOR);
        if self.out > allowed {
            return Err(io::Error::other(OverLimit(format!(
                "the gzip data inflates to more than {} times its compressed size ({} bytes \
                 from {} read); SIPHON_MAX_GZIP_RATIO allows {}",
                self.ratio,
                self.out,
                self.compressed.get(),
                self.ratio
            ))));
        }
        Ok(n)
    }
}

/// What the writer receives: rows to write, invalid lines to record, and where the
/// stream stands after them (the checkpoint once they are committed).
#[derive(Debug, Default)]
pub struct Batch {
    pub chunks: Vec<Chunk>,
    pub errors: Vec<LineError>,
    /// Lines that load although asynchronous validation found them invalid.
    pub findings: Vec<LineError>,
    /// The literal references of the rows, by line (`checks: refs|all`).
    pub refs: Vec<(u64, FoundRef)>,
    /// Number of the last line consumed (1-based; 0 = none).
    pub last_line: u64,
    /// Uncompressed bytes consumed up to and including `last_line`.
    pub bytes: u64,
    /// The file is plain ndjson (not gzip): `bytes` are the object's own.
    pub plain: bool,
    /// True for the last batch of the file.
    pub eof: bool,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.rows.len()).sum()
    }
}

/// Why decoding stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The gzip data is corrupt or truncated, or the file went past a limit: permanent.
    Permanent(String),
    /// Reading the source failed (network): worth a retry.
    Source(String),
}

/// Marks an error that came from the source rather than the decompressor.
#[derive(Debug)]
struct SourceFailed(String);
impl std::fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SourceFailed {}

struct TagSource<R>(R);
impl<R: Read> Read for TagSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::other(SourceFailed(e.to_string())))
    }
}

/// Sends one message; `false` when the writer has gone away (stop quietly).
pub type Sender = mpsc::Sender<Result<Batch, (Batch, DecodeError)>>;

/// Decodes `input` to the end, sending batches. Runs on a blocking thread.
pub fn decode<R: Read>(input: R, config: &DecodeConfig, tx: &Sender) {
    let (reader, gzip) = match open(input, config) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = tx.blocking_send(Err((Batch::default(), classify(e, 0))));
            return;
        }
    };
    let mut state = State::new(config, tx);
    state.plain = !gzip;
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut split = Split::default();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) => {
                let err = classify(e, state.line);
                state.finish(Some(err));
                return;
            }
        };
        if buf.is_empty() {
            if split.last(&mut state) {
                state.finish(None);
            }
            return;
        }
        let (used, ok) = split.feed(&mut state, buf, config.max_line_bytes);
        reader.consume(used);
        if !ok {
            return;
        }
    }
}

/// The decoded bytes of `input` (gunzipped when it starts as gzip, unless it resumes
/// mid-file), counted against the caps; and whether it was gzip.
fn open<'a, R: Read + 'a>(
    input: R,
    config: &DecodeConfig,
) -> io::Result<(Box<dyn Read + 'a>, bool)> {
    let compressed = std::rc::Rc::new(std::cell::Cell::new(
        config.start.map_or(0, |start| start.bytes),
    ));
    // Errors of the source are tagged (worth a retry); the cap's own is not.
    let counted = Counted {
        inner: TagSource(input),
        read: compressed.clone(),
        cap: config.max_file_bytes,
    };
    let mut raw = BufReader::with_capacity(64 * 1024, counted);
    // Read first either way, so that a source failing at once fails here.
    let head = raw.fill_buf()?;
    let gzip = config.start.is_none() && head.starts_with(&[0x1f, 0x8b]);
    if !gzip {
        return Ok((Box::new(raw), false));
    }
    let gunzipped = Capped {
        inner: flate2::bufread::MultiGzDecoder::new(raw),
        compressed,
        out: 0,
        ratio: config.max_expansion.max(1),
    };
    Ok((Box::new(gunzipped), true))
}

/// Cuts lines across buffer boundaries: the start of a line not ended yet, or that the
/// line has gone over the limit.
#[derive(Default)]
struct Split {
    pending: Vec<u8>,
    overlong: bool,
}

impl Split {
    /// Takes `buf` up to its first newline (or all of it when it has none), handing a
    /// line that ends there to `state`. The bytes used, and false when the writer has
    /// gone away.
    fn feed(&mut self, state: &mut State<'_>, buf: &[u8], max: usize) -> (usize, bool) {
        let Some(i) = memchr::memchr(b'\n', buf) else {
            let n = buf.len();
            if !self.overlong && self.pending.len() + n <= max {
                self.pending.extend_from_slice(buf);
            } else {
                self.overlong = true;
                state.overlong_bytes += n as u64;
                self.pending.clear();
            }
            return (n, true);
        };
        if self.pending.is_empty() && !self.overlong {
            return (i + 1, state.line(&buf[..i], i > max, i as u64 + 1));
        }
        if !self.overlong && self.pending.len() + i <= max {
            self.pending.extend_from_slice(&buf[..i]);
        } else {
            self.overlong = true;
        }
        let n = self.pending.len() as u64 + 1;
        let ok = state.line(&self.pending, self.overlong, n);
        self.pending.clear();
        self.overlong = false;
        (i + 1, ok)
    }

    /// The last line, when the input does not end with a newline. False when the writer
    /// has gone away.
    fn last(&mut self, state: &mut State<'_>) -> bool {
        if self.pending.is_empty() && !self.overlong {
            return true;
        }
        let line = std::mem::take(&mut self.pending);
        state.line(&line, self.overlong, line.len() as u64)
    }
}

fn classify(e: io::Error, after_line: u64) -> DecodeError {
    if let Some(big) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OverLimit>())
    {
        return DecodeError::Permanent(format!("{big} (after line {after_line})"));
    }
    if let Some(src) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<SourceFailed>())
    {
        return DecodeError::Source(format!(
            "reading the object failed after line {after_line}: {src}"
        ));
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            DecodeError::Permanent(format!("gzip stream truncated after line {after_line}"))
        }
        _ => DecodeError::Permanent(format!("gzip data corrupt after line {after_line}: {e}")),
    }
}

/// Whether a line of type `ty` may be written by a load allowed `writes`.
fn may_write(writes: &Option<Vec<String>>, ty: &str) -> Result<(), String> {
    if crate::resource_type::is_system(ty) {
        return Err(format!(
            "resourceType {ty:?} is one of siphon's own types; they are never loaded from files"
        ));
    }
    match writes {
        None => Ok(()),
        Some(w) if w.iter().any(|t| t == "*" || t == ty) => Ok(()),
        Some(_) => Err(format!(
            "the client that started this load may not write {ty} (it needs the scope system/{ty}.cu)"
        )),
    }
}

/// A checked line: valid, with the validator's findings (if any) and references.
type Checked<'t> = (Valid<'t>, Option<String>, Vec<FoundRef>);

struct State<'a> {
    config: &'a DecodeConfig,
    tx: &'a Sender,
    line: u64,
    bytes: u64,
    plain: bool,
    overlong_bytes: u64,
    batch: Batch,
    chunk_index: HashMap<String, usize>,
    batch_rows: usize,
    batch_bytes: usize,
    validator: Option<Validator>,
}

impl<'a> State<'a> {
    fn new(config: &'a DecodeConfig, tx: &'a Sender) -> Self {
        State {
            config,
            tx,
            line: config.start.map_or(0, |start| start.line),
            bytes: config.start.map_or(0, |start| start.bytes),
            plain: false,
            overlong_bytes: 0,
            batch: Batch::default(),
            chunk_index: HashMap::new(),
            batch_rows: 0,
            batch_bytes: 0,
            validator: (!config.validation.is_off())
                .then(|| Validator::new(config.validation.checks)),
        }
    }

    /// Handles one line; `consumed` counts its bytes with the newline. Returns false
    /// when the writer is gone.
    fn line(&mut self, raw: &[u8], overlong: bool, consumed: u64) -> bool {
        self.line += 1;
        self.bytes += consumed + std::mem::take(&mut self.overlong_bytes);
        if self.line <= self.config.skip_lines {
            return true;
        }
        self.batch.last_line = self.line;
        self.batch.bytes = self.bytes;
        if overlong {
            self.batch.errors.push(LineError::new(
                self.line,
                format!(
                    "line is longer than the limit of {} bytes",
                    self.config.max_line_bytes
                ),
                raw,
            ));
            return self.maybe_send();
        }
        let mut text = raw;
        if let Some(rest) = text.strip_prefix(b"\xEF\xBB\xBF") {
            text = rest;
        }
        if let Some(rest) = text.strip_suffix(b"\r") {
            text = rest;
        }
        if text.iter().all(|b| b.is_ascii_whitespace()) {
            return true;
        }
        match self.check(text) {
            Err(reason) => self
                .batch
                .errors
                .push(LineError::new(self.line, reason, text)),
            Ok((_, Some(findings), _)) if self.config.validation.enable == Enable::On => self
                .batch
                .errors
                .push(LineError::new(self.line, findings, text)),
            Ok((valid, findings, refs)) if !self.config.validate_only => {
                if let Some(findings) = findings {
                    let finding = LineError::finding(self.line, findings, text);
                    self.batch.findings.push(finding);
                }
                self.batch
                    .refs
                    .extend(refs.into_iter().map(|r| (self.line, r)));
                self.add_row(valid, text);
            }
            Ok(_) => {}
        }
        self.maybe_send()
    }

    /// A line's checks: valid (with the FHIR findings and references when validating),
    /// of a type the load may write; or why not.
    fn check<'t>(&self, text: &'t [u8]) -> Result<Checked<'t>, String> {
        let expected = self.config.file_type.as_ref();
        let checked = match &self.validator {
            None => validate_line(text, expected).map(|valid| (valid, None, Vec::new()))?,
            Some(v) => {
                validate_line_fhir(text, expected, v).map(|c| (c.valid, c.findings, c.refs))?
            }
        };
        may_write(&self.config.writes, &checked.0.resource_type)?;
        Ok(checked)
    }

    /// The row of a valid line, into the chunk of its type.
    fn add_row(&mut self, valid: Valid<'_>, text: &[u8]) {
        let idx = self.chunk_of(&valid.resource_type);
        let chunk = &mut self.batch.chunks[idx];
        let start = chunk.buf.len();
        encode_row(
            &mut chunk.buf,
            &valid.id,
            chunk.resource_type.as_str(),
            text,
        );
        self.batch_bytes += chunk.buf.len() - start;
        chunk.rows.push(Row {
            line: self.line,
            start,
            end: chunk.buf.len(),
            id: valid.id.into_owned(),
        });
        self.batch_rows += 1;
    }

    /// The batch's chunk of `resource_type`, started when it has none.
    fn chunk_of(&mut self, resource_type: &str) -> usize {
        if let Some(i) = self.chunk_index.get(resource_type) {
            return *i;
        }
        let ty = match &self.config.file_type {
            Some(t) => t.clone(),
            // validated before: a valid name
            None => ResourceType::parse(resource_type).expect("validated type name"),
        };
        self.batch.chunks.push(Chunk {
            resource_type: ty,
            // One chunk per batch is the common case (a typed file): size it for the
            // whole batch so it never doubles on growth; untyped files start small.
            buf: BytesMut::with_capacity(if self.config.file_type.is_some() {
                self.config.batch_bytes + (64 << 10)
            } else {
                self.config.batch_bytes.min(1 << 20)
            }),
            rows: Vec::new(),
        });
        let idx = self.batch.chunks.len() - 1;
        self.chunk_index.insert(resource_type.to_string(), idx);
        idx
    }

    fn maybe_send(&mut self) -> bool {
        if self.batch_rows >= self.config.batch_rows
            || self.batch_bytes >= self.config.batch_bytes
            || self.batch.errors.len() >= self.config.batch_rows
        {
            let batch = self.take();
            return self.tx.blocking_send(Ok(batch)).is_ok();
        }
        true
    }

    fn take(&mut self) -> Batch {
        self.chunk_index.clear();
        self.batch_rows = 0;
        self.batch_bytes = 0;
        let mut batch = std::mem::take(&mut self.batch);
        // Everything read so far is accounted for by this batch, blank lines included;
        // never move a checkpoint backwards.
        batch.last_line = self.line.max(self.config.skip_lines);
        batch.bytes = self.bytes;
        batch.plain = self.plain;
        batch
    }

    fn finish(mut self, error: Option<DecodeError>) {
        let mut batch = self.take();
        match error {
            None => {
                batch.eof = true;
                let _ = self.tx.blocking_send(Ok(batch));
            }
            Some(e) => {
                let _ = self.tx.blocking_send(Err((batch, e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn patient() -> Option<ResourceType> {
        Some(ResourceType::parse("Patient").unwrap())
    }

    fn config(file_type: Option<ResourceType>) -> DecodeConfig {
        DecodeConfig {
            file_type,
            skip_lines: 0,
            start: None,
            max_line_bytes: 1024,
            batch_rows: 2,
            batch_bytes: 1 << 20,
            validate_only: false,
            validation: Validation::default(),
            writes: None,
            max_expansion: 100,
            max_file_bytes: u64::MAX,
        }
    }

    /// Runs the decoder on `bytes` and collects every message it sends.
    fn run(bytes: Vec<u8>, config: DecodeConfig) -> Vec<Result<Batch, (Batch, DecodeError)>> {
        let (tx, mut rx) = mpsc::channel(1);
        let worker = std::thread::spawn(move || decode(&bytes[..], &config, &tx));
        let mut out = Vec::new();
        while let Some(m) = rx.blocking_recv() {
            out.push(m);
        }
        worker.join().unwrap();
        out
    }

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    fn ids(batches: &[Result<Batch, (Batch, DecodeError)>]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|m| match m {
                Ok(b) | Err((b, _)) => b
                    .chunks
                    .iter()
                    .flat_map(|c| c.rows.iter().map(|r| r.id.clone()))
                    .collect::<Vec<_>>(),
            })
            .collect()
    }

    const P: &str = r#"{"resourceType":"Patient","id":"#;

    #[test]
    fn lines_batches_and_checkpoints() {
        let text =
            format!("{P}\"a\"}}\r\n\n\u{feff}{P}\"b\"}}\n  \n{P}\"c\"}}\nnot json\n{P}\"d\"}}");
        let out = run(text.clone().into_bytes(), config(patient()));
        assert_eq!(ids(&out), vec!["a", "b", "c", "d"]);
        let batches: Vec<&Batch> = out.iter().map(|m| m.as_ref().unwrap()).collect();
        // Two rows per batch; the last batch is marked eof and accounts for every line.
        assert!(batches.last().unwrap().eof);
        assert_eq!(batches.last().unwrap().last_line, 7);
        assert_eq!(batches.last().unwrap().bytes, text.len() as u64);
        let errors: Vec<&LineError> = batches.iter().flat_map(|b| &b.errors).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 6);
        assert!(errors[0].reason.contains("invalid JSON"));
        // Checkpoints never go backwards.
        let lines: Vec<u64> = batches.iter().map(|b| b.last_line).collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }

    #[test]
    fn gzip_members_and_resuming_after_committed_lines() {
        let mut bytes = gz(format!("{P}\"a\"}}\n{P}\"b\"}}\n").as_bytes());
        bytes.extend(gz(format!("{P}\"c\"}}\n").as_bytes()));
        assert_eq!(
            ids(&run(bytes.clone(), config(patient()))),
            vec!["a", "b", "c"]
        );
        let resumed = DecodeConfig {
            skip_lines: 2,
            ..config(patient())
        };
        assert_eq!(ids(&run(bytes, resumed)), vec!["c"]);
    }

    #[test]
    fn a_plain_file_read_from_its_checkpoint_counts_on_from_it() {
        let text = format!("{P}\"a\"}}\n\n{P}\"b\"}}\n{P}\"c\"}}\nnot json\n{P}\"d\"}}\n");
        let whole = run(text.clone().into_bytes(), config(patient()));
        let first = whole[0].as_ref().unwrap();
        assert!(first.plain);
        assert_eq!(first.last_line, 3);
        assert_eq!(ids(&whole[..1]), vec!["a", "b"]);
        // The rest of the object from the first batch's bytes on, as a ranged read sends.
        let start = Checkpoint {
            line: first.last_line,
            bytes: first.bytes,
            plain: true,
        };
        let rest = text.as_bytes()[first.bytes as usize..].to_vec();
        let resumed = DecodeConfig {
            skip_lines: start.line,
            start: Some(start),
            ..config(patient())
        };
        let out = run(rest, resumed);
        assert_eq!(ids(&out), vec!["c", "d"]);
        let batches: Vec<&Batch> = out.iter().map(|m| m.as_ref().unwrap()).collect();
        let errors: Vec<u64> = batches
            .iter()
            .flat_map(|b| &b.errors)
            .map(|e| e.line)
            .collect();
        assert_eq!(errors, vec![5], "lines are numbered as in the whole file");
        let last = batches.last().unwrap();
        assert!(last.eof && last.plain);
        assert_eq!((last.last_line, last.bytes), (6, text.len() as u64));
        // A gzip file is never marked plain.
        let zipped = run(gz(text.as_bytes()), config(patient()));
        assert!(zipped.iter().all(|m| !m.as_ref().unwrap().plain));
    }

    #[test]
    fn lines_of_types_the_owner_may_not_write_are_line_errors() {
        let text = "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Observation\",\"id\":\"b\"}\n{\"resourceType\":\"Client\",\"id\":\"c\"}\n{\"resourceType\":\"CLIENT\",\"id\":\"d\"}\n";
        let only_patients = DecodeConfig {
            batch_rows: 100,
            writes: Some(vec!["Patient".into()]),
            ..config(None)
        };
        let out = run(text.as_bytes().to_vec(), only_patients);
        let batch = out.into_iter().next().unwrap().unwrap();
        let ids: Vec<&str> = batch
            .chunks
            .iter()
            .flat_map(|c| c.rows.iter().map(|r| r.id.as_str()))
            .collect();
        assert_eq!(ids, vec!["a"]);
        let reasons: Vec<(u64, String)> = batch
            .errors
            .iter()
            .map(|e| (e.line, e.reason.clone()))
            .collect();
        assert!(
            reasons[0].1.contains("may not write Observation"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].1.contains("never loaded") && reasons[2].1.contains("never loaded"),
            "{reasons:?}"
        );
        // The admin (no list) writes every data type, still never a system type.
        let admin = DecodeConfig {
            batch_rows: 100,
            ..config(None)
        };
        let batch = run(text.as_bytes().to_vec(), admin)
            .into_iter()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(batch.rows(), 2);
        assert_eq!(batch.errors.len(), 2);
    }

    #[test]
    fn a_file_longer_than_the_cap_ends_in_error_naming_the_limit() {
        let line = "{\"resourceType\":\"Patient\",\"id\":\"p\"}\n";
        let text = line.repeat(100).into_bytes();
        let exact = DecodeConfig {
            max_file_bytes: text.len() as u64,
            ..config(patient())
        };
        let out = run(text.clone(), exact);
        assert!(out.iter().all(|m| m.is_ok()), "{out:?}");
        assert_eq!(
            out.iter()
                .map(|m| m.as_ref().unwrap().rows())
                .sum::<usize>(),
            100
        );
        // The same bytes gzipped are under the cap; the cap counts what is read.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let short = DecodeConfig {
            max_file_bytes: text.len() as u64 - 1,
            ..config(patient())
        };
        assert!(run(gz.finish().unwrap(), short.clone())
            .last()
            .unwrap()
            .is_ok());
        let out = run(text, short);
        let Err((_, DecodeError::Permanent(m))) = out.last().unwrap() else {
            panic!("{out:?}")
        };
        assert!(
            m.starts_with(
                "the file is longer than 3599 bytes, the most SIPHON_MAX_FILE_BYTES allows"
            ),
            "{m}"
        );
    }

    #[test]
    fn a_gzip_bomb_ends_the_file_past_the_ratio() {
        // 24 MiB of blank lines compress to about 24 KiB: a thousand times, well past
        // 100 times plus the 8 MiB every file may inflate to whatever its size.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'\n'; 24 << 20]).unwrap();
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 40_000, "{}", bomb.len());
        assert!(
            (24 << 20) > EXPANSION_FLOOR as usize + 100 * bomb.len(),
            "not past the bound"
        );
        let out = run(bomb.clone(), config(patient()));
        let Err((_, DecodeError::Permanent(m))) = out.last().unwrap() else {
            panic!("{out:?}")
        };
        assert!(m.contains("inflates to more than 100 times"), "{m}");
        // A generous ratio lets the same file through.
        let lenient = DecodeConfig {
            max_expansion: 10_000,
            ..config(patient())
        };
        assert!(run(bomb, lenient).last().unwrap().is_ok());
    }

    #[test]
    fn truncated_and_corrupt_gzip_say_where() {
        let whole = gz(format!("{P}\"a\"}}\n{P}\"b\"}}\n").as_bytes());
        let out = run(whole[..whole.len() - 6].to_vec(), config(patient()));
        let Err((_, DecodeError::Permanent(m))) = out.last().unwrap() else {
            panic!("{out:?}")
        };
        assert!(m.contains("truncated"), "{m}");
        let mut corrupt = whole.clone();
        corrupt[12] ^= 0xff;
        let out = run(corrupt, config(patient()));
        assert!(
            matches!(out.last().unwrap(), Err((_, DecodeError::Permanent(_)))),
            "{out:?}"
        );
    }

    #[test]
    fn overlong_lines_and_wrong_types_are_line_errors() {
        let long = format!("{P}\"a\",\"x\":\"{}\"}}", "y".repeat(2000));
        let text =
            format!("{long}\n{{\"resourceType\":\"Observation\",\"id\":\"o\"}}\n{P}\"b\"}}\n");
        let out = run(text.into_bytes(), config(patient()));
        assert_eq!(ids(&out), vec!["b"]);
        let errors: Vec<LineError> = out.into_iter().flat_map(|m| m.unwrap().errors).collect();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].reason.contains("longer than the limit"),
            "{errors:?}"
        );
        assert!(errors[0].excerpt.len() <= 200);
        assert!(errors[1].reason.contains("does not match the file's type"));
    }

    #[test]
    fn fhir_validation_on_refuses_and_async_flags_invalid_lines() {
        use crate::model::validation::{Checks, Enable};
        let text = format!(
            "{P}\"a\",\"gender\":\"male\"}}\n{P}\"b\",\"birthDate\":\"soon\"}}\n\
             {P}\"c\",\"generalPractitioner\":[{{\"reference\":\"Practitioner/dr\"}}]}}\n"
        );
        let with = |enable, checks| DecodeConfig {
            batch_rows: 100,
            validation: Validation { enable, checks },
            ..config(patient())
        };
        let batch = |out: Vec<Result<Batch, (Batch, DecodeError)>>| {
            out.into_iter().next().unwrap().unwrap()
        };
        let on = batch(run(
            text.clone().into_bytes(),
            with(Enable::On, Checks::Struct),
        ));
        assert_eq!(on.rows(), 2);
        assert_eq!(on.errors.len(), 1);
        assert_eq!((on.errors[0].line, on.errors[0].loaded), (2, false));
        assert_eq!(
            on.errors[0].reason,
            r#"Patient.birthDate: "soon" is not a valid date"#
        );
        assert!(on.findings.is_empty() && on.refs.is_empty());
        let later = batch(run(
            text.clone().into_bytes(),
            with(Enable::Async, Checks::All),
        ));
        assert_eq!(later.rows(), 3, "async loads every line");
        assert!(later.errors.is_empty());
        assert_eq!(
            (later.findings[0].line, later.findings[0].loaded),
            (2, true)
        );
        assert_eq!(later.refs.len(), 1);
        assert_eq!(later.refs[0].0, 3);
        assert_eq!(later.refs[0].1.path, "Patient.generalPractitioner[0]");
        let off = batch(run(text.into_bytes(), with(Enable::Off, Checks::All)));
        assert_eq!((off.rows(), off.errors.len(), off.refs.len()), (3, 0, 0));
    }

    #[test]
    fn untyped_files_split_rows_by_type_and_validate_only_encodes_nothing() {
        let text = format!("{P}\"a\"}}\n{{\"resourceType\":\"Observation\",\"id\":\"o\"}}\n");
        let out = run(text.clone().into_bytes(), config(None));
        let batch = out.into_iter().next().unwrap().unwrap();
        let types: Vec<&str> = batch
            .chunks
            .iter()
            .map(|c| c.resource_type.as_str())
            .collect();
        assert_eq!(types, vec!["Patient", "Observation"]);
        let only = DecodeConfig {
            validate_only: true,
            ..config(None)
        };
        let out = run(text.into_bytes(), only);
        assert!(ids(&out).is_empty());
    }
}
