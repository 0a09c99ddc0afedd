//! `parquet`: typed columns (`sinks::parquet` writes the file: row groups, Snappy inside,
//! so never gzip-compressed as a whole). `$export` names it by its IANA media type too.

use super::{fields, Encoded, Exporter, FileFormat, Shape};

pub struct Parquet;

/// The media type of Parquet files (IANA, 2024), as `_outputFormat` names them.
pub const MEDIA_TYPE: &str = "application/vnd.apache.parquet";

impl FileFormat for Parquet {
    fn name(&self) -> &'static str {
        "parquet"
    }
    fn media_types(&self) -> &'static [&'static str] {
        &[MEDIA_TYPE]
    }
    fn extension(&self) -> &'static str {
        "parquet"
    }
    fn content_type(&self, _: Exporter) -> &'static str {
        MEDIA_TYPE
    }
    fn written_by(&self, exporter: Exporter) -> bool {
        exporter != Exporter::DumpSql
    }
    fn gzip_refused(&self) -> Option<&'static str> {
        Some("Parquet files are compressed inside (Snappy)")
    }
    fn typed(&self) -> bool {
        true
    }
    fn shape(&self) -> Shape {
        Shape::Columns
    }
    fn encode(&self, row: &[u8], _: &[String], _: &str) -> Encoded {
        Encoded::Values(fields(row))
    }
}
