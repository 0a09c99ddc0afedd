//! The one way rows leave Postgres: `COPY ... TO STDOUT`, streamed as it arrives so
//! memory stays flat whatever the size. `$dump`, `$dump-sql` and the exports all read
//! through here.
//!
//! Resources are read with binary COPY: every value arrives as the server's exact text
//! (text-format COPY would double backslashes inside JSON), framed by lengths that
//! [`BinaryRows`] strips as the bytes stream through.

use crate::storage::statements::Statements;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

use super::resources::RESOURCE_WITH_ID;
use super::Db;
use crate::error::{DbError, Error, Result};
use crate::resource_type::ResourceType;

/// A stream of output bytes; an `Err` item means the read is incomplete and whatever
/// carries it on must not look complete.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// About how many bytes [`coalesce`] joins into one chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Joins the small pieces of a stream into chunks of about `target` bytes without ever
/// waiting for more: what is ready is joined, and the chunk goes out as soon as the next
/// piece is not ready yet, so a slow query still streams row by row.
///
/// COPY hands over one message per row, and every piece becomes an HTTP frame, a gzip
/// flush or a channel send further on: 102,000 rows were 102,000 chunked-encoding frames
/// through `$dump`. An error is passed on after the bytes that came before it.
pub fn coalesce(stream: ByteStream, target: usize) -> ByteStream {
    Coalesce {
        inner: stream,
        buf: BytesMut::new(),
        target,
        failed: None,
        ended: false,
    }
    .boxed()
}

struct Coalesce {
    inner: ByteStream,
    buf: BytesMut,
    target: usize,
    /// An error that arrived behind joined bytes, passed on at the next poll.
    failed: Option<Error>,
    /// The inner stream has ended and must not be polled again.
    ended: bool,
}

impl Coalesce {
    fn take(&mut self) -> Poll<Option<Result<Bytes>>> {
        Poll::Ready(Some(Ok(self.buf.split().freeze())))
    }
}

impl futures::Stream for Coalesce {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        while !this.ended {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    if this.buf.is_empty() && piece.len() >= this.target {
                        return Poll::Ready(Some(Ok(piece)));
                    }
                    this.buf.extend_from_slice(&piece);
                    if this.buf.len() >= this.target {
                        return this.take();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if this.buf.is_empty() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.failed = Some(e);
                    return this.take();
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                Poll::Pending => return this.take(),
            }
        }
        if this.buf.is_empty() {
            Poll::Ready(None)
        } else {
            this.take()
        }
    }
}

/// How `$dump-sql` rows are framed by COPY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    /// COPY text format: tab-separated, `\t` `\n` `\\` escaped.
    Text,
    /// RFC 4180 CSV with a header row.
    CsvWithHeader,
    /// One JSON object per row (`row_to_json`).
    JsonRows,
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

pub fn binary_rows(
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

impl Db {
    /// Streams every resource of `ty` as ndjson (with `id` and `resourceType` filled in),
    /// optionally only rows changed after `since`. Unknown types are `NotFound`.
    pub async fn copy_resources(
        &self,
        ty: &ResourceType,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<ByteStream> {
        // Taken out of the pool: a dump cut half-way leaves the connection mid-COPY, so it
        // is closed with the stream rather than handed to the next request.
        let client = deadpool_postgres::Object::take(self.client().await?);
        let exists: bool = client
            .row("SELECT to_regclass($1) IS NOT NULL", &[&ty.table_sql()])
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
            "COPY (SELECT {RESOURCE_WITH_ID} FROM {}{filter}) TO STDOUT (FORMAT binary)",
            ty.table_sql()
        );
        // In a transaction (never committed: the connection dies with the stream), so
        // the COPY's prepare and run reach one server connection behind a pooler.
        client.batch_execute("BEGIN READ ONLY").await?;
        let copy = client.copy_out(&sql).await?;
        // Keep the connection alive as long as the stream.
        let stream = coalesce(binary_rows(copy, true), CHUNK_BYTES);
        Ok(
            futures::stream::unfold((stream, Some(client)), |(mut s, c)| async move {
                s.next().await.map(|item| (item, (s, c)))
            })
            .boxed(),
        )
    }

    /// Runs one read-only query and streams its rows in `format`. The query runs in a
    /// READ ONLY transaction on a connection that logged in as the read-only role
    /// (`Db::reader`: SELECT on resource tables only) with a statement timeout; the
    /// connection lives and dies with the stream. Preparing it first proves it is
    /// exactly one statement.
    pub async fn copy_query(
        &self,
        query: &str,
        format: CopyFormat,
        timeout_ms: u64,
    ) -> Result<ByteStream> {
        let client = self.reader().await?;
        client
            .batch_execute(&format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}"
            ))
            .await?;
        let result = async {
            client.prepare(query).await.map_err(sql_error)?;
            let sql = match format {
                CopyFormat::Text => format!("COPY (\n{query}\n) TO STDOUT"),
                CopyFormat::CsvWithHeader => {
                    format!("COPY (\n{query}\n) TO STDOUT (FORMAT csv, HEADER true)")
                }
                CopyFormat::JsonRows => format!(
                    "COPY (SELECT row_to_json(q) FROM (\n{query}\n) q) TO STDOUT (FORMAT binary)"
                ),
            };
            client.copy_out(&sql).await.map_err(sql_error)
        }
        .await;
        let copy = result?;
        let stream: ByteStream = match format {
            CopyFormat::JsonRows => binary_rows(copy, false),
            _ => copy.map(|r| r.map_err(sql_error)).boxed(),
        };
        let stream = coalesce(stream, CHUNK_BYTES);
        // The connection (and its transaction) ends when the stream is dropped.
        Ok(
            futures::stream::unfold((stream, client), |(mut s, c)| async move {
                s.next().await.map(|item| (item, (s, c)))
            })
            .boxed(),
        )
    }
}

