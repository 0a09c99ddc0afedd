//! Reading an inventory from its bucket, read-only: finding the newest complete run under
//! a configuration prefix, the manifest with its checksum, and each data file, downloaded
//! to a temporary file and checked against the manifest's MD5.

use std::path::PathBuf;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::manifest::{hex, is_run_folder, Manifest, ManifestFile};
use crate::error::{Error, Result};
use crate::sources::s3::S3Source;
use crate::sources::{Source, SourceError};

/// A `s3://bucket/key` URL split.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::BadRequest(format!(
            "inventory must be the s3:// URL of a manifest.json or of an inventory's prefix (got {url:?})"
        ))
    })?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::BadRequest(
            "inventory: the bucket name is empty".into(),
        ));
    }
    Ok((bucket.to_string(), key.to_string()))
}

fn source_error(e: SourceError) -> Error {
    match e {
        SourceError::Transient(m) => Error::Unavailable(m),
        other => Error::BadRequest(other.to_string()),
    }
}

/// The manifest `url` means: itself when it names a `manifest.json`, else the newest run
/// folder (`YYYY-MM-DDTHH-MMZ/`) under it that has its `manifest.checksum` (S3 writes it
/// last). Returns `(bucket, key of manifest.json)`.
pub async fn locate(s3: &S3Source, url: &str) -> Result<(String, String)> {
    let (bucket, key) = split_url(url)?;
    if key.ends_with("manifest.json") {
        return Ok((bucket, key));
    }
    let prefix = if key.is_empty() || key.ends_with('/') {
        key.clone()
    } else {
        format!("{key}/")
    };
    let mut runs = Vec::new();
    let mut token = None;
    loop {
        let what = format!("inventory s3://{bucket}/{prefix}");
        let page = s3
            .list_page(&bucket, &prefix, Some("/"), token, &what)
            .await
            .map_err(source_error)?;
        for p in &page.prefixes {
            if let Some(name) = p.strip_prefix(&prefix).map(|n| n.trim_end_matches('/')) {
                if is_run_folder(name) {
                    runs.push(name.to_string());
                }
            }
        }
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    runs.sort();
    for run in runs.iter().rev() {
        let checksum = format!("{prefix}{run}/manifest.checksum");
        if s3.head(&bucket, &checksum, &checksum).await.is_ok() {
            return Ok((bucket, format!("{prefix}{run}/manifest.json")));
        }
    }
    Err(Error::BadRequest(format!(
        "no complete inventory under s3://{bucket}/{prefix}: expected run folders YYYY-MM-DDTHH-MMZ/ holding manifest.json and manifest.checksum"
    )))
}

/// A whole (small) object.
async fn get_bytes(s3: &S3Source, bucket: &str, key: &str) -> Result<Vec<u8>> {
    s3.get_bytes(bucket, key, 256 << 20)
        .await
        .map_err(|e| match e {
            SourceError::Other(m) if m.contains("larger than") => Error::BadRequest(format!(
                "s3://{bucket}/{key} is larger than 256 MB: not an inventory manifest"
            )),
            e => source_error(e),
        })
}

/// Reads `manifest.json` and its `manifest.checksum` and checks one against the other.
pub async fn manifest(s3: &S3Source, bucket: &str, key: &str) -> Result<Manifest> {
    let checksum_key = format!(
        "{}manifest.checksum",
        key.strip_suffix("manifest.json").unwrap_or(key)
    );
    let bytes = get_bytes(s3, bucket, key).await?;
    let checksum = get_bytes(s3, bucket, &checksum_key)
        .await
        .map_err(|e| match e {
            Error::BadRequest(m) => Error::BadRequest(format!(
                "{m} (S3 writes manifest.checksum last: without it the inventory is incomplete)"
            )),
            other => other,
        })?;
    Manifest::parse(&bytes, &checksum, &format!("s3://{bucket}/{key}"))
}

/// Checks that every data file exists with the size the manifest gives (HEAD only).
pub async fn check_files(s3: &S3Source, bucket: &str, files: &[ManifestFile]) -> Result<()> {
    for f in files {
        let what = format!(
            "inventory file s3://{bucket}/{} (listed in the manifest)",
            f.key
        );
        let size = s3.head(bucket, &f.key, &what).await.map_err(source_error)?;
        if size != f.size {
            return Err(Error::BadRequest(format!(
                "inventory file s3://{bucket}/{} has {size} bytes, the manifest says {}",
                f.key, f.size
            )));
        }
    }
    Ok(())
}

/// A downloaded data file; removed when dropped.
pub struct Downloaded {
    pub path: PathBuf,
}

impl Drop for Downloaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Streams data file `file` to a temporary file, checking its MD5 against the
/// manifest's (a mismatch is a 400 naming the file).
pub async fn download(s3: &S3Source, bucket: &str, file: &ManifestFile) -> Result<Downloaded> {
    let location =
        crate::sources::Location::S3(crate::sources::ObjectLocation::new(bucket, &file.key));
    let opened = s3.open(&location, None).await.map_err(|e| {
        source_error(match e {
            SourceError::NotFound(_) => SourceError::NotFound(format!(
                "inventory file s3://{bucket}/{} does not exist",
                file.key
            )),
            other => other,
        })
    })?;
    let path = std::env::temp_dir().join(format!("siphon-inventory-{}", uuid::Uuid::new_v4()));
    let downloaded = Downloaded { path: path.clone() };
    let mut local = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    let mut body = opened.body;
    let mut md5 = Md5::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = body
            .read(&mut chunk)
            .await
            .map_err(|e| Error::Unavailable(format!("s3://{bucket}/{}: {e}", file.key)))?;
        if n == 0 {
            break;
        }
        let chunk = &chunk[..n];
        md5.update(chunk);
        local
            .write_all(chunk)
            .await
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    }
    local
        .flush()
        .await
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    let got = hex(&md5.finalize());
    if !got.eq_ignore_ascii_case(file.md5.trim()) {
        return Err(Error::BadRequest(format!(
            "inventory file s3://{bucket}/{} has MD5 {got}, the manifest says {}: damaged or replaced",
            file.key, file.md5
        )));
    }
    Ok(downloaded)
}
