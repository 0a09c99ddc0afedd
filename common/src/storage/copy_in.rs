//! Writing loaded lines into resource tables: binary COPY straight into the table when no
//! id conflicts, or through a staging table with `INSERT .. ON CONFLICT` when some do.
//! Lines Postgres refuses (a number out of range, say) are isolated by bisection, so they
//! fail alone.
//!
//! Binary COPY needs no escaping at all: the JSON bytes go to the server exactly as the
//! user sent them (text-format COPY would have to double every backslash). The decoder
//! encodes rows with [`encode_row`] on its own thread; [`write_chunk`] sends them.

use crate::storage::statements::Statements;
use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use tokio_postgres::Transaction;

use crate::error::{DbError, Error, Result};
use crate::model::line_error::{excerpt, LineError};
use crate::resource_type::ResourceType;

/// One row inside a chunk's buffer.
#[derive(Clone, Debug)]
pub struct Row {
    /// The line of the file it came from.
    pub line: u64,
    pub start: usize,
    pub end: usize,
    pub id: String,
}

/// Rows of one type, COPY-encoded back to back (no header or trailer).
#[derive(Debug)]
pub struct Chunk {
    pub resource_type: ResourceType,
    pub buf: BytesMut,
    pub rows: Vec<Row>,
}

const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_TRAILER: &[u8] = &[0xff, 0xff];
/// Offset of the txid value inside an encoded row (after field count and length).
const TXID_OFFSET: usize = 2 + 4;

/// Appends one row `(txid, id, resource_type, status, resource)` in COPY binary format.
/// The txid is a placeholder until [`set_txid`] fills it in.
pub fn encode_row(buf: &mut BytesMut, id: &str, resource_type: &str, json: &[u8]) {
    buf.reserve(2 + 12 + 4 + id.len() + 4 + resource_type.len() + 4 + 7 + 5 + json.len());
    buf.put_i16(5);
    buf.put_i32(8);
    buf.put_i64(0);
    buf.put_i32(id.len() as i32);
    buf.put_slice(id.as_bytes());
    buf.put_i32(resource_type.len() as i32);
    buf.put_slice(resource_type.as_bytes());
    buf.put_i32(7);
    buf.put_slice(b"created");
    buf.put_i32(json.len() as i32 + 1);
    buf.put_u8(1); // jsonb binary format version
    buf.put_slice(json);
}

/// Writes the transaction id into every row of a chunk.
pub fn set_txid(chunk: &mut Chunk, txid: i64) {
    let bytes = txid.to_be_bytes();
    for row in &chunk.rows {
        let at = row.start + TXID_OFFSET;
        chunk.buf[at..at + 8].copy_from_slice(&bytes);
    }
}

/// What writing one chunk did.
#[derive(Debug, Default)]
pub struct ChunkResult {
    /// Lines written (duplicates of an id inside the chunk count: the last one wins).
    pub loaded: u64,
    pub created: u64,
    pub updated: u64,
    pub errors: Vec<LineError>,
    /// True when an id conflict was met: the caller may skip the direct path next time.
    pub conflicted: bool,
}

/// Errors that mean "this data" rather than "this database": unique violations, bad
/// values (class 22), and program limits (a jsonb too large).
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c == "23505" || c.starts_with("22") || c.starts_with("54")
    })
}

async fn copy_rows(
    tx: &Transaction<'_>,
    table_sql: &str,
    data: &Bytes,
    rows: &[Row],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table_sql} (txid, id, resource_type, status, resource) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(COPY_HEADER)).await?;
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        if last.end - first.start == rows.iter().map(|r| r.end - r.start).sum::<usize>() {
            // contiguous: one slice, no copy
            sink.send(data.slice(first.start..last.end)).await?;
        } else {
            for r in rows {
                sink.send(data.slice(r.start..r.end)).await?;
            }
        }
    }
    sink.send(Bytes::from_static(COPY_TRAILER)).await?;
    sink.finish().await
}

