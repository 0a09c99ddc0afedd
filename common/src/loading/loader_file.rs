//! `LoaderFile`: one per file, the truth about its load at every moment (SPEC section 3).
//!
//! Stored like any resource (table `loaderfile`). Its `lease` (owner token + expiry)
//! is the claim that makes loads exactly-once: only the owner may commit a batch, and
//! every batch commit checks the lease in the same transaction as the rows it writes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

use super::decode::LineError;
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;
use crate::sources::{Location, ObjectLocation};
use crate::storage::resources::RESOURCE_WITH_ID;
use crate::storage::Db;

/// The resource type name.
pub const LOADER_FILE: &str = "LoaderFile";

/// Life cycle of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileStatus {
    Pending,
    InProgress,
    Done,
    Error,
    Paused,
    Aborted,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pending => "pending",
            FileStatus::InProgress => "in-progress",
            FileStatus::Done => "done",
            FileStatus::Error => "error",
            FileStatus::Paused => "paused",
            FileStatus::Aborted => "aborted",
        }
    }
}

/// Where a load stands: lines (and uncompressed bytes) already committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub line: u64,
    pub bytes: u64,
}

/// Options fixed when the file is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOptions {
    /// Overwrite existing ids (default) or report them as line errors.
    #[serde(rename = "upsert?", default = "yes")]
    pub upsert: bool,
    /// Any invalid line fails the whole file and nothing loads.
    #[serde(default)]
    pub strict: bool,
}

fn yes() -> bool {
    true
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            upsert: true,
            strict: false,
        }
    }
}

/// The claim on a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until: String,
}

/// A LoaderFile resource (fields as in the Aidbox seed, plus siphon's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderFile {
    #[serde(default)]
    pub id: String,
    /// The object key.
    pub file: String,
    pub bucket: String,
    /// The resource type named by the file name; absent when lines name their own.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub status: FileStatus,
    #[serde(default)]
    pub loaded: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub checkpoint: Checkpoint,
    #[serde(default)]
    pub options: FileOptions,
    /// The call that queued the file (load-from-bucket), whose `threads` cap applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// At most this many files of `group` load at once (`thread-num`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Strict mode: the whole file was validated and is clean.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// An `https://` file: read from this URL instead of `bucket`/`file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The `$import` session this file is an input of (its pause/abort apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<String>,
    /// The input's position in the session's `inputs` (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<u32>,
}

impl LoaderFile {
    /// A new pending file.
    pub fn pending(
        location: &ObjectLocation,
        etag: Option<String>,
        size: Option<u64>,
        options: FileOptions,
    ) -> Self {
        LoaderFile {
            id: file_id(location),
            file: location.key.clone(),
            bucket: location.bucket.clone(),
            resource_type: type_from_file_name(location.file_name())
                .map(|t| t.as_str().to_string()),
            size,
            etag,
            status: FileStatus::Pending,
            loaded: 0,
            failed: 0,
            start: None,
            end: None,
            error: None,
            checkpoint: Checkpoint::default(),
            options,
            group: None,
            threads: None,
            validated: false,
            lease: None,
            url: None,
            import: None,
            input: None,
        }
    }

    /// A new pending file read from `location`. For a URL, `file` shows the URL without
    /// its query string (a presigned URL's credential) and `bucket` is empty.
    pub fn pending_at(location: &Location, options: FileOptions) -> Self {
        match location {
            Location::S3(object) => Self::pending(object, None, None, options),
            Location::Url(url) => {
                let shown = ObjectLocation::new("", location.to_string());
                let mut file = Self::pending(&shown, None, None, options);
                file.url = Some(url.clone());
                file
            }
        }
    }

    /// The bucket object (for a URL file: bucket and key as stored, both informative).
    pub fn location(&self) -> ObjectLocation {
        ObjectLocation::new(&self.bucket, &self.file)
    }

    /// Where the bytes are read from: the URL when there is one, else the object.
    pub fn origin(&self) -> Location {
        match &self.url {
            Some(url) => Location::Url(url.clone()),
            None => Location::S3(self.location()),
        }
    }

    fn from_value(v: Value) -> Result<Self> {
        serde_json::from_value(v)
            .map_err(|e| Error::Internal(format!("unreadable LoaderFile: {e}")))
    }
}

/// The LoaderFile id for an object: a UUID (v5) of its `s3://bucket/key`, so the same
/// object always maps to the same LoaderFile and duplicates collapse.
pub fn file_id(location: &ObjectLocation) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, location.to_string().as_bytes()).to_string()
}

/// The type a file name names, as Aidbox reads it: the leading letters and digits of the
/// name (`Patient.ndjson.gz`, `Patient-001.ndjson.gz`, `Patient.2.ndjson.gz`), when they
/// form a valid type name; otherwise `None` and each line brings its own type.
pub fn type_from_file_name(name: &str) -> Option<ResourceType> {
    let end = name
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(name.len());
    ResourceType::parse(&name[..end]).ok()
}

pub(crate) fn loader_file_type() -> ResourceType {
    ResourceType::parse(LOADER_FILE).expect("valid")
}

