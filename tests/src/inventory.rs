//! S3 Inventories written exactly as S3 writes them (test helper): data files under
//! `<dest>/<source>/<config>/data/`, a run folder `YYYY-MM-DDTHH-MMZ/` with
//! `manifest.json`, `manifest.checksum` (the manifest's MD5 in hex) and
//! `hive/dt=.../symlink.txt`. CSV files are gzip, without a header, every field quoted,
//! keys URL-encoded; Parquet files carry S3's `s3.inventory` message type with
//! Snappy-compressed columns and millisecond timestamps.

use std::io::Write;
use std::sync::Arc;

use md5::{Digest, Md5};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One row of an inventory.
#[derive(Clone, Debug)]
pub struct Listed {
    pub key: String,
    pub size: Option<i64>,
    /// Without quotes, as inventories write it.
    pub etag: Option<String>,
    pub modified_ms: i64,
    pub version_id: Option<String>,
    pub latest: bool,
    pub delete_marker: bool,
}

impl Listed {
    /// The current version of a live object.
    pub fn object(key: &str, size: i64, etag: &str) -> Self {
        Listed {
            key: key.to_string(),
            size: Some(size),
            etag: Some(etag.trim_matches('"').to_string()),
            modified_ms: 1_795_400_000_000,
            version_id: None,
            latest: true,
            delete_marker: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

/// Where and how to write a run.
pub struct Run<'a> {
    pub inventory_bucket: &'a str,
    /// The destination prefix (no trailing slash; may be empty).
    pub dest: &'a str,
    pub source: &'a str,
    pub config: &'a str,
    /// `YYYY-MM-DDTHH-MMZ`.
    pub when: &'a str,
    pub format: Format,
    /// Versioned bucket: the VersionId, IsLatest and IsDeleteMarker columns.
    pub versioned: bool,
    /// Data files to split the rows into.
    pub files: usize,
    /// Leave out these columns (a badly configured inventory).
    pub without: &'a [&'a str],
}

const CSV_COLUMNS: [&str; 9] = [
    "Bucket",
    "Key",
    "VersionId",
    "IsLatest",
    "IsDeleteMarker",
    "Size",
    "LastModifiedDate",
    "ETag",
    "StorageClass",
];

impl Run<'_> {
    /// `<dest>/<source>/<config>/`.
    pub fn prefix(&self) -> String {
        let dest = if self.dest.is_empty() {
            String::new()
        } else {
            format!("{}/", self.dest)
        };
        format!("{dest}{}/{}/", self.source, self.config)
    }

