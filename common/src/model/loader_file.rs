//! `LoaderFile`: one per file, the truth about its load at every moment (SPEC section 3).
//!
//! Stored like any resource (table `loaderfile`, SQL in `storage::loader_files`). Its
//! `lease` (owner token + expiry) is the claim that makes loads exactly-once: only the
//! owner may commit a batch, and every batch commit checks the lease in the same
//! transaction as the rows it writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::location::{Location, ObjectLocation};
use super::validation::Validation;
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;

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
    /// Listed by an S3 Inventory but gone (or changed) when its turn came: inventories
    /// lag the bucket. Ended, not failed; the next inventory decides what it is.
    Missing,
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
            FileStatus::Missing => "missing",
        }
    }
}

/// A LoaderFile whose object the newest inventory of its bucket no longer lists: the
/// object was deleted (or moved). Its rows stay loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// The inventory manifest (`s3://...manifest.json`) that no longer lists it.
    pub inventory: String,
    /// When that was noticed (RFC 3339).
    pub at: String,
}

/// Where a load stands: lines (and uncompressed bytes) already committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub line: u64,
    pub bytes: u64,
    /// The file is plain ndjson (not gzip), so `bytes` is also where the rest starts in
    /// the object: a later attempt asks the store for it from there (`Range`) instead of
    /// reading the committed lines again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain: bool,
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
    /// Drop the table's secondary indexes for the load, rebuild them after
    /// (`disable-idx?`).
    #[serde(
        rename = "disable-idx?",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_indexes: bool,
    /// Drop an empty table's primary key for the load, add it back after; ids repeated
    /// within the load are reported, the last one kept (`drop-primary-key?`).
    #[serde(
        rename = "drop-primary-key?",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub drop_primary_key: bool,
    /// The FHIR checks (`validation: {enable, checks}`); absent: off.
    #[serde(default, skip_serializing_if = "Validation::is_off")]
    pub validation: Validation,
    /// Record the transactions that write the file's rows (`siphon_file_txid`), so they
    /// can be removed again: set for the files of a `$bulk-submit` submission.
    #[serde(
        rename = "recordTxids",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub record_txids: bool,
}

impl FileOptions {
    /// True when the file's tables go into bulk mode for the load.
    pub fn bulk(&self) -> bool {
        self.disable_indexes || self.drop_primary_key
    }
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            upsert: true,
            strict: false,
            disable_indexes: false,
            drop_primary_key: false,
            validation: Validation::default(),
            record_txids: false,
        }
    }
}

/// The claim on a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// When this owner claimed the file (the sweep tells a new stall from one it has
    /// already acted on by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When the claim expires unless renewed (the loader's heartbeat renews it).
    pub until: String,
    /// The checkpoint line when this owner claimed the file (it made progress if the
    /// checkpoint is past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The SQS receipt handle of the message being worked on, so a sweep can make that
    /// very message visible again if the worker dies. Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// How a file's store is reached, as far as Postgres may know it: the endpoint and region
/// (credentials themselves travel only in the queue message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The request gave `account` credentials: only its queue message can reach the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credentials: bool,
}

impl StoreRef {
    pub fn is_default(&self) -> bool {
        self == &StoreRef::default()
    }
}

/// What the sweep did for a file whose worker stopped renewing its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// When the sweep last acted.
    pub at: String,
    /// How many times it acted.
    pub count: u32,
    /// `redelivered` (the message made visible again), `requeued` (a new message), or
    /// why neither was possible.
    pub how: String,
    /// Workers in a row that died without moving the checkpoint on (a line that kills
    /// every worker, say): the sweep ends the file in `error` when this reaches
    /// `SIPHON_SWEEP_GIVE_UP_AFTER` and the checkpoint has not moved for
    /// `SIPHON_SWEEP_GIVE_UP_STUCK_SECONDS`.
    #[serde(default)]
    pub barren: u32,
    /// Since when the checkpoint has not moved: the claim of the first of those workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_since: Option<String>,
}

/// How stuck a stalled file or export task is, as the sweep is about to act on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stuck {
    /// Workers in a row that died on it without progress, this stall included.
    pub barren: u32,
    /// When the first of them claimed it (none while `barren` is 0).
    pub since: Option<String>,
}

impl Stuck {
    /// Seconds from `since` to `now` (0 without `since`, or when it does not parse).
    pub fn seconds(&self, now: chrono::DateTime<chrono::Utc>) -> f64 {
        self.since
            .as_deref()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0.0, |s| {
                (now - s.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0
            })
    }
}

