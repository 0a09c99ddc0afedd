//! One Parquet file written to a sink as it fills: rows (as text values with their
//! column kinds) become Arrow record batches, row groups are flushed by size (so memory
//! stays bounded whatever the table), and the encoded bytes go out as multipart-upload
//! parts. A Parquet file is written within one run (its footer needs the whole file's
//! metadata): a run that hands over finishes its file first, and one that dies leaves an
//! upload the next run aborts.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{ObjectMeta, ObjectSink, Part, SinkError};
use crate::model::export::{Column, ColumnKind, WrittenFile};

/// Rows per Arrow batch handed to the writer, at most.
const BATCH_ROWS: usize = 8192;
/// Bytes of values per Arrow batch, at most (8,192 resources of a few KiB each would hold
/// tens of MiB in the builders).
const BATCH_BYTES: u64 = 2 << 20;
/// A row group is flushed once its encoded size passes this (default).
pub const ROW_GROUP_BYTES: usize = 8 << 20;

/// The bytes the Parquet writer has produced and not yet uploaded.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Builder {
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Date(Date32Builder),
    Decimal(Decimal128Builder, i8),
}

fn data_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Text => DataType::Utf8,
        ColumnKind::Bool => DataType::Boolean,
        ColumnKind::Int16 => DataType::Int16,
        ColumnKind::Int32 => DataType::Int32,
        ColumnKind::Int64 => DataType::Int64,
        ColumnKind::Float32 => DataType::Float32,
        ColumnKind::Float64 => DataType::Float64,
        ColumnKind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnKind::Date => DataType::Date32,
        ColumnKind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
    }
}

impl Builder {
    fn new(kind: ColumnKind) -> Self {
        match kind {
            ColumnKind::Text => Builder::Text(StringBuilder::new()),
            ColumnKind::Bool => Builder::Bool(BooleanBuilder::new()),
            ColumnKind::Int16 => Builder::Int16(Int16Builder::new()),
            ColumnKind::Int32 => Builder::Int32(Int32Builder::new()),
            ColumnKind::Int64 => Builder::Int64(Int64Builder::new()),
            ColumnKind::Float32 => Builder::Float32(Float32Builder::new()),
            ColumnKind::Float64 => Builder::Float64(Float64Builder::new()),
            ColumnKind::TimestampUtc => Builder::Timestamp(
                TimestampMicrosecondBuilder::new().with_timezone("UTC"),
                true,
            ),
            ColumnKind::Timestamp => Builder::Timestamp(TimestampMicrosecondBuilder::new(), false),
            ColumnKind::Date => Builder::Date(Date32Builder::new()),
            ColumnKind::Decimal { precision, scale } => Builder::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(precision, scale)
                    .expect("precision 1..=38 and scale <= precision, as storage chose them"),
                scale,
            ),
        }
    }

    /// Appends Postgres' text form of a value (ISO dates, UTC); unparsable as the kind
    /// (`infinity`) is an error naming it.
    fn append(&mut self, value: Option<&str>) -> Result<(), String> {
        fn parse<T: std::str::FromStr>(v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{v:?} is not a number of the column's type"))
        }
        match (self, value) {
            (Builder::Text(b), v) => b.append_option(v),
            (Builder::Bool(b), None) => b.append_null(),
            (Builder::Bool(b), Some(v)) => b.append_value(v == "t" || v == "true"),
            (Builder::Int16(b), v) => b.append_option(v.map(parse).transpose()?),
            (Builder::Int32(b), v) => b.append_option(v.map(parse).transpose()?),
            (Builder::Int64(b), v) => b.append_option(v.map(parse).transpose()?),
            (Builder::Float32(b), v) => b.append_option(v.map(parse).transpose()?),
            (Builder::Float64(b), v) => b.append_option(v.map(parse).transpose()?),
            (Builder::Timestamp(b, _), None) => b.append_null(),
            (Builder::Timestamp(b, utc), Some(v)) => {
                let micros = if *utc {
                    chrono::DateTime::parse_from_str(&format!("{v}00"), "%Y-%m-%d %H:%M:%S%.f%z")
                        .or_else(|_| chrono::DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z"))
                        .map(|t| t.timestamp_micros())
                } else {
                    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f")
                        .map(|t| t.and_utc().timestamp_micros())
                };
                b.append_value(
                    micros.map_err(|_| format!("{v:?} is not a timestamp Parquet can hold"))?,
                )
            }
            (Builder::Decimal(b, _), None) => b.append_null(),
            (Builder::Decimal(b, scale), Some(v)) => b.append_value(
                decimal(v, *scale)
                    .ok_or_else(|| format!("{v:?} is not a decimal of scale {scale}"))?,
            ),
            (Builder::Date(b), None) => b.append_null(),
            (Builder::Date(b), Some(v)) => {
                let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map_err(|_| format!("{v:?} is not a date Parquet can hold"))?;
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                b.append_value((d - epoch).num_days() as i32)
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b, _) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _) => Arc::new(b.finish()),
        }
    }
}

