//! S3 Inventory manifests as S3 writes them: `manifest.json` beside `manifest.checksum`
//! (the MD5, in hex, of the manifest's bytes), under
//! `<dest-prefix>/<source-bucket>/<config-id>/YYYY-MM-DDTHH-MMZ/`, the data files under
//! `.../<config-id>/data/`. A manifest names its format (`CSV`, `Parquet`, `ORC`), its
//! columns (`fileSchema`) and its files with their MD5s.

use md5::{Digest, Md5};
use serde::Deserialize;

use crate::error::{Error, Result};

/// One data file of an inventory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ManifestFile {
    pub key: String,
    pub size: u64,
    #[serde(rename = "MD5checksum")]
    pub md5: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    #[serde(rename = "sourceBucket")]
    pub source_bucket: String,
    /// An ARN (`arn:aws:s3:::bucket`).
    #[serde(rename = "destinationBucket")]
    pub destination_bucket: String,
    #[serde(default)]
    pub version: Option<String>,
    /// Milliseconds since the epoch, as a string.
    #[serde(rename = "creationTimestamp")]
    pub creation_timestamp: String,
    #[serde(rename = "fileFormat")]
    pub file_format: String,
    #[serde(rename = "fileSchema")]
    pub file_schema: String,
    pub files: Vec<ManifestFile>,
}

/// The inventory file formats siphon reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum FileFormat {
    /// gzip-compressed CSV, no header, columns in `fileSchema` order, keys URL-encoded.
    Csv,
    /// Apache Parquet (Snappy), columns by name.
    Parquet,
}

/// Where the columns siphon needs sit in a CSV row (Parquet columns are found by name).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CsvColumns {
    pub count: usize,
    pub key: usize,
    pub size: usize,
    pub modified: usize,
    pub etag: usize,
    pub latest: Option<usize>,
    pub delete_marker: Option<usize>,
}

/// The lowercase hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// Parses `manifest.json` and checks it against `checksum` (the bytes of
    /// `manifest.checksum`): a mismatch is a 400 naming both hashes.
    pub fn parse(bytes: &[u8], checksum: &[u8], name: &str) -> Result<Self> {
        let want = String::from_utf8_lossy(checksum)
            .trim()
            .to_ascii_lowercase();
        let got = md5_hex(bytes);
        if want != got {
            return Err(Error::BadRequest(format!(
                "{name} does not match its manifest.checksum (MD5 of the manifest {got}, checksum {want}): the manifest is damaged or incomplete"
            )));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("{name} is not an S3 Inventory manifest: {e}")))
    }

    /// The format, or a 400 saying which ones siphon reads.
    pub fn format(&self) -> Result<FileFormat> {
        match self.file_format.to_ascii_lowercase().as_str() {
            "csv" => Ok(FileFormat::Csv),
            "parquet" => Ok(FileFormat::Parquet),
            other => Err(Error::BadRequest(format!(
                "inventory format {other:?} is not supported: siphon reads CSV and Parquet inventories (set the inventory's output format to CSV or Apache Parquet)"
            ))),
        }
    }

    /// The column names of `fileSchema`: CSV's comma-separated list, or the field
    /// names of Parquet's message type.
    pub fn column_names(&self) -> Vec<String> {
        match self.format() {
            Ok(FileFormat::Parquet) => {
                let body = self
                    .file_schema
                    .split_once('{')
                    .map(|(_, b)| b)
                    .unwrap_or(&self.file_schema);
                body.split(';')
                    .filter_map(|field| {
                        let words: Vec<&str> = field.split_whitespace().collect();
                        // `optional int64 size (...)`: the name follows the type.
                        (words.len() >= 3
                            && matches!(words[0], "required" | "optional" | "repeated"))
                        .then(|| words[2].trim_end_matches(['(', ';']).to_string())
                    })
                    .collect()
            }
            _ => self
                .file_schema
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
        }
    }

    /// Checks that the columns siphon needs are there: the key, the size, the last
    /// modified date and the ETag (a 400 naming the missing one). For CSV, their
    /// positions.
    pub fn csv_columns(&self) -> Result<CsvColumns> {
        let names = self.column_names();
        let (key, size, modified, etag, latest, marker) = match self.format()? {
            FileFormat::Csv => (
                "Key",
                "Size",
                "LastModifiedDate",
                "ETag",
                "IsLatest",
                "IsDeleteMarker",
            ),
            FileFormat::Parquet => (
                "key",
                "size",
                "last_modified_date",
                "e_tag",
                "is_latest",
                "is_delete_marker",
            ),
        };
        let find = |name: &str| names.iter().position(|n| n == name);
        let need = |name: &str, shown: &str| {
            find(name).ok_or_else(|| {
                Error::BadRequest(format!(
                    "the inventory has no {shown} column ({name}): configure it with the fields Size, Last modified date and ETag"
                ))
            })
        };
        Ok(CsvColumns {
            count: names.len(),
            key: need(key, "Key")?,
            size: need(size, "Size")?,
            modified: need(modified, "Last modified date")?,
            etag: need(etag, "ETag")?,
            latest: find(latest),
            delete_marker: find(marker),
        })
    }

    /// The bucket name of `destinationBucket`.
    pub fn destination_bucket_name(&self) -> &str {
        self.destination_bucket
            .rsplit(":::")
            .next()
            .unwrap_or(&self.destination_bucket)
    }
}

