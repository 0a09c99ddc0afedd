//! Dumps (SPEC section 5): a resource table or a read-only SQL query, streamed straight
//! from `COPY ... TO STDOUT` so memory stays flat whatever the size.
//!
//! `$dump` and `ndjson` use binary COPY: every value arrives as the server's exact text
//! (text-format COPY would double backslashes inside JSON), framed by lengths that
//! [`BinaryRows`] strips as the bytes stream through.

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::resource_type::ResourceType;
use crate::storage::Db;

/// A stream of output bytes; an `Err` item means the dump is incomplete and the
/// response must be cut (never ended cleanly).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Output formats of `$dump-sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlFormat {
    /// COPY text format: tab-separated, `\t` `\n` `\\` escaped (default).
    Tsv,
    /// RFC 4180 CSV.
    Csv,
    /// One JSON object per row.
    Ndjson,
}

impl SqlFormat {
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s.unwrap_or("tsv") {
            "tsv" => Ok(SqlFormat::Tsv),
            "csv" => Ok(SqlFormat::Csv),
            "ndjson" => Ok(SqlFormat::Ndjson),
            other => Err(Error::BadRequest(format!(
                "unknown format {other:?}: use tsv, csv or ndjson"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            SqlFormat::Tsv => "text/tab-separated-values",
            SqlFormat::Csv => "text/csv",
            SqlFormat::Ndjson => "application/ndjson",
        }
    }
}

/// Turns a binary COPY stream of one-column rows into newline-terminated values
/// (the leading version byte of jsonb is dropped).
struct BinaryRows {
    buf: BytesMut,
    header_done: bool,
    jsonb: bool,
}

impl BinaryRows {
    /// Appends complete rows from `buf` to `out`; partial rows wait for more bytes.
    fn drain(&mut self, out: &mut BytesMut) -> Result<bool> {
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(false);
            }
            let ext = u32::from_be_bytes(self.buf[15..19].try_into().unwrap()) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(false);
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        loop {
            if self.buf.len() < 2 {
                return Ok(false);
            }
            let fields = i16::from_be_bytes([self.buf[0], self.buf[1]]);
            if fields == -1 {
                return Ok(true);
            }
            if fields != 1 || self.buf.len() < 6 {
                if fields != 1 {
                    return Err(Error::Internal(format!(
                        "unexpected COPY row with {fields} fields"
                    )));
                }
                return Ok(false);
            }
            let len = i32::from_be_bytes(self.buf[2..6].try_into().unwrap());
            if len < 0 {
                self.buf.advance(6);
                out.extend_from_slice(b"null\n");
                continue;
            }
            let len = len as usize;
            if self.buf.len() < 6 + len {
                return Ok(false);
            }
            let skip = if self.jsonb { 7 } else { 6 };
            out.extend_from_slice(&self.buf[skip..6 + len]);
            out.extend_from_slice(b"\n");
            self.buf.advance(6 + len);
        }
    }
}

fn binary_rows(
    copy: impl futures::Stream<Item = std::result::Result<Bytes, tokio_postgres::Error>>
        + Send
        + 'static,
    jsonb: bool,
) -> ByteStream {
    let mut parser = BinaryRows {
        buf: BytesMut::new(),
        header_done: false,
        jsonb,
    };
    copy.map(move |chunk| {
        let chunk = chunk.map_err(Error::from)?;
        parser.buf.extend_from_slice(&chunk);
        let mut out = BytesMut::with_capacity(chunk.len());
        parser.drain(&mut out)?;
        Ok(out.freeze())
    })
    .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    .boxed()
}

/// Streams every resource of `ty` as ndjson (with `id` and `resourceType` filled in),
/// optionally only rows changed after `since`. Unknown types are `NotFound`.
pub async fn dump_type(
    db: &Db,
    ty: &ResourceType,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<ByteStream> {
    // Taken out of the pool: a dump cut half-way leaves the connection mid-COPY, so it
    // is closed with the stream rather than handed to the next request.
    let client = deadpool_postgres::Object::take(db.client().await?);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&ty.table_sql()])
        .await?
        .get(0);
    if !exists {
        return Err(Error::NotFound(format!("no resources of type {ty}")));
    }
    // COPY takes no bind parameters: the instant is a parsed DateTime, printed by us.
    let filter = since
        .map(|t| format!(" WHERE ts > '{}'::timestamptz", t.to_rfc3339()))
        .unwrap_or_default();
    let sql = format!(
        "COPY (SELECT resource || jsonb_build_object('resourceType', resource_type, 'id', id) FROM {}{filter}) TO STDOUT (FORMAT binary)",
        ty.table_sql()
    );
    let copy = client.copy_out(&sql).await?;
    // Keep the pooled connection alive as long as the stream.
    let stream = binary_rows(copy, true);
    first_then_rest(
        futures::stream::unfold((stream, Some(client)), |(mut s, c)| async move {
            s.next().await.map(|item| (item, (s, c)))
        })
        .boxed(),
    )
    .await
}

