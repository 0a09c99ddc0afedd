//! The rows of an inventory data file (downloaded to a local file first: Parquet needs
//! to seek to its footer, and the MD5 is checked before a row is used), read a batch at
//! a time so memory stays bounded whatever the inventory's size.

use std::fs::File;
use std::path::Path;

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::manifest::{decode_key, CsvColumns, FileFormat};
use crate::error::{Error, Result};

/// One object as the inventory lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryRow {
    /// The key, decoded.
    pub key: String,
    pub size: Option<i64>,
    /// RFC 3339.
    pub modified: Option<String>,
    /// As S3 returns it elsewhere: in double quotes.
    pub etag: Option<String>,
    /// `IsLatest` (true when the inventory lists current versions only).
    pub latest: bool,
    pub delete_marker: bool,
}

impl InventoryRow {
    /// The current version of a live object: what an import loads.
    pub fn current(&self) -> bool {
        self.latest && !self.delete_marker
    }
}

fn quoted(etag: &str) -> Option<String> {
    let e = etag.trim().trim_matches('"');
    (!e.is_empty()).then(|| format!("\"{e}\""))
}

fn bad(file: &str, why: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("inventory file {file}: {why}"))
}

/// Reads `path` (inventory data file `name`), handing rows to `each` in batches of
/// `batch`. Returns the rows read.
pub fn read(
    path: &Path,
    name: &str,
    format: FileFormat,
    columns: &CsvColumns,
    batch: usize,
    each: &mut dyn FnMut(Vec<InventoryRow>) -> Result<()>,
) -> Result<u64> {
    match format {
        FileFormat::Csv => read_csv(path, name, columns, batch, each),
        FileFormat::Parquet => read_parquet(path, name, batch, each),
    }
}

fn read_csv(
    path: &Path,
    name: &str,
    c: &CsvColumns,
    batch: usize,
    each: &mut dyn FnMut(Vec<InventoryRow>) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::Internal(format!("{name}: {e}")))?;
    let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, gz));
    let mut record = csv::StringRecord::new();
    let mut rows = Vec::with_capacity(batch);
    let mut n = 0u64;
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| bad(name, format!("not gzip CSV as S3 Inventory writes it: {e}")))?;
        if !more {
            break;
        }
        n += 1;
        if record.len() < c.count {
            return Err(bad(
                name,
                format!(
                    "row {n} has {} columns, the manifest's fileSchema {}",
                    record.len(),
                    c.count
                ),
            ));
        }
        let flag = |i: Option<usize>, default: bool| {
            i.map(|i| record[i].eq_ignore_ascii_case("true"))
                .unwrap_or(default)
        };
        let size = &record[c.size];
        rows.push(InventoryRow {
            key: decode_key(&record[c.key])?,
            size: if size.is_empty() {
                None
            } else {
                Some(
                    size.parse()
                        .map_err(|_| bad(name, format!("row {n}: size {size:?}")))?,
                )
            },
            modified: Some(record[c.modified].to_string()).filter(|m| !m.is_empty()),
            etag: quoted(&record[c.etag]),
            latest: flag(c.latest, true),
            delete_marker: flag(c.delete_marker, false),
        });
        if rows.len() >= batch {
            each(std::mem::replace(&mut rows, Vec::with_capacity(batch)))?;
        }
    }
    if !rows.is_empty() {
        each(rows)?;
    }
    Ok(n)
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str, file: &str) -> Result<Option<&'a T>> {
    match b.column_by_name(name) {
        None => Ok(None),
        Some(a) => a
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or_else(|| bad(file, format!("column {name} has type {}", a.data_type()))),
    }
}

fn read_parquet(
    path: &Path,
    name: &str,
    batch: usize,
    each: &mut dyn FnMut(Vec<InventoryRow>) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::Internal(format!("{name}: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(name, format!("not a Parquet file: {e}")))?;
    let wanted = [
        "key",
        "size",
        "last_modified_date",
        "e_tag",
        "is_latest",
        "is_delete_marker",
    ];
    let schema = builder.parquet_schema();
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| wanted.contains(&schema.column(i).name()))
        .collect();
    for need in ["key", "size", "last_modified_date", "e_tag"] {
        if !(0..schema.num_columns()).any(|i| schema.column(i).name() == need) {
            return Err(bad(name, format!("no {need} column")));
        }
    }
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch)
        .build()
        .map_err(|e| bad(name, e))?;
    let mut n = 0u64;
    for b in reader {
        let b = b.map_err(|e| bad(name, e))?;
        let keys = column::<StringArray>(&b, "key", name)?.ok_or_else(|| bad(name, "no key"))?;
        let sizes = column::<Int64Array>(&b, "size", name)?;
        let etags = column::<StringArray>(&b, "e_tag", name)?;
        let latest = column::<BooleanArray>(&b, "is_latest", name)?;
        let markers = column::<BooleanArray>(&b, "is_delete_marker", name)?;
        let modified = b.column_by_name("last_modified_date");
        let millis = modified.and_then(|a| {
            a.as_any()
                .downcast_ref::<arrow_array::TimestampMillisecondArray>()
        });
        if modified.is_some() && millis.is_none() {
            return Err(bad(
                name,
                "last_modified_date is not a TIMESTAMP_MILLIS column",
            ));
        }
        let mut rows = Vec::with_capacity(b.num_rows());
        for i in 0..b.num_rows() {
            let opt = |a: Option<&BooleanArray>| a.filter(|a| a.is_valid(i)).map(|a| a.value(i));
            rows.push(InventoryRow {
                key: keys.value(i).to_string(),
                size: sizes.filter(|a| a.is_valid(i)).map(|a| a.value(i)),
                modified: millis.filter(|a| a.is_valid(i)).and_then(|a| {
                    chrono::DateTime::from_timestamp_millis(a.value(i))
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                }),
                etag: etags
                    .filter(|a| a.is_valid(i))
                    .and_then(|a| quoted(a.value(i))),
                latest: opt(latest).unwrap_or(true),
                delete_marker: opt(markers).unwrap_or(false),
            });
        }
        n += rows.len() as u64;
        each(rows)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn csv_rows_as_s3_writes_them() {
        let dir = std::env::temp_dir().join(format!("siphon-inv-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(
            b"\"src\",\"data/Patient+1.ndjson.gz\",\"v1\",\"true\",\"false\",\"120\",\"2026-11-20T01:02:03.000Z\",\"abc\"\n\
              \"src\",\"data/old.ndjson.gz\",\"v0\",\"false\",\"false\",\"5\",\"2026-11-19T01:02:03.000Z\",\"def\"\n\
              \"src\",\"data/gone.ndjson.gz\",\"v2\",\"true\",\"true\",\"\",\"2026-11-21T01:02:03.000Z\",\"\"\n",
        )
        .unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let c = CsvColumns {
            count: 8,
            key: 1,
            size: 5,
            modified: 6,
            etag: 7,
            latest: Some(3),
            delete_marker: Some(4),
        };
        let mut got = Vec::new();
        let n = read(&path, "a", FileFormat::Csv, &c, 2, &mut |rows| {
            got.extend(rows);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(got[0].key, "data/Patient 1.ndjson.gz");
        assert_eq!(got[0].etag.as_deref(), Some("\"abc\""));
        assert_eq!(got[0].size, Some(120));
        assert!(got[0].current() && !got[1].current() && !got[2].current());
        assert_eq!(got[2].size, None);
        std::fs::write(&path, b"not gzip").unwrap();
        assert!(read(&path, "a", FileFormat::Csv, &c, 2, &mut |_| Ok(())).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