/// True for the folder name of one inventory run: `YYYY-MM-DDTHH-MMZ`.
pub fn is_run_folder(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 => *c == b'-',
            10 => *c == b'T',
            16 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Decodes a URL-encoded key of a CSV inventory (`+` is a space, `%XX` a byte).
pub fn decode_key(raw: &str) -> Result<String> {
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| Error::BadRequest(format!("inventory key {raw:?} is not URL-encoded UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(format: &str, schema: &str) -> Vec<u8> {
        serde_json::json!({
            "sourceBucket": "src", "destinationBucket": "arn:aws:s3:::inv",
            "version": "2016-11-30", "creationTimestamp": "1795476307000",
            "fileFormat": format, "fileSchema": schema,
            "files": [{"key": "inv/src/cfg/data/a.csv.gz", "size": 10, "MD5checksum": "00"}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_manifest_is_checked_against_its_checksum() {
        let m = manifest("CSV", "Bucket, Key, Size, LastModifiedDate, ETag");
        let sum = md5_hex(&m);
        assert_eq!(sum.len(), 32);
        let parsed = Manifest::parse(&m, format!("{sum}\n").as_bytes(), "manifest.json").unwrap();
        assert_eq!(parsed.source_bucket, "src");
        assert_eq!(parsed.destination_bucket_name(), "inv");
        let e = Manifest::parse(&m, b"d41d8cd98f00b204e9800998ecf8427e", "m").unwrap_err();
        assert!(matches!(e, Error::BadRequest(m) if m.contains("does not match")));
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn columns_come_from_the_file_schema() {
        let m = manifest(
            "CSV",
            "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass",
        );
        let p = Manifest::parse(&m, md5_hex(&m).as_bytes(), "m").unwrap();
        let c = p.csv_columns().unwrap();
        assert_eq!(
            (c.count, c.key, c.size, c.modified, c.etag),
            (9, 1, 5, 6, 7)
        );
        assert_eq!((c.latest, c.delete_marker), (Some(3), Some(4)));
        let m = manifest(
            "Parquet",
            "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional int64 size; optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8);}",
        );
        let p = Manifest::parse(&m, md5_hex(&m).as_bytes(), "m").unwrap();
        assert_eq!(
            p.column_names(),
            ["bucket", "key", "size", "last_modified_date", "e_tag"]
        );
        assert_eq!(p.format().unwrap(), FileFormat::Parquet);
        let m = manifest("CSV", "Bucket, Key, Size, ETag");
        let p = Manifest::parse(&m, md5_hex(&m).as_bytes(), "m").unwrap();
        let e = p.csv_columns().unwrap_err();
        assert!(matches!(e, Error::BadRequest(m) if m.contains("no Last modified date column")));
        let m = manifest("ORC", "struct<bucket:string>");
        let p = Manifest::parse(&m, md5_hex(&m).as_bytes(), "m").unwrap();
        assert!(matches!(p.format(), Err(Error::BadRequest(m)) if m.contains("CSV and Parquet")));
    }

    #[test]
    fn run_folders_and_keys() {
        assert!(is_run_folder("2026-11-23T01-00Z"));
        assert!(!is_run_folder("data"));
        assert!(!is_run_folder("2026-11-23T01-00"));
        assert_eq!(decode_key("a+b%2Bc%2Fd%C3%A9").unwrap(), "a b+c/dé");
        assert!(decode_key("%FF").is_err());
    }
}
