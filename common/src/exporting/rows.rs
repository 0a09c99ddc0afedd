//! What a task reads and what each row becomes: for `$export`, resources as `$dump`
//! writes them (binary COPY); for dump-to-bucket, rows in Postgres' text format turned
//! into the format's lines, or into typed Parquet values.

use bytes::Bytes;

use super::spec::ExportSpec;
use crate::error::{Error, Result};
use crate::model::export::{Column, ColumnKind};
use crate::sinks::formats::{self, Format};
use crate::storage::read::{self, KeyedRows, Shape, Slice, TextRows};
use crate::storage::script;
use crate::storage::Db;

/// One row: its key (an id, `Type/id`, or a query row number) and what it became.
pub struct Row {
    pub key: Bytes,
    pub data: RowData,
}

pub enum RowData {
    /// A line of a text file (no newline).
    Line(Vec<u8>),
    /// Values for a typed file.
    Values(Vec<Option<String>>),
}

/// How a task's rows are read and shaped.
pub struct Reading {
    pub select: String,
    /// Binary COPY of `(key, jsonb)` (the `$export` path) rather than text COPY.
    pub binary: bool,
    pub output: Output,
}

/// What the rows become.
pub enum Output {
    /// Lines: JSON as read (binary), or formatted from text rows.
    Lines(Lines),
    /// Typed values for Parquet, with the columns.
    Parquet(Vec<Column>),
}

/// How text rows become lines.
pub enum Lines {
    /// The binary path: the JSON as Postgres wrote it.
    Json,
    /// Text path, one JSON field.
    JsonText,
    Csv {
        columns: Vec<String>,
    },
    Tsv,
    Sql {
        table: String,
        columns: Vec<String>,
    },
    Bulk {
        index: String,
    },
}

impl Lines {
    /// The line each file starts with (the CSV header).
    pub fn header(&self) -> Option<Vec<u8>> {
        match self {
            Lines::Csv { columns } => Some(formats::csv_line(
                &columns.iter().map(|c| Some(c.clone())).collect::<Vec<_>>(),
            )),
            _ => None,
        }
    }
}

/// The columns of a resource table in a dump.
pub fn table_columns() -> Vec<Column> {
    read::TABLE_COLUMNS
        .iter()
        .map(|n| Column {
            name: n.to_string(),
            kind: match *n {
                "ts" => ColumnKind::TimestampUtc,
                "txid" => ColumnKind::Int64,
                _ => ColumnKind::Text,
            },
        })
        .collect()
}

/// The reading of a dump-to-bucket task: of `slice` of a table, or of the materialized
/// query `table` (its `columns`) after row `after`.
pub fn dump_reading(
    spec: &ExportSpec,
    slice: Option<Slice>,
    query: Option<(&str, &[Column], i64)>,
) -> Result<Reading> {
    let format = Format::parse(spec.format.as_deref(), spec.table.as_deref(), "dump")?;
    let columns: Vec<Column> = match &query {
        Some((_, cols, _)) => cols.to_vec(),
        None => table_columns(),
    };
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let (shape, output, binary) = match &format {
        Format::Ndjson if query.is_none() => (Shape::Json, Output::Lines(Lines::Json), true),
        Format::Ndjson => (Shape::Json, Output::Lines(Lines::JsonText), false),
        Format::Csv => (
            Shape::Columns,
            Output::Lines(Lines::Csv {
                columns: names.clone(),
            }),
            false,
        ),
        Format::Tsv => (Shape::Columns, Output::Lines(Lines::Tsv), false),
        Format::Sql { table } => (
            Shape::Columns,
            Output::Lines(Lines::Sql {
                table: table.clone(),
                columns: names.clone(),
            }),
            false,
        ),
        Format::ElasticBulk { index } => (
            Shape::Bulk,
            Output::Lines(Lines::Bulk {
                index: index.clone(),
            }),
            false,
        ),
        Format::Parquet => (Shape::Columns, Output::Parquet(columns.clone()), false),
    };
    let select = match (slice, query) {
        (Some(slice), _) if binary => read::slice_sql(&slice)?,
        (Some(slice), _) => read::table_rows_sql(&slice, shape)?,
        (None, Some((table, _, after))) => {
            let id = names
                .iter()
                .find(|n| n.as_str() == "id")
                .map(String::as_str);
            if shape == Shape::Bulk && id.is_none() {
                return Err(Error::BadRequest(
                    "elastic-bulk needs an `id` column in the query".into(),
                ));
            }
            read::query_rows_sql(table, &names, after, shape, id)
        }
        (None, None) => {
            return Err(Error::Internal(
                "a dump task reads a table or a query".into(),
            ))
        }
    };
    Ok(Reading {
        select,
        binary,
        output,
    })
}

/// A task's open row stream.
pub enum Rows {
    Keyed(KeyedRows),
    Text(TextRows, Output),
}

impl Rows {
    pub async fn open(db: &Db, reading: Reading) -> Result<Self> {
        Ok(if reading.binary {
            Rows::Keyed(db.copy_keyed_rows(&reading.select).await?)
        } else {
            Rows::Text(db.copy_text_rows(&reading.select).await?, reading.output)
        })
    }

    /// The next rows, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<Row>>> {
        match self {
            Rows::Keyed(rows) => Ok(rows.next_rows().await?.map(|batch| {
                batch
                    .into_iter()
                    .map(|(key, json)| Row {
                        key,
                        data: RowData::Line(json.to_vec()),
                    })
                    .collect()
            })),
            Rows::Text(rows, output) => {
                let Some(batch) = rows.next_rows().await? else {
                    return Ok(None);
                };
                Ok(Some(
                    batch.into_iter().map(|raw| shape(&raw, output)).collect(),
                ))
            }
        }
    }
}

/// One text row as its output.
fn shape(raw: &Bytes, output: &Output) -> Row {
    let (key, rest) = formats::split_row(raw);
    let key = raw.slice_ref(key);
    let data = match output {
        Output::Parquet(_) => RowData::Values(formats::fields(rest)),
        Output::Lines(lines) => RowData::Line(match lines {
            Lines::Json | Lines::JsonText => {
                formats::unescape(rest).unwrap_or_default().into_bytes()
            }
            Lines::Tsv => rest.to_vec(),
            Lines::Csv { .. } => formats::csv_line(&formats::fields(rest)),
            Lines::Sql { table, columns } => {
                script::sql_insert(table, columns, &formats::fields(rest))
            }
            Lines::Bulk { index } => {
                let f = formats::fields(rest);
                let id = f.first().cloned().flatten().unwrap_or_default();
                let doc = f.get(1).cloned().flatten().unwrap_or_default();
                formats::bulk_action(index, &id, &doc)
            }
        }),
    };
    Row { key, data }
}