    fn csv_columns(&self) -> Vec<&'static str> {
        CSV_COLUMNS
            .iter()
            .copied()
            .filter(|c| {
                self.versioned || !matches!(*c, "VersionId" | "IsLatest" | "IsDeleteMarker")
            })
            .filter(|c| !self.without.contains(c))
            .collect()
    }

    fn parquet_schema(&self) -> String {
        let fields: Vec<&str> = [
            ("Bucket", "required binary bucket (UTF8);"),
            ("Key", "required binary key (UTF8);"),
            ("VersionId", "optional binary version_id (UTF8);"),
            ("IsLatest", "optional boolean is_latest;"),
            ("IsDeleteMarker", "optional boolean is_delete_marker;"),
            ("Size", "optional int64 size;"),
            (
                "LastModifiedDate",
                "optional int64 last_modified_date (TIMESTAMP_MILLIS);",
            ),
            ("ETag", "optional binary e_tag (UTF8);"),
            ("StorageClass", "optional binary storage_class (UTF8);"),
        ]
        .iter()
        .filter(|(c, _)| self.csv_columns().contains(c))
        .map(|(_, f)| *f)
        .collect();
        format!("message s3.inventory {{ {} }}", fields.join(" "))
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn csv_file(run: &Run<'_>, rows: &[Listed]) -> Vec<u8> {
    let mut text = String::new();
    for r in rows {
        let fields: Vec<String> = run
            .csv_columns()
            .iter()
            .map(|c| match *c {
                "Bucket" => run.source.to_string(),
                "Key" => url::form_urlencoded::byte_serialize(r.key.as_bytes()).collect(),
                "VersionId" => r.version_id.clone().unwrap_or_default(),
                "IsLatest" => r.latest.to_string(),
                "IsDeleteMarker" => r.delete_marker.to_string(),
                "Size" => r.size.map(|s| s.to_string()).unwrap_or_default(),
                "LastModifiedDate" => iso(r.modified_ms),
                "ETag" => r.etag.clone().unwrap_or_default(),
                _ => "STANDARD".to_string(),
            })
            .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
            .collect();
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

fn parquet_file(run: &Run<'_>, rows: &[Listed]) -> Vec<u8> {
    let schema = Arc::new(parse_message_type(&run.parquet_schema()).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    {
        let mut writer = SerializedFileWriter::new(&mut out, schema.clone(), props).unwrap();
        let mut group = writer.next_row_group().unwrap();
        for column in run.csv_columns() {
            let mut col = group.next_column().unwrap().unwrap();
            let required = matches!(column, "Bucket" | "Key");
            let strings = |f: &dyn Fn(&Listed) -> Option<String>| -> (Vec<ByteArray>, Vec<i16>) {
                let mut values = Vec::new();
                let mut defs = Vec::new();
                for r in rows {
                    match f(r) {
                        Some(v) => {
                            values.push(ByteArray::from(v.as_str()));
                            defs.push(1);
                        }
                        None => defs.push(0),
                    }
                }
                (values, defs)
            };
            match column {
                "Bucket" | "Key" | "VersionId" | "ETag" | "StorageClass" => {
                    let (values, defs) = strings(&|r: &Listed| match column {
                        "Bucket" => Some(run.source.to_string()),
                        "Key" => Some(r.key.clone()),
                        "VersionId" => r.version_id.clone(),
                        "ETag" => r.etag.clone(),
                        _ => Some("STANDARD".into()),
                    });
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, (!required).then_some(&defs[..]), None)
                        .unwrap();
                }
                "IsLatest" | "IsDeleteMarker" => {
                    let values: Vec<bool> = rows
                        .iter()
                        .map(|r| {
                            if column == "IsLatest" {
                                r.latest
                            } else {
                                r.delete_marker
                            }
                        })
                        .collect();
                    col.typed::<BoolType>()
                        .write_batch(&values, Some(&vec![1; rows.len()]), None)
                        .unwrap();
                }
                _ => {
                    let mut values = Vec::new();
                    let mut defs = Vec::new();
                    for r in rows {
                        let v = if column == "Size" {
                            r.size
                        } else {
                            Some(r.modified_ms)
                        };
                        match v {
                            Some(v) => {
                                values.push(v);
                                defs.push(1);
                            }
                            None => defs.push(0),
                        }
                    }
                    col.typed::<Int64Type>()
                        .write_batch(&values, Some(&defs), None)
                        .unwrap();
                }
            }
            col.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
    }
    out
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the run; returns the `s3://` URL of its `manifest.json`. The manifest's
/// `creationTimestamp` is `created_ms`.
pub async fn write(
    s3: &aws_sdk_s3::Client,
    run: &Run<'_>,
    rows: &[Listed],
    created_ms: i64,
) -> String {
    let prefix = run.prefix();
    let per_file = rows.len().div_ceil(run.files.max(1)).max(1);
    let mut files = Vec::new();
    for chunk in rows.chunks(per_file) {
        let (bytes, ext) = match run.format {
            Format::Csv => (csv_file(run, chunk), "csv.gz"),
            Format::Parquet => (parquet_file(run, chunk), "parquet"),
        };
        let key = format!("{prefix}data/{}.{ext}", uuid::Uuid::new_v4());
        files.push(
            serde_json::json!({"key": key, "size": bytes.len(), "MD5checksum": md5_hex(&bytes)}),
        );
        crate::put(s3, run.inventory_bucket, &key, bytes).await;
    }
    let schema = match run.format {
        Format::Csv => run.csv_columns().join(", "),
        Format::Parquet => run.parquet_schema(),
    };
    let manifest = serde_json::json!({
        "sourceBucket": run.source,
        "destinationBucket": format!("arn:aws:s3:::{}", run.inventory_bucket),
        "version": "2016-11-30",
        "creationTimestamp": created_ms.to_string(),
        "fileFormat": match run.format { Format::Csv => "CSV", Format::Parquet => "Parquet" },
        "fileSchema": schema,
        "files": files,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let folder = format!("{prefix}{}/", run.when);
    crate::put(
        s3,
        run.inventory_bucket,
        &format!("{folder}manifest.json"),
        bytes.clone(),
    )
    .await;
    let data_files: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "s3://{}/{}",
                run.inventory_bucket,
                f["key"].as_str().unwrap()
            )
        })
        .collect();
    let date = &run.when[..10];
    let hour = &run.when[11..13];
    crate::put(
        s3,
        run.inventory_bucket,
        &format!("{prefix}hive/dt={date}-{hour}-00/symlink.txt"),
        data_files.join("\n").into_bytes(),
    )
    .await;
    // Written last, as S3 does: its arrival means the run is complete.
    crate::put(
        s3,
        run.inventory_bucket,
        &format!("{folder}manifest.checksum"),
        md5_hex(&bytes).into_bytes(),
    )
    .await;
    format!("s3://{}/{folder}manifest.json", run.inventory_bucket)
}