/// Maps a query's failure to the caller's fault where it is one.
pub(crate) fn sql_error(e: tokio_postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let db = DbError::from(e);
    match code.as_str() {
        "25006" | "42501" => Error::Forbidden(format!("not allowed: {db}")),
        "57014" => Error::BadRequest(format!("the query ran longer than the time limit: {db}")),
        c if c.starts_with("42") || c.starts_with("22") || c == "0A000" => {
            Error::BadRequest(format!("invalid query: {db}"))
        }
        _ => Error::Database(db),
    }
}

/// A Postgres string literal for `s` (as `quote_literal` writes it): COPY takes no bind
/// parameters, so the few values an export query holds are written in, quoted.
pub fn literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Which resources of a Patient compartment an export keeps.
#[derive(Clone, Debug, PartialEq)]
pub enum Patients {
    /// Resources that reference any Patient through the compartment's paths.
    Any,
    /// Only those referencing a Patient listed for export `export_id`
    /// (`siphon_export_patient`).
    Listed { export_id: String },
}

/// The Patient-compartment condition of an export slice.
#[derive(Clone, Debug, PartialEq)]
pub struct Compartment {
    /// The reference paths of the type (`subject`, `participant.individual`).
    pub paths: Vec<String>,
    pub patients: Patients,
}

/// `_elements`: the root elements kept (besides `id`, `resourceType`, `meta`), the
/// names of choice elements kept by prefix (`value` keeps `valueQuantity`...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    pub names: Vec<String>,
    pub choices: Vec<String>,
}

/// One slice of one resource table, in id order.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub resource_type: ResourceType,
    /// Rows after this id (exclusive).
    pub after: Option<String>,
    /// Rows up to this id (inclusive).
    pub upto: Option<String>,
    /// Rows changed after this instant.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows changed at or before this instant.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub compartment: Option<Compartment>,
    pub projection: Option<Projection>,
    /// `_typeFilter` of the slice's type: only rows passing it.
    pub filter: Option<crate::fhir::search::filter::TypeFilter>,
}

/// The `SUBSETTED` tag `_elements` marks resources with.
pub const SUBSETTED: &str = r#"{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}"#;

/// An element path as a jsonpath (`participant.individual` -> `$.participant.individual`);
/// paths come from the compartment table: letters and dots only.
fn json_path(path: &str) -> Option<String> {
    let ok = !path.is_empty()
        && path
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    ok.then(|| format!("$.{path}.reference"))
}

/// The Patient id the reference text `r` (an SQL expression) names, or NULL: the rest of
/// a relative `Patient/<id>`, else the id after the last `Patient/` of an absolute or
/// versioned one. (The prefix test first: a regular expression costs about 2 µs a row,
/// one with a bounded repetition such as `{1,64}` 12 µs, the prefix test 0.2 µs.)
fn patient_id_sql(r: &str) -> String {
    format!(
        "(CASE WHEN {r} LIKE 'Patient/_%' AND strpos(substr({r}, 9), '/') = 0 THEN substr({r}, 9) \
         ELSE substring({r} from '(?:^|/)Patient/([-A-Za-z0-9.]+)(?:/_history/[^/]+)?$') END)"
    )
}