pub(crate) const TABLE: &str = "public.\"loaderfile\"";

/// Result of trying to claim a file.
#[derive(Debug)]
pub enum Claim {
    /// This loader owns the file until the lease expires.
    Claimed(Box<LoaderFile>),
    /// Another loader holds a live lease.
    Busy { until: String },
    /// The file is finished (or paused/aborted): nothing to do.
    NotLoadable(FileStatus),
    /// No such LoaderFile.
    Missing,
    /// The file's group already has `threads` files loading: try later.
    Throttled,
}

impl Db {
    /// Creates a pending LoaderFile unless one exists. Returns the stored file and
    /// whether it was created now.
    pub async fn create_loader_file(&self, file: &LoaderFile) -> Result<(LoaderFile, bool)> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let value = serde_json::to_value(file).map_err(|e| Error::Internal(e.to_string()))?;
        let inserted = client
            .query_opt(
                &format!(
                    "INSERT INTO {TABLE} (id, txid, resource_type, status, resource)
                     VALUES ($1, nextval('transaction_id_seq'), 'LoaderFile', 'created', $2)
                     ON CONFLICT (id) DO NOTHING RETURNING {RESOURCE_WITH_ID}"
                ),
                &[&file.id, &value],
            )
            .await?;
        match inserted {
            Some(row) => Ok((LoaderFile::from_value(row.get(0))?, true)),
            None => Ok((
                self.loader_file(&file.id)
                    .await?
                    .ok_or_else(|| Error::Internal("LoaderFile vanished".into()))?,
                false,
            )),
        }
    }

    /// Creates pending LoaderFiles in one statement; returns those created now (files
    /// that already had one are skipped).
    pub async fn create_loader_files(&self, files: &[LoaderFile]) -> Result<Vec<LoaderFile>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
        let values = files
            .iter()
            .map(serde_json::to_value)
            .collect::<std::result::Result<Vec<Value>, _>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let rows = client
            .query(
                &format!(
                    "INSERT INTO {TABLE} (id, txid, resource_type, status, resource)
                     SELECT f.id, nextval('transaction_id_seq'), 'LoaderFile', 'created', f.resource
                     FROM unnest($1::text[], $2::jsonb[]) AS f(id, resource)
                     ON CONFLICT (id) DO NOTHING RETURNING {RESOURCE_WITH_ID}"
                ),
                &[&ids, &values],
            )
            .await?;
        rows.iter()
            .map(|r| LoaderFile::from_value(r.get(0)))
            .collect()
    }

    /// For an S3 event about `file`'s object: when `etag` names a new version, resets
    /// the file to `pending` (counts, checkpoint, errors and any lease cleared) and
    /// returns true; the same version returns false.
    pub async fn reset_loader_file_if_new_version(
        &self,
        file: &LoaderFile,
        etag: Option<&str>,
        size: Option<u64>,
    ) -> Result<bool> {
        let Some(etag) = etag else { return Ok(false) };
        if file.etag.as_deref() == Some(etag) {
            return Ok(false);
        }
        let mut fresh =
            LoaderFile::pending(&file.location(), Some(etag.to_string()), size, file.options);
        fresh.id = file.id.clone();
        let value = serde_json::to_value(&fresh).map_err(|e| Error::Internal(e.to_string()))?;
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'), status = 'updated', resource = $2
                     WHERE id = $1 AND resource->>'etag' IS DISTINCT FROM $3::text"
                ),
                &[&file.id, &value, &etag],
            )
            .await?;
        if n == 1 {
            tx.execute(
                "DELETE FROM siphon_loader_error WHERE file_id = $1",
                &[&file.id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Reads one LoaderFile.
    pub async fn loader_file(&self, id: &str) -> Result<Option<LoaderFile>> {
        match self.get(&loader_file_type(), id).await? {
            Some(r) => Ok(Some(LoaderFile::from_value(r.resource)?)),
            None => Ok(None),
        }
    }

    /// Claims a file for loading: `pending` files, files whose lease expired (a crashed
    /// or handed-over loader), or files this owner already holds. Atomic: of two loaders
    /// racing, one gets `Claimed`, the other `Busy`.
    pub async fn claim_loader_file(&self, id: &str, owner: &str, lease_secs: f64) -> Result<Claim> {
        let mut client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let group: Option<(String, i64)> = client
            .query_opt(
                &format!("SELECT resource->>'group', (resource->>'threads')::bigint FROM {TABLE} WHERE id = $1"),
                &[&id],
            )
            .await?
            .and_then(|r| Some((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?)));
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        if let Some((group, _)) = &group {
            // Serialise claims within a group so the cap holds under races.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('siphon.group.' || $1))",
                &[group],
            )
            .await?;
        }
        let (group_name, threads) = match &group {
            Some((g, t)) => (Some(g.as_str()), *t),
            None => (None, 0),
        };
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = resource
                          || jsonb_build_object('status', 'in-progress',
                               'lease', jsonb_build_object('owner', $2::text,
                                   'until', now() + make_interval(secs => $3::float8)))
                          || CASE WHEN resource ? 'start' THEN '{{}}'::jsonb
                                  ELSE jsonb_build_object('start', now()) END
                     WHERE id = $1 AND (
                        resource->>'status' = 'pending'
                        OR (resource->>'status' = 'in-progress' AND (
                              (resource->'lease'->>'until') IS NULL
                              OR (resource->'lease'->>'until')::timestamptz < now()
                              OR resource->'lease'->>'owner' = $2::text)))
                       AND ($4::text IS NULL OR (
                            SELECT count(*) FROM {TABLE} o
                            WHERE o.resource->>'group' = $4::text AND o.id <> $1
                              AND o.resource->>'status' = 'in-progress'
                              AND (o.resource->'lease'->>'until')::timestamptz > now()) < $5::bigint)
                     RETURNING {RESOURCE_WITH_ID}"
                ),
                &[&id, &owner, &lease_secs, &group_name, &threads],
            )
            .await?;
        tx.commit().await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed(Box::new(LoaderFile::from_value(
                row.get(0),
            )?)));
        }
        Ok(match self.loader_file(id).await? {
            None => Claim::Missing,
            // Claimable by state but not claimed: another loader holds a live lease,
            // or the group's thread-num cap is reached.
            Some(f) if f.status == FileStatus::InProgress && self.lease_live(id).await? => {
                Claim::Busy {
                    until: f.lease.map(|l| l.until).unwrap_or_default(),
                }
            }
            Some(f) if matches!(f.status, FileStatus::Pending | FileStatus::InProgress) => {
                Claim::Throttled
            }
            Some(f) => Claim::NotLoadable(f.status),
        })
    }

    async fn lease_live(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!("SELECT coalesce((resource->'lease'->>'until')::timestamptz > now(), false) FROM {TABLE} WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Merges `patch` into the file if `owner` still holds it. `false` = lease lost.
    pub async fn patch_loader_file_as<C: GenericClient + Sync>(
        client: &C,
        id: &str,
        owner: &str,
        patch: &Value,
        remove_lease: bool,
    ) -> Result<bool> {
        let n = client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = CASE WHEN $4 THEN (resource || $3::jsonb) - 'lease' ELSE resource || $3::jsonb END
                     WHERE id = $1 AND resource->'lease'->>'owner' = $2::text"
                ),
                &[&id, &owner, patch, &remove_lease],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the file in `error` with a message (as its owner, if `owner` is given).
    pub async fn fail_loader_file(
        &self,
        id: &str,
        owner: Option<&str>,
        message: &str,
    ) -> Result<bool> {
        let client = self.client().await?;
        let patch = json!({"status": "error", "error": message, "end": chrono::Utc::now()});
        match owner {
            Some(owner) => Self::patch_loader_file_as(&**client, id, owner, &patch, true).await,
            None => {
                let n = client
                    .execute(
                        &format!(
                            "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                                resource = (resource || $2::jsonb) - 'lease' WHERE id = $1"
                        ),
                        &[&id, &patch],
                    )
                    .await?;
                Ok(n == 1)
            }
        }
    }

    /// Gives the lease back without finishing (deadline near): the next claimer resumes
    /// from the checkpoint at once.
    pub async fn release_loader_file(&self, id: &str, owner: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                &format!(
                    "UPDATE {TABLE} SET ts = now(),
                        resource = jsonb_set(resource, '{{lease,until}}', to_jsonb(now() - interval '1 second'))
                     WHERE id = $1 AND resource->'lease'->>'owner' = $2::text"
                ),
                &[&id, &owner],
            )
            .await?;
        Ok(n == 1)
    }

    /// The invalid lines recorded for a file, by line number.
    pub async fn loader_file_errors(
        &self,
        id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<LineError>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT line, reason, excerpt FROM siphon_loader_error WHERE file_id = $1
                 ORDER BY line LIMIT $2 OFFSET $3",
                &[&id, &limit, &offset],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| LineError {
                line: r.get::<_, i64>(0) as u64,
                reason: r.get(1),
                excerpt: r.get(2),
            })
            .collect())
    }

    /// Deletes a LoaderFile and its recorded line errors (so the file can be imported again).
    pub async fn delete_loader_file(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM siphon_loader_error WHERE file_id = $1", &[&id])
            .await?;
        self.delete(&loader_file_type(), id).await
    }
}

/// Stores line errors (up to `room` of them) in the batch's transaction.
pub async fn record_line_errors<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    errors: &[LineError],
    room: u64,
) -> Result<()> {
    let take = errors.len().min(room as usize);
    if take == 0 {
        return Ok(());
    }
    let errors = &errors[..take];
    let lines: Vec<i64> = errors.iter().map(|e| e.line as i64).collect();
    let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
    let excerpts: Vec<&str> = errors.iter().map(|e| e.excerpt.as_str()).collect();
    client
        .execute(
            "INSERT INTO siphon_loader_error (file_id, line, reason, excerpt)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])
             ON CONFLICT (file_id, line) DO UPDATE SET reason = excluded.reason, excerpt = excluded.excerpt",
            &[&id, &lines, &reasons, &excerpts],
        )
        .await?;
    Ok(())
}
