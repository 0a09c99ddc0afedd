//! The file formats siphon writes, one file each, and the registry that names them.
//!
//! `$dump-sql`, dump-to-bucket and `$export` find a format here by the name a request
//! gives ([`Chosen::parse`]); what it is called, its extension and content type, what a
//! dump reads for it and how a row becomes its line all come from its [`FileFormat`].
//!
//! | format | a row becomes | `$dump-sql` | dump-to-bucket | `$export` |
//! |---|---|---|---|---|
//! | `ndjson` | one JSON object (a resource exactly as `$dump` writes it) | yes | yes (default) | yes (default) |
//! | `jsonl` | the same, named JSON Lines (`.jsonl`, ingestr's and dlt's name) | yes | yes | yes |
//! | `csv` | RFC 4180, a header line first in every file; NULL empty, an empty string `""` | yes | yes | |
//! | `tsv` | Postgres' COPY text format, reversible with `COPY FROM` | yes (default) | yes | |
//! | `parquet` | typed values (`sinks::parquet`) | | yes | yes |
//! | `sql` | an `INSERT` statement per row into `table` | yes | yes | |
//! | `elastic-bulk` | Elasticsearch/OpenSearch `_bulk`: an index action, then the document | yes | yes | |
//!
//! Adding a format: a file here with a unit struct implementing [`FileFormat`], one line
//! in [`REGISTRY`], and its tests.

mod copy_text;
mod csv;
mod elastic_bulk;
mod jsonl;
mod ndjson;
mod parquet;
mod sql;
mod tsv;

pub use copy_text::{fields, split_row, unescape};
pub use csv::csv_line;
pub use elastic_bulk::bulk_action;
pub use parquet::MEDIA_TYPE as PARQUET_MEDIA_TYPE;

use crate::error::{Error, Result};
pub use crate::storage::read::{CopyFormat, Shape};

/// Every format, in the order error messages list them.
pub static REGISTRY: &[&dyn FileFormat] = &[
    &ndjson::Ndjson,
    &jsonl::Jsonl,
    &csv::Csv,
    &tsv::Tsv,
    &parquet::Parquet,
    &sql::Sql,
    &elastic_bulk::ElasticBulk,
];

/// What writes the file: each takes its own set of formats, and names some differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exporter {
    /// `POST /$dump-sql`: a query's rows streamed in the answer.
    DumpSql,
    /// dump-to-bucket: tables or a query as files in a bucket.
    Bucket,
    /// FHIR Bulk Data `$export` (`_outputFormat`).
    Export,
}

impl Exporter {
    /// The format a request that names none gets.
    fn default_format(self) -> &'static str {
        match self {
            Exporter::DumpSql => "tsv",
            Exporter::Bucket | Exporter::Export => "ndjson",
        }
    }
}

/// What a format does with the request's `table`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing.
    None,
    /// It is required: the table the file's statements write (`sql`).
    Table,
    /// It names the index, by default the dumped table's name (`elastic-bulk`).
    Index,
}

/// What one row became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// A line of a text file (without its newline).
    Line(Vec<u8>),
    /// Values of a typed file (Parquet).
    Values(Vec<Option<String>>),
}

/// One file format.
pub trait FileFormat: Sync {
    /// The name a request asks for it by (`format`, `_outputFormat`).
    fn name(&self) -> &'static str;
    /// Further names `$export`'s `_outputFormat` accepts (media types).
    fn media_types(&self) -> &'static [&'static str] {
        &[]
    }
    /// The file extension (`{ext}`), before any `.gz`.
    fn extension(&self) -> &'static str;
    /// The `Content-Type` of a file or a response written by `exporter`.
    fn content_type(&self, exporter: Exporter) -> &'static str;
    /// Whether `exporter` writes it.
    fn written_by(&self, exporter: Exporter) -> bool;
    /// Why the file is never gzip-compressed as a whole, if it is not.
    fn gzip_refused(&self) -> Option<&'static str> {
        None
    }
    /// Rows become typed values for a columnar writer rather than lines.
    fn typed(&self) -> bool {
        false
    }
    /// What it does with `table`.
    fn target(&self) -> Target {
        Target::None
    }
    /// What a dump reads of each row (after its key).
    fn shape(&self) -> Shape;
    /// `$dump-sql`: when COPY writes the format itself, how (no row passes through Rust).
    fn direct_copy(&self) -> Option<CopyFormat> {
        None
    }
    /// The line every file starts with, given the columns.
    fn header(&self, _columns: &[String]) -> Option<Vec<u8>> {
        None
    }
    /// One row: `fields` is what follows the key in a COPY text row (escaped), `columns`
    /// its column names, `target` the table or index.
    fn encode(&self, fields: &[u8], columns: &[String], target: &str) -> Encoded;
}

