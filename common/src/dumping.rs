//! Dumps (SPEC section 5): a resource table or a read-only SQL query, streamed straight
//! from `COPY ... TO STDOUT` (through `storage::read`) so memory stays flat whatever the
//! size.

use bytes::Bytes;
use futures::stream::StreamExt;

use crate::error::{Error, Result};
use crate::formats::{Chosen, Shape};
use crate::resource_type::ResourceType;
pub use crate::storage::read::ByteStream;
use crate::storage::read::CopyFormat;
use crate::storage::Db;

/// Streams every resource of `ty` as ndjson (with `id` and `resourceType` filled in),
/// optionally only rows changed after `since`. Unknown types are `NotFound`.
pub async fn dump_type(
    db: &Db,
    ty: &ResourceType,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<ByteStream> {
    let stream = first_then_rest(db.copy_resources(ty, since).await?).await?;
    Ok(measured(stream, "dump", Some(ty.as_str())))
}

/// Counts what passes through `stream` and records it when the stream ends or is
/// dropped (a client that hangs up counts what it got): `BytesOut`, `Rows` (lines),
/// `DumpSeconds`.
fn measured(
    stream: ByteStream,
    operation: &'static str,
    resource_type: Option<&str>,
) -> ByteStream {
    struct Tally {
        operation: &'static str,
        resource_type: Option<String>,
        started: std::time::Instant,
        bytes: u64,
        rows: u64,
    }
    impl Drop for Tally {
        fn drop(&mut self) {
            use crate::metrics::{bytes, count, seconds};
            crate::metrics::record(
                self.operation,
                self.resource_type.as_deref(),
                &[
                    bytes("BytesOut", self.bytes),
                    count("Rows", self.rows),
                    seconds("DumpSeconds", self.started.elapsed()),
                ],
            );
        }
    }
    let mut tally = Tally {
        operation,
        resource_type: resource_type.map(str::to_string),
        started: std::time::Instant::now(),
        bytes: 0,
        rows: 0,
    };
    stream
        .map(move |item| {
            // The whole tally moves into the closure (its fields alone would be copied
            // out, and the tally dropped, recording nothing, at once).
            let tally = &mut tally;
            if let Ok(chunk) = &item {
                tally.bytes += chunk.len() as u64;
                tally.rows += memchr::memchr_iter(b'\n', chunk).count() as u64;
            }
            item
        })
        .boxed()
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
    // A Unicode-escaped identifier (U&"pg\005fsleep") names any function without
    // spelling it: the list above would not see it.
    if lower.contains("u&\"") {
        return Err(Error::Forbidden(
            "Unicode-escaped identifiers (U&\"...\") are not allowed in $dump-sql".into(),
        ));
    }
    Ok(())
}

/// Runs a read-only query and streams its rows (see `Db::copy_query`: READ ONLY, role
/// `siphon_reader`, statement timeout, one statement) in `format`: written by COPY itself
/// where it can be (tsv, csv, ndjson), else from COPY's text rows line by line. `table`
/// is the table of `sql` and the index of `elastic-bulk` (default `query`).
pub async fn dump_sql(
    db: &Db,
    query: &str,
    format: Chosen,
    table: Option<&str>,
    timeout_ms: u64,
) -> Result<ByteStream> {
    let target = format.target(table, "query")?;
    check_query(query)?;
    let stream = match format.format.direct_copy() {
        Some(copy) => first_then_rest(db.copy_query(query, copy, timeout_ms).await?).await?,
        None => {
            let columns = db.describe_query(query, timeout_ms).await?;
            let select = if format.format.shape() == Shape::Bulk {
                if !columns.iter().any(|c| c.name == "id") {
                    return Err(Error::BadRequest(format!(
                        "{} needs an `id` column in the query",
                        format.name()
                    )));
                }
                crate::storage::read::keyed_rows_sql(query)
            } else {
                query.to_string()
            };
            let names = columns.into_iter().map(|c| c.name).collect();
            let encoder = format.encoder(names, target);
            let header = encoder.header();
            let lines = first_then_rest(by_line(
                db.copy_query(&select, CopyFormat::Text, timeout_ms).await?,
                move |row| encoder.line(row).unwrap_or_default(),
            ))
            .await?;
            match header {
                Some(mut h) => {
                    h.push(b'\n');
                    futures::stream::once(async move { Ok(Bytes::from(h)) })
                        .chain(lines)
                        .boxed()
                }
                None => lines,
            }
        }
    };
    Ok(measured(stream, "dump-sql", None))
}

/// Turns a stream of COPY text rows into a stream of `each(row)` lines. Rows end with a
/// newline (COPY escapes newlines inside values), wherever the chunks are cut.
fn by_line(stream: ByteStream, each: impl Fn(&[u8]) -> Vec<u8> + Send + 'static) -> ByteStream {
    let mut pending: Vec<u8> = Vec::new();
    stream
        .map(move |chunk| {
            let chunk = chunk?;
            pending.extend_from_slice(&chunk);
            let Some(last) = pending.iter().rposition(|b| *b == b'\n') else {
                return Ok(Bytes::new());
            };
            let mut out = Vec::with_capacity(pending.len() * 2);
            for row in pending[..last].split(|b| *b == b'\n') {
                out.extend_from_slice(&each(row));
                out.push(b'\n');
            }
            pending.drain(..=last);
            Ok(Bytes::from(out))
        })
        .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.is_empty())))
        .boxed()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_stream_records_its_rows_and_bytes_once_it_is_dropped() {
        let stream: ByteStream = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n")),
            Ok(Bytes::from_static(b"{\"a\":3}\n")),
        ])
        .boxed();
        let mut counted = measured(stream, "test-measured", Some("Basic"));
        let mut got = 0;
        while let Some(chunk) = futures::executor::block_on(counted.next()) {
            got += chunk.unwrap().len();
        }
        let line = |name: &str| {
            crate::metrics::prometheus()
                .lines()
                .find(|l| l.starts_with(name) && l.contains("operation=\"test-measured\""))
                .map(str::to_string)
        };
        assert_eq!(
            line("siphon_rows_total"),
            None,
            "recorded at the end, not before"
        );
        drop(counted);
        assert!(
            line("siphon_rows_total").is_some_and(|l| l.ends_with("resource_type=\"Basic\"} 3")),
            "{:?}",
            line("siphon_rows_total")
        );
        assert!(line("siphon_bytes_out_total").is_some_and(|l| l.ends_with(&format!("}} {got}"))));
    }

    #[test]
    fn only_one_read_statement_passes_the_gate() {
        for ok in [
            "select 1",
            "  SELECT id FROM patient",
            "with x as (select 1) select * from x",
            "values (1)",
            "table patient",
        ] {
            assert!(check_query(ok).is_ok(), "{ok}");
        }
        for (bad, forbidden) in [
            ("delete from patient", false),
            ("insert into patient values (1)", false),
            ("copy patient to program 'x'", false),
            ("", false),
            ("select set_config('role', 'postgres', false)", true),
            ("select pg_read_file('/etc/passwd')", true),
            ("select * from dblink('x', 'y')", true),
            ("SELECT current_setting('x')", true),
        ] {
            let e = check_query(bad).unwrap_err();
            if forbidden {
                assert!(matches!(e, Error::Forbidden(_)), "{bad}: {e:?}");
            } else {
                assert!(matches!(e, Error::BadRequest(_)), "{bad}: {e:?}");
            }
        }
    }

    #[tokio::test]
    async fn gzip_output_decompresses_to_the_input() {
        use std::io::Read;
        let input: ByteStream = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"line 1\n")),
            Ok(Bytes::from_static(b"line 2\n")),
        ])
        .boxed();
        let parts: Vec<Bytes> = gzip(input).map(|r| r.unwrap()).collect().await;
        let all: Vec<u8> = parts.concat();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "line 1\nline 2\n");
    }
}