/// The condition that a row (its `resource` and `id` columns as named) is in the
/// compartment.
fn compartment_condition(
    ty: &ResourceType,
    c: &Compartment,
    resource: &str,
    id: &str,
) -> Result<String> {
    let listed = |refs: &str| match &c.patients {
        Patients::Any => format!("{refs} IS NOT NULL"),
        Patients::Listed { export_id } => format!(
            "{refs} IN (SELECT ref FROM siphon_export_patient WHERE export_id = {})",
            literal(export_id)
        ),
    };
    let mut any = Vec::new();
    for path in &c.paths {
        let jp = json_path(path)
            .ok_or_else(|| Error::Internal(format!("bad compartment path {path:?}")))?;
        any.push(format!(
            "EXISTS (SELECT 1 FROM jsonb_path_query({resource}, {}) r WHERE {})",
            literal(&jp),
            listed(&format!(
                "('Patient/' || {})",
                patient_id_sql("(r #>> '{}')")
            ))
        ));
    }
    if ty.as_str() == "Patient" {
        // A Patient is in its own compartment by its id.
        any.push(match &c.patients {
            Patients::Any => "true".to_string(),
            Patients::Listed { .. } => listed(&format!("('Patient/' || {id})")),
        });
    }
    Ok(if any.is_empty() {
        "false".to_string()
    } else {
        format!("({})", any.join(" OR "))
    })
}

/// The conditions of a slice that do not depend on where a task is in it: `_since`,
/// `_until`, `_typeFilter`, and the compartment when `compartment` is true.
fn slice_conditions(slice: &Slice, compartment: bool) -> Result<Vec<String>> {
    let mut conditions = Vec::new();
    if let Some(since) = slice.since {
        conditions.push(format!(
            "ts > {}::timestamptz",
            literal(&since.to_rfc3339())
        ));
    }
    if let Some(until) = slice.until {
        conditions.push(format!(
            "ts <= {}::timestamptz",
            literal(&until.to_rfc3339())
        ));
    }
    if let Some(f) = &slice.filter {
        conditions.push(super::filter::filter_condition(
            f,
            &super::filter::Columns::default(),
        )?);
    }
    if let (true, Some(c)) = (compartment, &slice.compartment) {
        conditions.push(compartment_condition(
            &slice.resource_type,
            c,
            "resource",
            "id",
        )?);
    }
    Ok(conditions)
}

/// The resource of a row as `$dump` writes it, or projected by `_elements`.
fn resource_sql(projection: Option<&Projection>) -> String {
    let Some(p) = projection else {
        return RESOURCE_WITH_ID.to_string();
    };
    let names: Vec<String> = p.names.iter().map(|n| literal(n)).collect();
    let mut keep = vec![format!(
        "key = ANY(ARRAY[{}]::text[])",
        if names.is_empty() {
            "NULL".into()
        } else {
            names.join(", ")
        }
    )];
    for c in &p.choices {
        if c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            keep.push(format!("key ~ {}", literal(&format!("^{c}[A-Z]"))));
        }
    }
    format!(
        "coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(resource) WHERE {keep}), '{{}}'::jsonb)
         || jsonb_build_object('resourceType', resource_type, 'id', id,
              'meta', coalesce(resource->'meta', '{{}}'::jsonb)
                || jsonb_build_object('tag', coalesce(resource->'meta'->'tag', '[]'::jsonb) || {subsetted}::jsonb))",
        keep = keep.join(" OR "),
        subsetted = literal(&format!("[{SUBSETTED}]")),
    )
}

fn where_all(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// The SELECT behind an export slice: `(id, resource)` rows in id order, the resource as
/// `$dump` writes it (or projected by `_elements`).
pub fn slice_sql(slice: &Slice) -> Result<String> {
    let table = slice.resource_type.table_sql();
    let mut conditions = Vec::new();
    if let Some(after) = &slice.after {
        conditions.push(format!("id > {}", literal(after)));
    }
    if let Some(upto) = &slice.upto {
        conditions.push(format!("id <= {}", literal(upto)));
    }
    conditions.extend(slice_conditions(slice, true)?);
    let resource = resource_sql(slice.projection.as_ref());
    Ok(format!(
        "SELECT id, {resource} FROM {table}{} ORDER BY id",
        where_all(&conditions)
    ))
}

/// A range of Patient resource blocks (`organizeOutputBy=Patient`): for each stored
/// Patient whose id is in the range, its own row (when Patient is exported) and every
/// row of the other types that references it through the Patient compartment's paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocks {
    /// One slice per exported type, in the order a block lists them (Patient first when
    /// exported); their `after`/`upto` are not used, their compartment gives the paths.
    pub slices: Vec<Slice>,
    /// Patients with ids after this (exclusive)...
    pub from: Option<String>,
    /// ...and up to this (inclusive).
    pub upto: Option<String>,
    /// Only the Patients listed for an export, or every stored one.
    pub patients: Patients,
    /// Rows after this block key ([`block_key`]).
    pub after: Option<String>,
}