/// A format with what the request gave it: the table or index it writes.
#[derive(Clone, Copy)]
pub struct Chosen {
    pub format: &'static dyn FileFormat,
    pub exporter: Exporter,
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.format.name())
    }
}

impl PartialEq for Chosen {
    fn eq(&self, other: &Self) -> bool {
        self.format.name() == other.format.name() && self.exporter == other.exporter
    }
}

impl Chosen {
    /// The format `name` (or the exporter's default) if `exporter` writes it; else a
    /// 400 listing the ones it does.
    pub fn parse(exporter: Exporter, name: Option<&str>) -> Result<Self> {
        let name = name.unwrap_or(exporter.default_format());
        match find(exporter, name) {
            Some(format) => Ok(Chosen { format, exporter }),
            None => Err(Error::BadRequest(format!(
                "unknown format {name:?}: use {}",
                names(exporter)
            ))),
        }
    }

    /// The format `name` names, if `exporter` writes it, by name or media type.
    pub fn find(exporter: Exporter, name: &str) -> Option<Self> {
        find(exporter, name).map(|format| Chosen { format, exporter })
    }

    pub fn name(&self) -> &'static str {
        self.format.name()
    }

    pub fn extension(&self) -> &'static str {
        self.format.extension()
    }

    pub fn content_type(&self) -> &'static str {
        self.format.content_type(self.exporter)
    }

    /// Typed values rather than lines (Parquet).
    pub fn typed(&self) -> bool {
        self.format.typed()
    }

    /// The table or index the rows are written to: `table` when given (checked to be a
    /// plain name), else for an index `default_index`. `Ok(None)` when the format takes
    /// none.
    pub fn target(&self, table: Option<&str>, default_index: &str) -> Result<Option<String>> {
        match self.format.target() {
            Target::None => Ok(None),
            Target::Table => match table {
                Some(t) => check_name(t).map(Some),
                None => Err(Error::BadRequest(format!(
                    "format {} needs `table`: the table the INSERT statements write",
                    self.name()
                ))),
            },
            Target::Index => check_name(table.unwrap_or(default_index)).map(Some),
        }
    }

    /// Checks `gzip` against the format.
    pub fn check_gzip(&self, gzip: bool) -> Result<()> {
        match self.format.gzip_refused() {
            Some(why) if gzip => Err(Error::BadRequest(format!(
                "gzip is for the text formats: {why}"
            ))),
            _ => Ok(()),
        }
    }

    /// An encoder of rows with `columns` into `target`.
    pub fn encoder(&self, columns: Vec<String>, target: Option<String>) -> Encoder {
        Encoder {
            format: self.format,
            columns,
            target: target.unwrap_or_default(),
        }
    }
}

fn find(exporter: Exporter, name: &str) -> Option<&'static dyn FileFormat> {
    REGISTRY
        .iter()
        .copied()
        .filter(|f| f.written_by(exporter))
        .find(|f| {
            f.name() == name || (exporter == Exporter::Export && f.media_types().contains(&name))
        })
}