/// Postgres' text of a numeric (`-12.5`) as the unscaled integer of a decimal of
/// `scale` (`-1250` at scale 2); `None` when it has more fractional digits or overflows.
fn decimal(text: &str, scale: i8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::try_from(scale).ok()?;
    if fraction.len() > scale
        || whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut n: i128 = 0;
    let padded = fraction.bytes().chain(std::iter::repeat(b'0')).take(scale);
    for b in whole.bytes().chain(padded) {
        n = n.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// A Parquet file being written; see the module docs.
pub struct ParquetFile {
    sink: Arc<dyn ObjectSink>,
    key: String,
    meta: ObjectMeta,
    schema: Arc<Schema>,
    writer: Option<ArrowWriter<Shared>>,
    out: Shared,
    builders: Vec<Builder>,
    rows_in_batch: usize,
    batch_bytes: u64,
    part_bytes: usize,
    row_group_bytes: usize,
    upload_id: Option<String>,
    parts: Vec<Part>,
    count: u64,
    text_bytes: u64,
}

fn parquet_error(e: impl std::fmt::Display) -> SinkError {
    SinkError::Refused(format!("Parquet: {e}"))
}

impl ParquetFile {
    /// A new file at `key` with these columns; row groups of about `row_group_bytes`
    /// ([`ROW_GROUP_BYTES`]), parts of `part_bytes` (5 MiB or more).
    pub fn new(
        sink: Arc<dyn ObjectSink>,
        key: &str,
        columns: &[Column],
        row_group_bytes: usize,
        part_bytes: usize,
    ) -> Result<Self, SinkError> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, data_type(c.kind), true))
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(1 << 20))
            .set_max_row_group_bytes(Some(row_group_bytes))
            .build();
        let out = Shared::default();
        let writer = ArrowWriter::try_new(out.clone(), schema.clone(), Some(props))
            .map_err(parquet_error)?;
        Ok(ParquetFile {
            sink,
            key: key.to_string(),
            meta: ObjectMeta {
                content_type: "application/vnd.apache.parquet".into(),
                content_encoding: None,
            },
            builders: columns.iter().map(|c| Builder::new(c.kind)).collect(),
            schema,
            writer: Some(writer),
            out,
            rows_in_batch: 0,
            batch_bytes: 0,
            part_bytes,
            row_group_bytes,
            upload_id: None,
            parts: Vec::new(),
            count: 0,
            text_bytes: 0,
        })
    }

    /// The multipart upload, once started (a run that dies leaves it to be aborted).
    pub fn upload_id(&self) -> Option<&str> {
        self.upload_id.as_deref()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of the rows' text so far (the size cap counts these).
    pub fn bytes(&self) -> u64 {
        self.text_bytes + self.batch_bytes
    }

    /// Appends one row. A value that does not fit its column is an error naming it.
    pub fn push(&mut self, values: &[Option<String>]) -> Result<(), SinkError> {
        for (i, (b, v)) in self.builders.iter_mut().zip(values).enumerate() {
            b.append(v.as_deref()).map_err(|e| {
                SinkError::Refused(format!("column {}: {e}", self.schema.field(i).name()))
            })?;
            self.batch_bytes += v.as_ref().map_or(0, |s| s.len() as u64 + 1);
        }
        self.count += 1;
        self.rows_in_batch += 1;
        if self.rows_in_batch >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), SinkError> {
        if self.rows_in_batch == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(parquet_error)?;
        let writer = self.writer.as_mut().expect("an open writer");
        writer.write(&batch).map_err(parquet_error)?;
        if writer.in_progress_size() >= self.row_group_bytes {
            writer.flush().map_err(parquet_error)?;
        }
        self.text_bytes += self.batch_bytes;
        self.rows_in_batch = 0;
        self.batch_bytes = 0;
        Ok(())
    }

    /// True when encoded bytes make a part.
    pub fn part_ready(&self) -> bool {
        self.out.0.lock().unwrap().len() >= self.part_bytes
    }

    /// Uploads the encoded bytes as the next part.
    pub async fn upload_part(&mut self) -> Result<(), SinkError> {
        let bytes = Bytes::from(std::mem::take(&mut *self.out.0.lock().unwrap()));
        if bytes.is_empty() {
            return Ok(());
        }
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.sink.start_upload(&self.key, &self.meta).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let part = self
            .sink
            .upload_part(&self.key, &id, self.parts.len() as i32 + 1, bytes)
            .await?;
        self.parts.push(part);
        Ok(())
    }

    /// Writes the footer and stores the file.
    pub async fn finish(mut self) -> Result<WrittenFile, SinkError> {
        self.write_batch()?;
        self.writer
            .take()
            .expect("an open writer")
            .close()
            .map_err(parquet_error)?;
        match self.upload_id.clone() {
            None => {
                let bytes = Bytes::from(std::mem::take(&mut *self.out.0.lock().unwrap()));
                self.sink.put(&self.key, &self.meta, bytes).await?;
            }
            Some(id) => {
                self.upload_part().await?;
                self.sink
                    .complete_upload(&self.key, &id, &self.parts)
                    .await?;
            }
        }
        Ok(WrittenFile {
            key: self.key.clone(),
            count: self.count,
            bytes: self.text_bytes,
        })
    }

    /// Abandons the file (its upload, if any, is aborted).
    pub async fn abort(self) -> Result<(), SinkError> {
        if let Some(id) = &self.upload_id {
            self.sink.abort_upload(&self.key, id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::memory::MemorySink;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn numerics_become_unscaled_decimals() {
        assert_eq!(decimal("-12.5", 2), Some(-1250));
        assert_eq!(decimal("0", 3), Some(0));
        assert_eq!(
            decimal("12345678901234567890.123456789", 9),
            Some(12345678901234567890123456789)
        );
        assert_eq!(decimal("1.234", 2), None, "more fraction than the scale");
        assert_eq!(decimal("NaN", 2), None);
        assert_eq!(decimal("", 0), None);
        assert_eq!(decimal("1e5", 0), None);
    }

    fn columns() -> Vec<Column> {
        [
            ("id", ColumnKind::Text),
            ("n", ColumnKind::Int64),
            ("ok", ColumnKind::Bool),
            ("at", ColumnKind::TimestampUtc),
            ("day", ColumnKind::Date),
        ]
        .into_iter()
        .map(|(n, k)| Column {
            name: n.into(),
            kind: k,
        })
        .collect()
    }

    #[tokio::test]
    async fn rows_round_trip_through_the_parquet_reader() {
        let sink = Arc::new(MemorySink::with_small_parts());
        let mut f =
            ParquetFile::new(sink.clone(), "t.parquet", &columns(), 64 << 10, 1 << 10).unwrap();
        for i in 0..20_000i64 {
            let row = [
                Some(format!("id-{i} é\t\"x\"")),
                (i % 7 != 0).then(|| i.to_string()),
                Some(if i % 2 == 0 { "t" } else { "f" }.to_string()),
                Some("2026-11-23 07:04:05.678912+00".to_string()),
                Some("2024-02-29".to_string()),
            ];
            f.push(&row).unwrap();
            if f.part_ready() {
                f.upload_part().await.unwrap();
            }
        }
        let written = f.finish().await.unwrap();
        assert_eq!(written.count, 20_000);
        assert!(sink.calls("upload_part") > 1, "streamed in parts");
        let bytes = sink.objects()["t.parquet"].clone();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut rows = 0;
        for batch in reader {
            let batch = batch.unwrap();
            if rows == 0 {
                assert_eq!(batch.column(0).as_string::<i32>().value(1), "id-1 é\t\"x\"");
                let n = batch.column(1).as_primitive::<Int64Type>();
                assert!(n.is_null(0) && n.value(1) == 1);
                let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
                assert_eq!(at.value(0), 1_795_417_445_678_912);
            }
            rows += batch.num_rows();
        }
        assert_eq!(rows, 20_000);
    }

    #[tokio::test]
    async fn a_value_that_does_not_fit_is_refused_by_name() {
        let sink = Arc::new(MemorySink::with_small_parts());
        let mut f =
            ParquetFile::new(sink, "t.parquet", &columns(), ROW_GROUP_BYTES, 1 << 20).unwrap();
        let e = f
            .push(&[Some("a".into()), Some("x".into()), None, None, None])
            .unwrap_err();
        assert!(e.to_string().contains("column n"), "{e}");
    }
}
