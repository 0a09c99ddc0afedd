//! `sql`: a script of `INSERT INTO table (columns) VALUES (...);`, one per row, every value
//! a quoted literal (NULL as NULL), for `psql` to run into an existing table. `table` is
//! required. The quoting is `storage::script`'s, with the rest of siphon's SQL.

use super::{fields, Encoded, Exporter, FileFormat, Shape, Target};
use crate::storage::script;

pub struct Sql;

impl FileFormat for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }
    fn extension(&self) -> &'static str {
        "sql"
    }
    fn content_type(&self, _: Exporter) -> &'static str {
        "application/sql"
    }
    fn written_by(&self, exporter: Exporter) -> bool {
        exporter != Exporter::Export
    }
    fn target(&self) -> Target {
        Target::Table
    }
    fn shape(&self) -> Shape {
        Shape::Columns
    }
    fn encode(&self, row: &[u8], columns: &[String], table: &str) -> Encoded {
        Encoded::Line(script::sql_insert(table, columns, &fields(row)))
    }
}