/// The names `exporter` takes, for messages: `a, b or c`.
pub fn names(exporter: Exporter) -> String {
    let all: Vec<&str> = REGISTRY
        .iter()
        .filter(|f| f.written_by(exporter))
        .map(|f| f.name())
        .collect();
    match all.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Every name `exporter` takes, media types first, for messages and documentation:
/// `application/fhir+ndjson, application/ndjson or ndjson; ...`, one group per format.
pub fn accepted(exporter: Exporter) -> String {
    REGISTRY
        .iter()
        .filter(|f| f.written_by(exporter))
        .map(|f| {
            let mut all: Vec<&str> = Vec::new();
            if exporter == Exporter::Export {
                all.extend(f.media_types());
            }
            all.push(f.name());
            match all.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns the rows of one file into its lines or values.
#[derive(Clone)]
pub struct Encoder {
    format: &'static dyn FileFormat,
    columns: Vec<String>,
    target: String,
}

impl Encoder {
    /// The line every file starts with (the CSV header).
    pub fn header(&self) -> Option<Vec<u8>> {
        self.format.header(&self.columns)
    }

    /// One COPY text row's fields (after its key).
    pub fn encode(&self, fields: &[u8]) -> Encoded {
        self.format.encode(fields, &self.columns, &self.target)
    }

    /// The line of a text row (a typed format's values are not lines: `None`).
    pub fn line(&self, fields: &[u8]) -> Option<Vec<u8>> {
        match self.encode(fields) {
            Encoded::Line(l) => Some(l),
            Encoded::Values(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_exporter_names_its_own_formats() {
        assert_eq!(
            names(Exporter::Bucket),
            "ndjson, jsonl, csv, tsv, parquet, sql or elastic-bulk"
        );
        assert_eq!(
            names(Exporter::DumpSql),
            "ndjson, jsonl, csv, tsv, sql or elastic-bulk"
        );
        assert_eq!(names(Exporter::Export), "ndjson, jsonl or parquet");
        assert_eq!(
            accepted(Exporter::Export),
            "application/fhir+ndjson, application/ndjson or ndjson; application/jsonl or jsonl; \
             application/vnd.apache.parquet or parquet"
        );
    }

    #[test]
    fn formats_parse_and_need_what_they_need() {
        let bucket = |n: Option<&str>| Chosen::parse(Exporter::Bucket, n);
        assert_eq!(bucket(None).unwrap().name(), "ndjson");
        assert_eq!(
            Chosen::parse(Exporter::DumpSql, None).unwrap().name(),
            "tsv"
        );
        assert_eq!(bucket(Some("parquet")).unwrap().extension(), "parquet");
        let sql = bucket(Some("sql")).unwrap();
        assert!(matches!(sql.target(None, "x"), Err(Error::BadRequest(m)) if m.contains("table")));
        assert!(sql.target(Some("a; drop"), "x").is_err());
        assert_eq!(
            sql.target(Some("copy_of"), "x").unwrap().as_deref(),
            Some("copy_of")
        );
        let bulk = bucket(Some("elastic-bulk")).unwrap();
        assert_eq!(
            bulk.target(None, "patient").unwrap().as_deref(),
            Some("patient")
        );
        assert_eq!(
            bucket(Some("csv")).unwrap().target(Some("t"), "x").unwrap(),
            None
        );
        assert!(matches!(bucket(Some("xml")), Err(Error::BadRequest(m)) if m.contains("xml")));
        assert!(matches!(
            Chosen::parse(Exporter::DumpSql, Some("parquet")),
            Err(Error::BadRequest(m)) if m.contains("use ndjson, jsonl, csv, tsv, sql or elastic-bulk")
        ));
        assert!(bucket(Some("parquet")).unwrap().check_gzip(true).is_err());
        assert!(bucket(Some("parquet")).unwrap().typed());
        assert!(!bucket(Some("csv")).unwrap().typed());
        assert!(bucket(Some("csv")).unwrap().check_gzip(true).is_ok());
    }

    #[test]
    fn export_takes_media_types_and_the_others_do_not() {
        for (name, want) in [
            ("application/fhir+ndjson", "ndjson"),
            ("application/ndjson", "ndjson"),
            ("ndjson", "ndjson"),
            ("application/jsonl", "jsonl"),
            ("jsonl", "jsonl"),
            ("application/vnd.apache.parquet", "parquet"),
            ("parquet", "parquet"),
        ] {
            assert_eq!(
                Chosen::find(Exporter::Export, name).map(|c| c.name()),
                Some(want),
                "{name}"
            );
        }
        assert!(Chosen::find(Exporter::Export, "csv").is_none());
        assert!(Chosen::find(Exporter::Bucket, "application/ndjson").is_none());
    }

    #[test]
    fn content_types_are_what_each_exporter_always_sent() {
        let ct = |e, n| Chosen::parse(e, Some(n)).unwrap().content_type();
        assert_eq!(ct(Exporter::DumpSql, "ndjson"), "application/ndjson");
        assert_eq!(ct(Exporter::Bucket, "ndjson"), "application/x-ndjson");
        assert_eq!(ct(Exporter::Export, "ndjson"), "application/fhir+ndjson");
        assert_eq!(
            ct(Exporter::DumpSql, "elastic-bulk"),
            "application/x-ndjson"
        );
        assert_eq!(ct(Exporter::Bucket, "jsonl"), "application/jsonl");
        assert_eq!(ct(Exporter::DumpSql, "csv"), "text/csv");
        assert_eq!(
            ct(Exporter::Bucket, "parquet"),
            "application/vnd.apache.parquet"
        );
    }

    #[test]
    fn rows_encode_as_each_format_says() {
        let row = b"x\t\\N\t{\"a\": \"t\\\\tb\"}";
        let cols = vec!["s".to_string(), "n".into(), "doc".into()];
        let line = |n: &str, target: Option<&str>| {
            let c = Chosen::parse(Exporter::Bucket, Some(n)).unwrap();
            c.encoder(cols.clone(), target.map(str::to_string))
                .line(row)
        };
        assert_eq!(line("tsv", None).unwrap(), row.to_vec());
        assert_eq!(
            line("csv", None).unwrap(),
            b"x,,\"{\"\"a\"\": \"\"t\\tb\"\"}\"".to_vec()
        );
        // The statement itself is storage::script's (tested there): the row's fields,
        // unescaped, go to it with the table and columns.
        assert_eq!(
            line("sql", Some("t")).unwrap(),
            crate::storage::script::sql_insert(
                "t",
                &cols,
                &[Some("x".into()), None, Some("{\"a\": \"t\\tb\"}".into())]
            )
        );
        let json = |n: &str| {
            Chosen::parse(Exporter::Bucket, Some(n))
                .unwrap()
                .encoder(vec![], None)
                .line(b"{\"a\": \"t\\\\tb\"}")
                .unwrap()
        };
        assert_eq!(json("ndjson"), b"{\"a\": \"t\\tb\"}".to_vec());
        assert_eq!(json("jsonl"), json("ndjson"));
        let bulk = Chosen::parse(Exporter::Bucket, Some("elastic-bulk"))
            .unwrap()
            .encoder(vec![], Some("i".into()))
            .line(b"p-1\t{\"a\": 1}")
            .unwrap();
        assert_eq!(
            String::from_utf8(bulk).unwrap(),
            "{\"index\":{\"_id\":\"p-1\",\"_index\":\"i\"}}\n{\"a\": 1}"
        );
        let parquet = Chosen::parse(Exporter::Bucket, Some("parquet"))
            .unwrap()
            .encoder(cols.clone(), None);
        assert_eq!(parquet.line(row), None);
        assert_eq!(
            parquet.encode(row),
            Encoded::Values(vec![
                Some("x".into()),
                None,
                Some("{\"a\": \"t\\tb\"}".into())
            ])
        );
        let csv = Chosen::parse(Exporter::Bucket, Some("csv"))
            .unwrap()
            .encoder(cols, None);
        assert_eq!(csv.header().unwrap(), b"s,n,doc".to_vec());
    }
}
