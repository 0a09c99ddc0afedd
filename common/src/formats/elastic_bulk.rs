//! `elastic-bulk`: the body of an Elasticsearch/OpenSearch `_bulk` request: for each row
//! an `index` action with `_index` and `_id` (the row's `id`), then the row as a JSON
//! object. `table` names the index (by default the dumped table's name, or `query`).

use serde_json::json;

use super::{fields, Encoded, Exporter, FileFormat, Shape, Target};

pub struct ElasticBulk;

impl FileFormat for ElasticBulk {
    fn name(&self) -> &'static str {
        "elastic-bulk"
    }
    fn extension(&self) -> &'static str {
        "bulk.ndjson"
    }
    /// What Elasticsearch's `_bulk` endpoint takes.
    fn content_type(&self, _: Exporter) -> &'static str {
        "application/x-ndjson"
    }
    fn written_by(&self, exporter: Exporter) -> bool {
        exporter != Exporter::Export
    }
    fn target(&self) -> Target {
        Target::Index
    }
    fn shape(&self) -> Shape {
        Shape::Bulk
    }
    /// The row is `id, document`.
    fn encode(&self, row: &[u8], _: &[String], index: &str) -> Encoded {
        let f = fields(row);
        let id = f.first().cloned().flatten().unwrap_or_default();
        let doc = f.get(1).cloned().flatten().unwrap_or_default();
        Encoded::Line(bulk_action(index, &id, &doc))
    }
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
    fn bulk_lines() {
        let b = bulk_action("patients", "p\"1", r#"{"a":1}"#);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "{\"index\":{\"_id\":\"p\\\"1\",\"_index\":\"patients\"}}\n{\"a\":1}"
        );
    }
}