/// A row's key in a block export: `patient-id/type-position/id`; ids hold no `/`.
pub fn block_key(key: &str) -> Option<(&str, i32, &str)> {
    let mut parts = key.splitn(3, '/');
    let patient = parts.next()?;
    let ord = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    Some((patient, ord, id))
}

/// The binary-COPY SELECT of a range of resource blocks: `(key, resource)` rows in
/// block order (patient id, the type's position, id), keyed by [`block_key`].
pub fn blocks_sql(blocks: &Blocks) -> Result<String> {
    let patient_table = ResourceType::parse("Patient")?.table_sql();
    // The Patients whose blocks this range holds: stored, in the range, listed if asked.
    let mut in_range = Vec::new();
    if let Some(from) = &blocks.from {
        in_range.push(format!("p.id > {}", literal(from)));
    }
    if let Some(upto) = &blocks.upto {
        in_range.push(format!("p.id <= {}", literal(upto)));
    }
    if let Patients::Listed { export_id } = &blocks.patients {
        in_range.push(format!(
            "('Patient/' || p.id) IN (SELECT ref FROM siphon_export_patient WHERE export_id = {})",
            literal(export_id)
        ));
    }
    let patients = format!("SELECT p.id FROM {patient_table} p{}", where_all(&in_range));
    let mut parts = Vec::new();
    for (ord, slice) in blocks.slices.iter().enumerate() {
        let table = slice.resource_type.table_sql();
        let resource = resource_sql(slice.projection.as_ref());
        let mut conditions = slice_conditions(slice, false)?;
        if slice.resource_type.as_str() == "Patient" {
            conditions.push(format!("id IN ({patients})"));
            parts.push(format!(
                "SELECT id AS pid, {ord} AS ord, id, {resource} AS line FROM {table}{}",
                where_all(&conditions)
            ));
            continue;
        }
        let paths = slice
            .compartment
            .as_ref()
            .map(|c| c.paths.as_slice())
            .unwrap_or_default();
        let mut refs = Vec::new();
        for path in paths {
            let jp = json_path(path)
                .ok_or_else(|| Error::Internal(format!("bad compartment path {path:?}")))?;
            refs.push(format!(
                "jsonb_path_query_array(resource, {})",
                literal(&jp)
            ));
        }
        if refs.is_empty() {
            continue;
        }
        // Every reference of the paths in one array, one row per Patient it names: a
        // resource naming its Patient twice gives two equal rows, next to each other in
        // block order, and the writer keeps one (a DISTINCT per row costs ~25 µs).
        conditions.push(format!("x.pid IN ({patients})"));
        parts.push(format!(
            "SELECT x.pid, {ord} AS ord, id, {resource} AS line FROM {table}
             CROSS JOIN LATERAL (SELECT {} AS pid FROM jsonb_array_elements_text({}) r(ref)) x{}",
            patient_id_sql("ref"),
            refs.join(" || "),
            where_all(&conditions)
        ));
    }
    if parts.is_empty() {
        return Ok("SELECT NULL::text, NULL::jsonb WHERE false".into());
    }
    let after = match blocks.after.as_deref() {
        None => String::new(),
        Some(key) => {
            let (patient, ord, id) = block_key(key)
                .ok_or_else(|| Error::Internal(format!("bad block checkpoint {key:?}")))?;
            format!(
                " WHERE (b.pid, b.ord, b.id) > ({}, {ord}, {})",
                literal(patient),
                literal(id)
            )
        }
    };
    Ok(format!(
        "SELECT b.pid || '/' || b.ord || '/' || b.id, b.line FROM (\n{}\n) b{after} ORDER BY b.pid, b.ord, b.id",
        parts.join("\nUNION ALL\n")
    ))
}

/// What the rows of a dump carry after their key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One JSON object: the resource as `$dump` writes it, or the query row.
    Json,
    /// The columns: `id, resource_type, ts, txid, resource` of a table, the query's own.
    Columns,
    /// `_bulk`: the id, then the JSON object.
    Bulk,
}