/// Writes one chunk inside the batch's transaction.
pub async fn write_chunk(
    tx: &Transaction<'_>,
    chunk: Chunk,
    upsert: bool,
    try_direct: bool,
) -> Result<ChunkResult> {
    let table = chunk.resource_type.table_sql();
    let rows = chunk.rows;
    let data = chunk.buf.freeze();
    let mut result = ChunkResult::default();
    if rows.is_empty() {
        return Ok(result);
    }
    if try_direct {
        tx.batch_execute("SAVEPOINT siphon_direct").await?;
        match copy_rows(tx, &table, &data, &rows).await {
            Ok(n) => {
                tx.batch_execute("RELEASE SAVEPOINT siphon_direct").await?;
                result.created = n;
                result.loaded = n;
                return Ok(result);
            }
            Err(e) if is_data_error(&e) => {
                result.conflicted = e.code().is_some_and(|c| c.code() == "23505");
                tx.batch_execute("ROLLBACK TO SAVEPOINT siphon_direct")
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    write_staged(tx, &chunk.resource_type, &data, &rows, upsert, &mut result).await?;
    result.loaded = rows.len() as u64 - result.errors.len() as u64;
    Ok(result)
}

async fn write_staged(
    tx: &Transaction<'_>,
    ty: &ResourceType,
    data: &Bytes,
    rows: &[Row],
    upsert: bool,
    result: &mut ChunkResult,
) -> Result<()> {
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS siphon_stage
            (txid bigint, id text, resource_type text, status text, resource jsonb) ON COMMIT DELETE ROWS;
         TRUNCATE siphon_stage",
    )
    .await?;
    copy_bisect(tx, data, rows, &mut result.errors).await?;
    let table = ty.table_sql();
    // The last occurrence of an id in the chunk wins, as if the lines were applied in order.
    let select = "SELECT DISTINCT ON (id) txid, id, resource_type, 'created', resource
                  FROM siphon_stage ORDER BY id, ctid DESC";
    if upsert {
        let sql = format!(
            "INSERT INTO {table} (txid, id, resource_type, status, resource) {select}
             ON CONFLICT (id) DO UPDATE SET txid = excluded.txid, ts = now(),
                resource_type = excluded.resource_type, status = 'updated', resource = excluded.resource
             RETURNING (xmax = 0)"
        );
        for row in tx.rows(&sql, &[]).await? {
            if row.get::<_, bool>(0) {
                result.created += 1;
            } else {
                result.updated += 1;
            }
        }
        result.conflicted |= result.updated > 0;
    } else {
        let sql = format!(
            "INSERT INTO {table} (txid, id, resource_type, status, resource) {select}
             ON CONFLICT (id) DO NOTHING RETURNING id"
        );
        let inserted: std::collections::HashSet<String> =
            tx.rows(&sql, &[]).await?.iter().map(|r| r.get(0)).collect();
        result.created = inserted.len() as u64;
        let failed_lines: std::collections::HashSet<u64> =
            result.errors.iter().map(|e| e.line).collect();
        let mut seen = std::collections::HashSet::new();
        for row in rows.iter().rev() {
            if failed_lines.contains(&row.line)
                || inserted.contains(&row.id)
                || !seen.insert(row.id.as_str())
            {
                continue;
            }
            result.conflicted = true;
            result.errors.push(LineError {
                line: row.line,
                reason: format!(
                    "id {:?} already exists in {} and upsert? is false",
                    row.id, ty
                ),
                excerpt: excerpt(&data[row_json(data, row)]),
                loaded: false,
            });
        }
    }
    Ok(())
}

impl Chunk {
    /// The JSON of one of the chunk's rows, as the line had it.
    pub fn json(&self, row: &Row) -> &[u8] {
        &self.buf[row_json(&self.buf, row)]
    }
}

/// The JSON bytes of an encoded row (for excerpts).
fn row_json(data: &[u8], row: &Row) -> std::ops::Range<usize> {
    // The resource is the last field: skip 4 fields, then its length and version byte.
    let mut at = row.start + 2;
    for _ in 0..4 {
        let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    (at + 5).min(row.end)..row.end
}

/// COPYs rows into the staging table; rows Postgres refuses are found by bisection and
/// recorded as line errors, the rest stay.
async fn copy_bisect(
    tx: &Transaction<'_>,
    data: &Bytes,
    rows: &[Row],
    errors: &mut Vec<LineError>,
) -> Result<()> {
    let mut stack: Vec<&[Row]> = vec![rows];
    while let Some(part) = stack.pop() {
        if part.is_empty() {
            continue;
        }
        tx.batch_execute("SAVEPOINT siphon_part").await?;
        match copy_rows(tx, "siphon_stage", data, part).await {
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT siphon_part").await?,
            Err(e) if is_data_error(&e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT siphon_part")
                    .await?;
                if part.len() == 1 {
                    let row = &part[0];
                    let db: DbError = e.into();
                    errors.push(LineError {
                        line: row.line,
                        reason: format!("Postgres refused the line: {db}"),
                        excerpt: excerpt(&data[row_json(data, row)]),
                        loaded: false,
                    });
                } else {
                    let mid = part.len() / 2;
                    stack.push(&part[mid..]);
                    stack.push(&part[..mid]);
                }
            }
            Err(e) => return Err(Error::from(e)),
        }
    }
    Ok(())
}
