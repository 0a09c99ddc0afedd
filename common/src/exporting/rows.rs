//! What a task reads and what each row becomes: for `$export`, resources as `$dump`
//! writes them (binary COPY); for dump-to-bucket, rows in Postgres' text format turned
//! into the format's lines, or into typed Parquet values.

use bytes::Bytes;

use super::spec::ExportSpec;
use crate::error::{Error, Result};
use crate::formats::{self, Encoded, Encoder, Shape};
use crate::model::export::{Column, ColumnKind};
use crate::storage::read::{self, KeyedRows, Slice, TextRows};
use crate::storage::Db;

/// One row: its key (an id, `Type/id`, or a query row number) and what it became.
pub struct Row {
    pub key: Bytes,
    pub data: Encoded,
}

/// How a task's rows are read and shaped.
pub struct Reading {
    pub select: String,
    pub output: Output,
}

/// What the rows become.
pub enum Output {
    /// Lines of JSON as Postgres wrote them: binary COPY of `(key, jsonb)` (the `$export`
    /// path, and ndjson of a table in a bucket).
    Json,
    /// Lines a format makes of text rows.
    Lines(Encoder),
    /// Typed values for Parquet, with the columns.
    Typed(Encoder, Vec<Column>),
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

/// The reading of a task that writes `spec`'s file format: of `slice` of a table, or of
/// the materialized query `table` (its `columns`) after row `after`.
pub fn dump_reading(
    spec: &ExportSpec,
    slice: Option<Slice>,
    query: Option<(&str, &[Column], i64)>,
) -> Result<Reading> {
    let format = spec.file_format()?;
    let shape = format.format.shape();
    let columns: Vec<Column> = match &query {
        Some((_, cols, _)) => cols.to_vec(),
        None => table_columns(),
    };
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    // An index is named after the table dumped, or `query`.
    let default_index = slice
        .as_ref()
        .map(|s| s.resource_type.as_str().to_ascii_lowercase())
        .unwrap_or_else(|| "query".into());
    let target = format.target(spec.table.as_deref(), &default_index)?;
    let binary = shape == Shape::Json && slice.is_some();
    let encoder = format.encoder(names.clone(), target);
    let output = if binary {
        Output::Json
    } else if format.typed() {
        Output::Typed(encoder, columns)
    } else {
        Output::Lines(encoder)
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
                return Err(Error::BadRequest(format!(
                    "{} needs an `id` column in the query",
                    format.name()
                )));
            }
            read::query_rows_sql(table, &names, after, shape, id)
        }
        (None, None) => {
            return Err(Error::Internal(
                "a dump task reads a table or a query".into(),
            ))
        }
    };
    Ok(Reading { select, output })
}

/// A task's open row stream.
pub enum Rows {
    Keyed(KeyedRows),
    Text(TextRows, Encoder),
}

impl Rows {
    pub async fn open(db: &Db, reading: Reading) -> Result<Self> {
        Ok(match reading.output {
            Output::Json => Rows::Keyed(db.copy_keyed_rows(&reading.select).await?),
            Output::Lines(encoder) | Output::Typed(encoder, _) => {
                Rows::Text(db.copy_text_rows(&reading.select).await?, encoder)
            }
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
                        data: Encoded::Line(json.to_vec()),
                    })
                    .collect()
            })),
            Rows::Text(rows, encoder) => {
                let Some(batch) = rows.next_rows().await? else {
                    return Ok(None);
                };
                Ok(Some(
                    batch
                        .into_iter()
                        .map(|raw| {
                            let (key, fields) = formats::split_row(&raw);
                            Row {
                                key: raw.slice_ref(key),
                                data: encoder.encode(fields),
                            }
                        })
                        .collect(),
                ))
            }
        }
    }
}