/// The text-COPY SELECT of a resource table's rows in a dump: `slice` (its projection
/// ignored), then the columns `shape` says, keyed and ordered by id.
pub fn table_rows_sql(slice: &Slice, shape: Shape) -> Result<String> {
    let json = Slice {
        projection: None,
        ..slice.clone()
    };
    let sql = slice_sql(&json)?;
    let columns = match shape {
        Shape::Json => RESOURCE_WITH_ID.to_string(),
        Shape::Columns => format!("id, resource_type, ts, txid, {RESOURCE_WITH_ID}"),
        Shape::Bulk => format!("id, {RESOURCE_WITH_ID}"),
    };
    Ok(sql.replacen(
        &format!("SELECT id, {RESOURCE_WITH_ID} FROM"),
        &format!("SELECT id, {columns} FROM"),
        1,
    ))
}

/// The column names of a resource table in a dump (with [`Shape::Columns`]).
pub const TABLE_COLUMNS: [&str; 5] = ["id", "resource_type", "ts", "txid", "resource"];

/// A read-only query's rows as `(id::text, the row as JSON)`, for `_bulk` actions.
pub fn keyed_rows_sql(query: &str) -> String {
    format!("SELECT q.\"id\"::text, row_to_json(q)::text FROM (\n{query}\n) q")
}

/// The text-COPY SELECT of a materialized query's rows after row `after`, keyed and
/// ordered by `siphon_rn`; `columns` are the query's, `id_column` the `_bulk` id.
pub fn query_rows_sql(
    table: &str,
    columns: &[String],
    after: i64,
    shape: Shape,
    id_column: Option<&str>,
) -> String {
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| format!("x.\"{}\"", c.replace('"', "\"\"")))
        .collect();
    // The row's alias must not be a column name, or `SELECT alias` picks the column.
    let mut alias = "siphon_row".to_string();
    while columns.iter().any(|c| c == &alias) {
        alias.push('_');
    }
    let json = format!(
        "row_to_json((SELECT {alias} FROM (SELECT {}) {alias}))",
        quoted.join(", ")
    );
    let rest = match shape {
        Shape::Json => json,
        Shape::Columns => quoted.join(", "),
        Shape::Bulk => format!(
            "x.\"{}\"::text, {json}",
            id_column.unwrap_or("id").replace('"', "\"\"")
        ),
    };
    format!("SELECT x.siphon_rn, {rest} FROM {table} x WHERE x.siphon_rn > {after} ORDER BY x.siphon_rn")
}

/// Deleted resources of `types` (each with its compartment condition, if any) since
/// `since` (and at or before `until`), for `deleted[]`: each once, as a transaction
/// Bundle with one DELETE entry, keyed `Type/id`, in key order. Resources that exist
/// again are left out.
pub fn deleted_sql(
    types: &[(ResourceType, Option<Compartment>)],
    since: chrono::DateTime<chrono::Utc>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    after: Option<&str>,
) -> Result<String> {
    let mut parts = Vec::new();
    for (ty, compartment) in types {
        let mut conditions = vec![
            format!("t.resource_type = {}", literal(ty.as_str())),
            format!(
                "t.deleted_at > {}::timestamptz",
                literal(&since.to_rfc3339())
            ),
            format!(
                "NOT EXISTS (SELECT 1 FROM {} x WHERE x.id = t.id)",
                ty.table_sql()
            ),
        ];
        if let Some(until) = until {
            conditions.push(format!(
                "t.deleted_at <= {}::timestamptz",
                literal(&until.to_rfc3339())
            ));
        }
        if let Some(c) = compartment {
            conditions.push(compartment_condition(ty, c, "t.resource", "t.id")?);
        }
        parts.push(format!(
            "SELECT DISTINCT t.resource_type || '/' || t.id AS k FROM siphon_tombstone t WHERE {}",
            conditions.join(" AND ")
        ));
    }
    if parts.is_empty() {
        return Ok("SELECT NULL::text, NULL::jsonb WHERE false".into());
    }
    let after = after
        .map(|a| format!(" WHERE k > {}", literal(a)))
        .unwrap_or_default();
    Ok(format!(
        "SELECT k, jsonb_build_object('resourceType', 'Bundle', 'type', 'transaction', 'entry',
            jsonb_build_array(jsonb_build_object('request', jsonb_build_object('method', 'DELETE', 'url', k))))
         FROM ({}) d{after} ORDER BY k",
        parts.join(" UNION ")
    ))
}

