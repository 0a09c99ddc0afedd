//! `jsonl`: JSON Lines (jsonlines.org), ingestr's and dlt's name for ndjson: the same
//! lines as `ndjson` under the `.jsonl` extension and `application/jsonl`.

use super::{ndjson, CopyFormat, Encoded, Exporter, FileFormat, Shape};

pub struct Jsonl;

impl FileFormat for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn media_types(&self) -> &'static [&'static str] {
        &["application/jsonl"]
    }
    fn extension(&self) -> &'static str {
        "jsonl"
    }
    fn content_type(&self, _: Exporter) -> &'static str {
        "application/jsonl"
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
        ndjson::json_line(row)
    }
}
