//! `csv`: RFC 4180, a header line first in every file; NULL is an empty field, an empty
//! string `""`. `$dump-sql` has COPY write it (`FORMAT csv, HEADER true`).

use super::{fields, CopyFormat, Encoded, Exporter, FileFormat, Shape};

pub struct Csv;

impl FileFormat for Csv {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn extension(&self) -> &'static str {
        "csv"
    }
    fn content_type(&self, _: Exporter) -> &'static str {
        "text/csv"
    }
    fn written_by(&self, exporter: Exporter) -> bool {
        exporter != Exporter::Export
    }
    fn shape(&self) -> Shape {
        Shape::Columns
    }
    fn direct_copy(&self) -> Option<CopyFormat> {
        Some(CopyFormat::CsvWithHeader)
    }
    fn header(&self, columns: &[String]) -> Option<Vec<u8>> {
        Some(csv_line(
            &columns.iter().map(|c| Some(c.clone())).collect::<Vec<_>>(),
        ))
    }
    fn encode(&self, row: &[u8], _: &[String], _: &str) -> Encoded {
        Encoded::Line(csv_line(&fields(row)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