/// A stream of `(key, line)` rows out of a two-column binary COPY (text key, jsonb line).
pub struct KeyedRows {
    copy: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    buf: BytesMut,
    header_done: bool,
    ended: bool,
    /// Kept for as long as the stream: the connection is not returned to the pool.
    _client: deadpool_postgres::ClientWrapper,
}

impl KeyedRows {
    /// The next rows (at least one), or `None` at the end.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<(Bytes, Bytes)>>> {
        loop {
            let mut rows = Vec::new();
            self.drain(&mut rows)?;
            if !rows.is_empty() {
                return Ok(Some(rows));
            }
            if self.ended {
                return Ok(None);
            }
            match self.copy.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk.map_err(Error::from)?),
                None => {
                    self.ended = true;
                    if !self.buf.is_empty() {
                        return Err(Error::Internal("COPY ended inside a row".into()));
                    }
                }
            }
        }
    }

    fn drain(&mut self, rows: &mut Vec<(Bytes, Bytes)>) -> Result<()> {
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(());
            }
            let ext = u32::from_be_bytes(self.buf[15..19].try_into().unwrap()) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(());
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        loop {
            if self.buf.len() < 2 {
                return Ok(());
            }
            let fields = i16::from_be_bytes([self.buf[0], self.buf[1]]);
            if fields == -1 {
                self.buf.advance(2);
                return Ok(());
            }
            if fields != 2 {
                return Err(Error::Internal(format!(
                    "unexpected COPY row with {fields} fields"
                )));
            }
            if self.buf.len() < 6 {
                return Ok(());
            }
            let key_len = i32::from_be_bytes(self.buf[2..6].try_into().unwrap());
            if key_len < 0 {
                return Err(Error::Internal("a row without a key".into()));
            }
            let key_end = 6 + key_len as usize;
            if self.buf.len() < key_end + 4 {
                return Ok(());
            }
            let line_len = i32::from_be_bytes(self.buf[key_end..key_end + 4].try_into().unwrap());
            if line_len < 1 {
                return Err(Error::Internal("a row without a resource".into()));
            }
            let end = key_end + 4 + line_len as usize;
            if self.buf.len() < end {
                return Ok(());
            }
            let row = self.buf.split_to(end).freeze();
            // The jsonb value starts with its version byte.
            rows.push((row.slice(6..key_end), row.slice(key_end + 5..end)));
        }
    }
}

/// A stream of rows out of a text-format COPY: each row's bytes without its newline
/// (fields tab-separated, escaped as Postgres' text format does).
pub struct TextRows {
    copy: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    buf: BytesMut,
    ended: bool,
    _client: deadpool_postgres::ClientWrapper,
}

impl TextRows {
    /// The next rows (at least one), or `None` at the end.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<Bytes>>> {
        loop {
            let mut rows = Vec::new();
            while let Some(i) = memchr::memchr(b'\n', &self.buf) {
                let mut row = self.buf.split_to(i + 1);
                row.truncate(i);
                rows.push(row.freeze());
            }
            if !rows.is_empty() {
                return Ok(Some(rows));
            }
            if self.ended {
                return Ok(None);
            }
            match self.copy.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk.map_err(sql_error)?),
                None => {
                    self.ended = true;
                    if !self.buf.is_empty() {
                        return Err(Error::Internal("COPY ended inside a row".into()));
                    }
                }
            }
        }
    }
}

impl Db {
    /// Streams `select` with text-format COPY (dates ISO, time zone UTC), on a connection
    /// taken out of the pool for as long as the stream lives. The settings are `SET LOCAL`
    /// in a transaction around the COPY (never committed: the connection is closed after
    /// the stream), so a transaction pooler runs them where the COPY runs.
    pub async fn copy_text_rows(&self, select: &str) -> Result<TextRows> {
        let client = deadpool_postgres::Object::take(self.client().await?);
        client
            .batch_execute(
                "BEGIN; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD';
                 SET LOCAL IntervalStyle = 'iso_8601'",
            )
            .await?;
        let copy = client
            .copy_out(&format!("COPY ({select}) TO STDOUT"))
            .await
            .map_err(sql_error)?;
        Ok(TextRows {
            copy: Box::pin(copy),
            buf: BytesMut::with_capacity(1 << 20),
            ended: false,
            _client: client,
        })
    }

