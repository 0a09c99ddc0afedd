//! The text formats of dump-to-bucket (and of `$dump-sql`'s `sql` and `elastic-bulk`):
//! rows read from `COPY ... TO STDOUT` in Postgres' text format, turned into lines.
//!
//! | format | a row becomes |
//! |---|---|
//! | `ndjson` | the row as one JSON object (a resource exactly as `$dump` writes it) |
//! | `csv` | RFC 4180, a header line first in every file; NULL is an empty field, an empty string `""` |
//! | `tsv` | Postgres' COPY text format (`\t`, `\n`, `\\` escaped, NULL `\N`), reversible with `COPY FROM` |
//! | `sql` | an `INSERT` statement per row, every value a quoted literal (`storage::script`) |
//! | `elastic-bulk` | Elasticsearch/OpenSearch `_bulk`: `{"index":{"_index":...,"_id":...}}` then the document |

use serde_json::json;

use crate::error::{Error, Result};

/// A file format of dump-to-bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    Tsv,
    Parquet,
    /// INSERT statements for `table`.
    Sql {
        table: String,
    },
    /// `_bulk` actions into `index`.
    ElasticBulk {
        index: String,
    },
}

impl Format {
    /// `format` (default `ndjson`); `sql` needs `table`, `elastic-bulk` takes `table` as
    /// its index (default `default_index`).
    pub fn parse(format: Option<&str>, table: Option<&str>, default_index: &str) -> Result<Self> {
        Ok(match format.unwrap_or("ndjson") {
            "ndjson" => Format::Ndjson,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "parquet" => Format::Parquet,
            "sql" => Format::Sql {
                table: check_name(table.ok_or_else(|| {
                    Error::BadRequest(
                        "format sql needs `table`: the table the INSERT statements write".into(),
                    )
                })?)?,
            },
            "elastic-bulk" => Format::ElasticBulk {
                index: check_name(table.unwrap_or(default_index))?,
            },
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown format {other:?}: use ndjson, csv, tsv, parquet, sql or elastic-bulk"
                )))
            }
        })
    }

    /// The file extension (`{ext}`), before any `.gz`.
    pub fn ext(&self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Parquet => "parquet",
            Format::Sql { .. } => "sql",
            Format::ElasticBulk { .. } => "bulk.ndjson",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Ndjson | Format::ElasticBulk { .. } => "application/x-ndjson",
            Format::Csv => "text/csv",
            Format::Tsv => "text/tab-separated-values",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Sql { .. } => "application/sql",
        }
    }

    /// The name it is asked for by.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Parquet => "parquet",
            Format::Sql { .. } => "sql",
            Format::ElasticBulk { .. } => "elastic-bulk",
        }
    }
}

/// A table or index name: letters, digits, `_`, `-`, `.`; 1-63 characters.
fn check_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::BadRequest(format!(
            "table {name:?} is not a plain name (letters, digits, _ - ., starting with a letter)"
        )))
    }
}

/// One field of a COPY text row: `None` for NULL (`\N`).
pub fn unescape(field: &[u8]) -> Option<String> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (next - b'0') as u32;
                for _ in 0..2 {
                    match field.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Splits a COPY text row (without its newline) into its key and its other fields, raw.
pub fn split_row(row: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'\t', row) {
        Some(i) => (&row[..i], &row[i + 1..]),
        None => (row, b""),
    }
}

/// The fields of a COPY text row, unescaped.
pub fn fields(rest: &[u8]) -> Vec<Option<String>> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(|b| *b == b'\t').map(unescape).collect()
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF, or is empty
/// (so that it differs from NULL, written as nothing).
pub fn csv_field(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(v) = value else { return };
    let quote = v.is_empty()
        || v.contains([',', '"', '\r', '\n'])
        || v.starts_with(' ')
        || v.ends_with(' ');
    if quote {
        out.push(b'"');
        for b in v.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(v.as_bytes());
    }
}

/// A CSV line of `values` (without its line ending).
pub fn csv_line(values: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(&mut out, v.as_deref());
    }
    out
}

/// The two lines of one `_bulk` index action (without the final newline).
pub fn bulk_action(index: &str, id: &str, document: &str) -> Vec<u8> {
    let mut out = json!({"index": {"_index": index, "_id": id}})
        .to_string()
        .into_bytes();
    out.push(b'\n');
    out.extend_from_slice(document.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_unescape() {
        assert_eq!(unescape(b"\\N"), None);
        assert_eq!(unescape(b"a\\tb\\nc\\\\d\\re").unwrap(), "a\tb\nc\\d\re");
        assert_eq!(unescape(br#"{"x": "q\\"z"}"#).unwrap(), r#"{"x": "q\"z"}"#);
        assert_eq!(unescape(b"\\101\\x42").unwrap(), "AB");
        assert_eq!(unescape("é".as_bytes()).unwrap(), "é");
        let (key, rest) = split_row(b"p-1\tx\t\\N\t");
        assert_eq!(key, b"p-1");
        assert_eq!(fields(rest), vec![Some("x".into()), None, Some("".into())]);
    }

    #[test]
    fn csv_quotes_what_it_must_and_tells_null_from_empty() {
        let line = csv_line(&[
            Some("plain".into()),
            Some("a,b".into()),
            Some("say \"hi\"".into()),
            Some("line\nbreak".into()),
            None,
            Some("".into()),
        ]);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",,\"\""
        );
    }

    #[test]
    fn bulk_lines() {
        let b = bulk_action("patients", "p\"1", r#"{"a":1}"#);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "{\"index\":{\"_id\":\"p\\\"1\",\"_index\":\"patients\"}}\n{\"a\":1}"
        );
    }

    #[test]
    fn formats_parse_and_need_what_they_need() {
        assert_eq!(Format::parse(None, None, "x").unwrap(), Format::Ndjson);
        assert_eq!(
            Format::parse(Some("parquet"), None, "x").unwrap().ext(),
            "parquet"
        );
        assert!(
            matches!(Format::parse(Some("sql"), None, "x"), Err(Error::BadRequest(m)) if m.contains("table"))
        );
        assert!(Format::parse(Some("sql"), Some("a; drop"), "x").is_err());
        assert_eq!(
            Format::parse(Some("elastic-bulk"), None, "patient").unwrap(),
            Format::ElasticBulk {
                index: "patient".into()
            }
        );
        assert!(
            matches!(Format::parse(Some("xml"), None, "x"), Err(Error::BadRequest(m)) if m.contains("xml"))
        );
    }
}