/// Functions refused in `$dump-sql` whatever the role may do: they read files, sleep the
/// connection, reach other servers, or change settings (which could undo the role).
const REFUSED: &[&str] = &[
    "set_config",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "dblink",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "current_setting",
];

/// Checks a `$dump-sql` query before it reaches Postgres: one read statement.
pub fn check_query(query: &str) -> Result<()> {
    let lower = query.to_ascii_lowercase();
    let first = lower
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    if !matches!(first, "select" | "with" | "values" | "table") {
        return Err(Error::BadRequest(
            "only one read query (SELECT, WITH, VALUES, TABLE) is allowed".into(),
        ));
    }
    if let Some(name) = REFUSED.iter().find(|f| lower.contains(*f)) {
        return Err(Error::Forbidden(format!(
            "{name} is not allowed in $dump-sql"
        )));
    }
    Ok(())
}

/// Runs a read-only query and streams its rows. The query runs in a READ ONLY
/// transaction as role `siphon_reader` (SELECT on resource tables only) with a
/// statement timeout; it must be a single statement.
pub async fn dump_sql(
    db: &Db,
    query: &str,
    format: SqlFormat,
    timeout_ms: u64,
) -> Result<ByteStream> {
    check_query(query)?;
    // Taken out of the pool: its transaction runs as siphon_reader and must never be
    // reused, even if the client goes away mid-stream.
    let client = deadpool_postgres::Object::take(db.client().await?);
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL ROLE siphon_reader; SET LOCAL statement_timeout = {timeout_ms}"
        ))
        .await
        .map_err(|e| {
            let _ = &e;
            Error::Internal(format!("cannot start the read-only session (is role siphon_reader granted?): {}", crate::error::DbError::from(e)))
        })?;
    let result = async {
        // Preparing proves it is exactly one statement and that it parses on its own.
        client.prepare(query).await.map_err(sql_error)?;
        let sql = match format {
            SqlFormat::Tsv => format!("COPY (\n{query}\n) TO STDOUT"),
            SqlFormat::Csv => format!("COPY (\n{query}\n) TO STDOUT (FORMAT csv, HEADER true)"),
            SqlFormat::Ndjson => format!(
                "COPY (SELECT row_to_json(q) FROM (\n{query}\n) q) TO STDOUT (FORMAT binary)"
            ),
        };
        client.copy_out(&sql).await.map_err(sql_error)
    }
    .await;
    let copy = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    let stream: ByteStream = match format {
        SqlFormat::Ndjson => binary_rows(copy, false),
        _ => copy.map(|r| r.map_err(sql_error)).boxed(),
    };
    // End the transaction when the stream ends; keep the connection with the stream.
    first_then_rest(
        futures::stream::unfold((stream, Some(client)), |(mut s, c)| async move {
            match s.next().await {
                Some(item) => Some((item, (s, c))),
                None => {
                    if let Some(c) = &c {
                        let _ = c.batch_execute("COMMIT").await;
                    }
                    None
                }
            }
        })
        .boxed(),
    )
    .await
}

/// Waits for the first piece of output, so a query that fails before producing any
/// (a timeout, a permission error) is answered with its status code instead of a 200
/// cut short.
async fn first_then_rest(mut stream: ByteStream) -> Result<ByteStream> {
    match stream.next().await {
        None => Ok(futures::stream::empty().boxed()),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(futures::stream::once(async move { Ok(first) })
            .chain(stream)
            .boxed()),
    }
}

/// Maps a query's failure to the caller's fault where it is one.
fn sql_error(e: tokio_postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let db = crate::error::DbError::from(e);
    match code.as_str() {
        "25006" | "42501" => Error::Forbidden(format!("not allowed: {db}")),
        "57014" => Error::BadRequest(format!("the query ran longer than the time limit: {db}")),
        c if c.starts_with("42") || c.starts_with("22") || c == "0A000" => {
            Error::BadRequest(format!("invalid query: {db}"))
        }
        _ => Error::Database(db),
    }
}

/// Gzip-encodes a byte stream as it flows (one gzip member; each input chunk is flushed
/// so the client receives data as soon as it exists).
pub fn gzip(stream: ByteStream) -> ByteStream {
    use std::io::Write;
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    futures::stream::unfold((stream, Some(encoder)), |(mut s, enc)| async move {
        let mut enc = enc?;
        match s.next().await {
            Some(Ok(chunk)) => {
                let r = enc.write_all(&chunk).and_then(|_| enc.flush());
                let out = std::mem::take(enc.get_mut());
                Some((
                    r.map(|_| Bytes::from(out))
                        .map_err(|e| Error::Internal(e.to_string())),
                    (s, Some(enc)),
                ))
            }
            Some(Err(e)) => Some((Err(e), (s, None))),
            None => Some((
                enc.finish()
                    .map(Bytes::from)
                    .map_err(|e| Error::Internal(e.to_string())),
                (s, None),
            )),
        }
    })
    .boxed()
}