    /// Streams `select` (two columns: a text key, a jsonb line) with binary COPY, on a
    /// connection taken out of the pool for as long as the stream lives.
    pub async fn copy_keyed_rows(&self, select: &str) -> Result<KeyedRows> {
        let client = deadpool_postgres::Object::take(self.client().await?);
        // In a transaction that dies with the stream, as in `copy_resources`.
        client.batch_execute("BEGIN READ ONLY").await?;
        let copy = client
            .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await?;
        Ok(KeyedRows {
            copy: Box::pin(copy),
            buf: BytesMut::with_capacity(1 << 20),
            header_done: false,
            ended: false,
            _client: client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream of one-column rows, as Postgres frames it.
    fn copy_stream(values: &[Option<&[u8]>], jsonb: bool) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&0u32.to_be_bytes()); // flags
        out.extend_from_slice(&0u32.to_be_bytes()); // header extension length
        for v in values {
            out.extend_from_slice(&1i16.to_be_bytes());
            match v {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(bytes) => {
                    let extra = usize::from(jsonb);
                    out.extend_from_slice(&((bytes.len() + extra) as i32).to_be_bytes());
                    if jsonb {
                        out.push(1);
                    }
                    out.extend_from_slice(bytes);
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn parse_in_pieces(stream: &[u8], piece: usize, jsonb: bool) -> Vec<u8> {
        let mut parser = BinaryRows {
            buf: BytesMut::new(),
            header_done: false,
            jsonb,
        };
        let mut out = BytesMut::new();
        let mut ended = false;
        for chunk in stream.chunks(piece) {
            parser.buf.extend_from_slice(chunk);
            ended = parser.drain(&mut out).unwrap();
        }
        assert!(ended, "the trailer ends the stream");
        out.to_vec()
    }

    /// Polls `stream` to its end, as a consumer would, in one task.
    fn collect(stream: ByteStream) -> Vec<Result<Bytes>> {
        futures::executor::block_on(stream.collect())
    }

    #[test]
    fn ready_pieces_are_joined_up_to_the_target_and_nothing_is_lost() {
        let pieces: Vec<Result<Bytes>> = (0..1000)
            .map(|i| Ok(Bytes::from(format!("{{\"id\":\"{i}\"}}\n"))))
            .collect();
        let whole: Vec<u8> = pieces
            .iter()
            .flat_map(|p| p.as_ref().unwrap().to_vec())
            .collect();
        let out = collect(coalesce(futures::stream::iter(pieces).boxed(), 1024));
        let joined: Vec<u8> = out
            .iter()
            .flat_map(|c| c.as_ref().unwrap().to_vec())
            .collect();
        assert_eq!(joined, whole);
        // ~13 bytes a piece: about 80 pieces a chunk, not one chunk per piece.
        assert!(out.len() < 20, "{} chunks", out.len());
        assert!(out[..out.len() - 1]
            .iter()
            .all(|c| c.as_ref().unwrap().len() >= 1024));
    }

    #[test]
    fn a_piece_is_not_held_back_waiting_for_the_next() {
        // One piece ready, then a stream that never yields again: the piece must come
        // out on its own rather than wait for the chunk to fill.
        let stream = futures::stream::iter(vec![Ok(Bytes::from_static(b"row\n"))])
            .chain(futures::stream::pending())
            .boxed();
        let mut joined = coalesce(stream, CHUNK_BYTES);
        let first = futures::executor::block_on(joined.next());
        assert_eq!(first.unwrap().unwrap(), Bytes::from_static(b"row\n"));
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it() {
        let stream = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"a\n")),
            Ok(Bytes::from_static(b"b\n")),
            Err(Error::Internal("cut".into())),
            Ok(Bytes::from_static(b"never\n")),
        ])
        .boxed();
        let out = collect(coalesce(stream, CHUNK_BYTES));
        assert_eq!(
            out.len(),
            3,
            "bytes, the error, then what followed: {out:?}"
        );
        assert_eq!(out[0].as_ref().unwrap(), &Bytes::from_static(b"a\nb\n"));
        assert!(matches!(&out[1], Err(Error::Internal(m)) if m == "cut"));
    }

    #[test]
    fn rows_come_out_whole_whatever_the_chunking() {
        let values: Vec<Option<&[u8]>> = vec![
            Some(br#"{"a":"tab\there"}"#),
            None,
            Some(b"{}"),
            Some("{\"u\":\"\u{e9}\"}".as_bytes()),
        ];
        let expected = b"{\"a\":\"tab\\there\"}\nnull\n{}\n{\"u\":\"\xc3\xa9\"}\n".to_vec();
        for jsonb in [true, false] {
            let stream = copy_stream(&values, jsonb);
            for piece in [1, 2, 3, 7, 64, stream.len()] {
                assert_eq!(
                    parse_in_pieces(&stream, piece, jsonb),
                    expected,
                    "piece {piece}"
                );
            }
        }
    }

    #[test]
    fn rows_of_several_columns_are_refused() {
        let mut stream = copy_stream(&[], false);
        stream.truncate(19);
        stream.extend_from_slice(&2i16.to_be_bytes());
        let mut parser = BinaryRows {
            buf: BytesMut::from(&stream[..]),
            header_done: false,
            jsonb: false,
        };
        assert!(parser.drain(&mut BytesMut::new()).is_err());
    }

    #[test]
    fn since_and_until_bound_the_rows_and_the_deletions() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let ty = ResourceType::parse("Patient").unwrap();
        let sql = slice_sql(&Slice {
            resource_type: ty.clone(),
            after: None,
            upto: None,
            since: Some(t("2024-01-01T00:00:00Z")),
            until: Some(t("2024-06-30T00:00:00Z")),
            compartment: None,
            projection: None,
            filter: None,
        })
        .unwrap();
        assert!(
            sql.contains("ts > '2024-01-01T00:00:00+00:00'::timestamptz"),
            "{sql}"
        );
        assert!(
            sql.contains("ts <= '2024-06-30T00:00:00+00:00'::timestamptz"),
            "{sql}"
        );
        let deleted = deleted_sql(
            &[(ty, None)],
            t("2024-01-01T00:00:00Z"),
            Some(t("2024-06-30T00:00:00Z")),
            None,
        )
        .unwrap();
        assert!(
            deleted.contains("t.deleted_at <= '2024-06-30T00:00:00+00:00'::timestamptz"),
            "{deleted}"
        );
    }

    fn slice(ty: &str, paths: &[&str]) -> Slice {
        Slice {
            resource_type: ResourceType::parse(ty).unwrap(),
            after: None,
            upto: None,
            since: None,
            until: None,
            compartment: Some(Compartment {
                paths: paths.iter().map(|p| p.to_string()).collect(),
                patients: Patients::Any,
            }),
            projection: None,
            filter: None,
        }
    }

    #[test]
    fn block_keys_split_into_patient_position_and_id() {
        assert_eq!(block_key("pat-1/2/obs-9"), Some(("pat-1", 2, "obs-9")));
        assert_eq!(block_key("pat-1/x/obs-9"), None);
        assert_eq!(block_key("pat-1/2"), None);
    }

    #[test]
    fn blocks_are_read_in_block_order_after_the_checkpoint_of_stored_listed_patients() {
        let blocks = Blocks {
            slices: vec![
                slice("Patient", &["link.other"]),
                slice("Observation", &["subject", "performer"]),
                // A type without compartment paths has nothing in any block.
                slice("Organization", &[]),
            ],
            from: Some("pat-1".into()),
            upto: Some("pat-5".into()),
            patients: Patients::Listed {
                export_id: "e'1".into(),
            },
            after: Some("pat-2/1/obs-'7".into()),
        };
        let sql = blocks_sql(&blocks).unwrap();
        assert!(sql.ends_with("ORDER BY b.pid, b.ord, b.id"), "{sql}");
        assert!(
            sql.contains("WHERE (b.pid, b.ord, b.id) > ('pat-2', 1, 'obs-''7')"),
            "{sql}"
        );
        // Patients in the range, listed, stored: the same set for every type.
        let patients = "SELECT p.id FROM public.\"patient\" p WHERE p.id > 'pat-1' AND p.id <= 'pat-5' AND ('Patient/' || p.id) IN (SELECT ref FROM siphon_export_patient WHERE export_id = 'e''1')";
        assert!(sql.contains(&format!("0 AS ord, id, resource || jsonb_build_object('resourceType', resource_type, 'id', id) AS line FROM public.\"patient\" WHERE id IN ({patients})")), "{sql}");
        assert!(sql.contains(&format!("x.pid IN ({patients})")), "{sql}");
        assert!(sql.contains("jsonb_array_elements_text(jsonb_path_query_array(resource, '$.subject.reference') || jsonb_path_query_array(resource, '$.performer.reference'))"), "{sql}");
        assert_eq!(sql.matches("UNION ALL\nSELECT").count(), 1, "{sql}");
        assert!(!sql.contains("organization"), "{sql}");
        // A damaged checkpoint is an error, not a query.
        let bad = Blocks {
            after: Some("no-slashes".into()),
            ..blocks
        };
        assert!(blocks_sql(&bad).is_err());
    }
}
