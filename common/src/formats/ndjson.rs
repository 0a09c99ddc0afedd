//! `ndjson`: one JSON object per line. A resource table's rows are resources exactly as
//! `$dump` writes them (read by binary COPY, no row reshaped in Rust); a query's rows are
//! objects of their columns (`row_to_json`).

use super::{unescape, CopyFormat, Encoded, Exporter, FileFormat, Shape};

pub struct Ndjson;

impl FileFormat for Ndjson {
    fn name(&self) -> &'static str {
        "ndjson"
    }
    fn media_types(&self) -> &'static [&'static str] {
        &["application/fhir+ndjson", "application/ndjson"]
    }
    fn extension(&self) -> &'static str {
        "ndjson"
    }
    /// Each exporter's, as it has always answered: FHIR's for `$export`, the common
    /// `application/x-ndjson` for files in a bucket.
    fn content_type(&self, exporter: Exporter) -> &'static str {
        match exporter {
            Exporter::DumpSql => "application/ndjson",
            Exporter::Bucket => "application/x-ndjson",
            Exporter::Export => "application/fhir+ndjson",
        }
    }
    fn written_by(&self, _: Exporter) -> bool {
        true
    }
    fn shape(&self) -> Shape {
        Shape::Json
    }
    fn direct_copy(&self) -> Option<CopyFormat> {
        Some(CopyFormat::JsonRows)
    }
    fn encode(&self, row: &[u8], _: &[String], _: &str) -> Encoded {
        json_line(row)
    }
}

/// The one JSON field of a text row, unescaped.
pub(super) fn json_line(row: &[u8]) -> Encoded {
    Encoded::Line(unescape(row).unwrap_or_default().into_bytes())
}
