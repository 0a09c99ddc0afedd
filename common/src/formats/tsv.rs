//! `tsv`: Postgres' COPY text format (`\t`, `\n`, `\\` escaped, NULL `\N`), reversible
//! with `COPY FROM`: the rows as COPY wrote them.

use super::{CopyFormat, Encoded, Exporter, FileFormat, Shape};

pub struct Tsv;

impl FileFormat for Tsv {
    fn name(&self) -> &'static str {
        "tsv"
    }
    fn extension(&self) -> &'static str {
        "tsv"
    }
    fn content_type(&self, _: Exporter) -> &'static str {
        "text/tab-separated-values"
    }
    fn written_by(&self, exporter: Exporter) -> bool {
        exporter != Exporter::Export
    }
    fn shape(&self) -> Shape {
        Shape::Columns
    }
    fn direct_copy(&self) -> Option<CopyFormat> {
        Some(CopyFormat::Text)
    }
    fn encode(&self, row: &[u8], _: &[String], _: &str) -> Encoded {
        Encoded::Line(row.to_vec())
    }
}