/// What a load writes into its LoaderFile as it goes, merged into the stored resource:
/// fields left `None` keep what is stored. Typed, so a misspelt key cannot reach the
/// database as a field nobody reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileProgress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<FileStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flagged: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<u64>,
    #[serde(rename = "pendingRefs", skip_serializing_if = "Option::is_none")]
    pub pending_refs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// Now, as stored instants are written (RFC 3339, `Z`, as serde writes a `DateTime`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl FileProgress {
    /// The file ends with `status` now (`error` with `message`).
    pub fn ended(status: FileStatus, message: Option<&str>) -> Self {
        FileProgress {
            status: Some(status),
            error: message.map(str::to_string),
            end: Some(now_rfc3339()),
            ..FileProgress::default()
        }
    }

    /// As the JSON merged into the resource.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
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
    /// Lines that loaded although `validation.enable: async` found them invalid (listed
    /// with the invalid lines, marked `loaded`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flagged: u64,
    /// Lines held back because a reference did not resolve yet (`enable: on` with
    /// `checks: refs|all`): when the whole load has ended they load or become invalid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parked: u64,
    /// References not resolved yet: resolved once the whole load has ended.
    #[serde(rename = "pendingRefs", default, skip_serializing_if = "is_zero")]
    pub pending_refs: u64,
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
    /// The store the file is read from, when not the function's own.
    #[serde(default, skip_serializing_if = "StoreRef::is_default")]
    pub store: StoreRef,
    /// What the sweep did when the file's worker died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// The S3 Inventory manifest (`s3://...manifest.json`) this file was queued from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// Set when a newer inventory no longer lists the object (its rows stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone: Option<Gone>,
    /// The client that started the load (absent: the admin, or automatic ingestion).
    /// Only it and the admin see the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The types that client may write (`"*"`: every data type; absent: any): lines of
    /// other types are line errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Vec<String>>,
}

impl LoaderFile {
    /// What `recovery.barren` (and `stuck_since`) become when the sweep acts on this
    /// stalled file now: one more if its last worker died where it started (and claimed
    /// it after the sweep's last act: a stall not yet counted), the same if no worker has
    /// claimed it since, 0 when that worker moved the checkpoint on.
    pub fn stuck_after_stall(&self) -> Stuck {
        let before = Stuck {
            barren: self.recovery.as_ref().map_or(0, |r| r.barren),
            since: self.recovery.as_ref().and_then(|r| r.stuck_since.clone()),
        };
        let Some(lease) = &self.lease else {
            return before;
        };
        let claimed_since = match (&self.recovery, lease.since.as_deref()) {
            (None, _) => true,
            (Some(r), Some(since)) => match (
                chrono::DateTime::parse_from_rfc3339(since),
                chrono::DateTime::parse_from_rfc3339(&r.at),
            ) {
                (Ok(since), Ok(at)) => since > at,
                _ => true,
            },
            (Some(_), None) => true,
        };
        if !claimed_since {
            return before;
        }
        match lease.from {
            Some(from) if from == self.checkpoint.line => Stuck {
                barren: before.barren + 1,
                since: before.since.or_else(|| lease.since.clone()),
            },
            _ => Stuck::default(),
        }
    }
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
            flagged: 0,
            parked: 0,
            pending_refs: 0,
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
            store: StoreRef::default(),
            recovery: None,
            inventory: None,
            gone: None,
            owner: None,
            writes: None,
        }
    }

    /// Records who started the load and what it may write.
    pub fn owned_by(mut self, owner: Option<String>, writes: Option<Vec<String>>) -> Self {
        self.owner = owner;
        self.writes = writes;
        self
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

    /// The instant the lease expired, when the file is `in-progress` and nobody renews its
    /// lease any more (its worker died): the file is stalled until the sweep acts.
    pub fn stalled_since(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        if self.status != FileStatus::InProgress {
            return None;
        }
        let lease = self.lease.as_ref()?;
        let until = chrono::DateTime::parse_from_rfc3339(&lease.until).ok()?;
        (until < now).then(|| lease.until.clone())
    }

    /// The load this file belongs to: its load-from-bucket call or its `$import` session
    /// (tables in bulk mode are held by it until all its files have ended).
    pub fn load_owner(&self) -> String {
        self.group
            .clone()
            .or_else(|| self.import.clone())
            .unwrap_or_else(|| self.id.clone())
    }

    /// Where the bytes are read from: the URL when there is one, else the object.
    pub fn origin(&self) -> Location {
        match &self.url {
            Some(url) => Location::Url(url.clone()),
            None => Location::S3(self.location()),
        }
    }

    /// A LoaderFile as stored (its `resource` column).
    pub fn from_value(v: Value) -> Result<Self> {
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

/// The `LoaderFile` resource type.
pub fn loader_file_type() -> ResourceType {
    ResourceType::parse(LOADER_FILE).expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_writes_only_what_it_sets_under_the_stored_names() {
        let p = FileProgress {
            loaded: Some(3),
            pending_refs: Some(0),
            ..FileProgress::default()
        };
        assert_eq!(
            p.to_value(),
            serde_json::json!({"loaded": 3, "pendingRefs": 0})
        );
        let e = FileProgress::ended(FileStatus::Error, Some("gzip stream truncated")).to_value();
        assert_eq!(e["status"], "error");
        assert_eq!(e["error"], "gzip stream truncated");
        let end = e["end"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(end).is_ok(), "{end}");
        assert_eq!(e.as_object().unwrap().len(), 3);
    }

    #[test]
    fn barren_counts_workers_in_a_row_that_died_where_they_started() {
        let mut f = LoaderFile::pending(
            &ObjectLocation::new("b", "Patient.ndjson.gz"),
            None,
            None,
            FileOptions::default(),
        );
        let lease = |since: &str, from: u64| Lease {
            owner: "w".into(),
            since: Some(since.into()),
            until: since.into(),
            from: Some(from),
            receipt: None,
        };
        let first = "2026-11-24T10:00:00Z";
        let recovery = |at: &str, barren: u32| Recovery {
            at: at.into(),
            count: 1,
            how: "redelivered".into(),
            barren,
            stuck_since: Some(first.into()),
        };
        let stuck = |barren: u32| Stuck {
            barren,
            since: Some(first.into()),
        };
        // First stall, died at its starting line: 1, stuck since that worker's claim.
        f.checkpoint.line = 40;
        f.lease = Some(lease(first, 40));
        assert_eq!(f.stuck_after_stall(), stuck(1));
        // Claimed again after the sweep acted, died at the same line: one more.
        f.recovery = Some(recovery("2026-11-24T10:01:00Z", 1));
        f.lease = Some(lease("2026-11-24T10:01:10.5+00:00", 40));
        assert_eq!(f.stuck_after_stall(), stuck(2));
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T10:15:00Z").unwrap();
        assert_eq!(stuck(2).seconds(now.with_timezone(&chrono::Utc)), 900.0);
        // Nobody claimed it since the sweep's last act: the same stall, not counted twice.
        f.recovery = Some(recovery("2026-11-24T10:02:00Z", 2));
        assert_eq!(f.stuck_after_stall(), stuck(2));
        // A worker that moved the checkpoint on before dying: back to 0.
        f.lease = Some(lease("2026-11-24T10:03:00Z", 40));
        f.checkpoint.line = 20_040;
        assert_eq!(f.stuck_after_stall(), Stuck::default());
    }

    #[test]
    fn file_names_name_types_as_aidbox_reads_them() {
        for (name, ty) in [
            ("Patient.ndjson.gz", Some("Patient")),
            ("Patient-001.ndjson.gz", Some("Patient")),
            ("Patient.2.ndjson.gz", Some("Patient")),
            ("data.ndjson.gz", None),
            ("1.ndjson.gz", None),
        ] {
            assert_eq!(
                type_from_file_name(name).as_ref().map(ResourceType::as_str),
                ty,
                "{name}"
            );
        }
    }

    #[test]
    fn ids_collapse_per_object_and_urls_hide_their_query() {
        let o = ObjectLocation::new("b", "dir/Patient.ndjson.gz");
        assert_eq!(file_id(&o), file_id(&o.clone()));
        assert_ne!(
            file_id(&o),
            file_id(&ObjectLocation::new("b", "Patient.ndjson.gz"))
        );
        let f = LoaderFile::pending_at(
            &Location::Url("https://h/x/Observation.ndjson.gz?X-Amz-Signature=s".into()),
            FileOptions::default(),
        );
        assert_eq!(f.file, "https://h/x/Observation.ndjson.gz");
        assert_eq!(f.resource_type.as_deref(), Some("Observation"));
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(LoaderFile::from_value(v).unwrap(), f);
    }
}
