//! `aidbox.bulk/load-from-bucket`: list a bucket (every page), create a pending
//! LoaderFile for each matching file that has none, queue one message per new file.

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::loader_file::{file_id, type_from_file_name};
use crate::model::{FileOptions, LoaderFile, ObjectLocation, StoreRef};
use crate::queue::{self, LoadMessage, MessageQueue, StoreSpec};
use crate::sources::s3::S3Source;
use crate::sources::{SourceError, UrlGuard};
use crate::storage::plans::{PlanSummary, StagedObject};
use crate::storage::Db;

/// `account` as Aidbox takes it.
#[derive(Clone, Deserialize)]
pub struct Account {
    #[serde(rename = "access-key-id")]
    pub access_key_id: String,
    #[serde(rename = "secret-access-key")]
    pub secret_access_key: String,
    #[serde(default)]
    pub region: Option<String>,
}

/// The RPC's params.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFromBucket {
    /// `s3://name` or `s3://name/prefix`.
    pub bucket: String,
    /// At most this many files of this call load at once (default 4).
    #[serde(rename = "thread-num", default)]
    pub thread_num: Option<u32>,
    #[serde(default)]
    pub account: Option<Account>,
    /// An S3-compatible endpoint (LocalStack, MinIO, R2).
    #[serde(rename = "endpoint-url", default)]
    pub endpoint_url: Option<String>,
    /// Only keys under one of these prefixes (relative to the bucket).
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    /// Only keys matching this glob (`**/*.ndjson.gz`, `Patient*.ndjson.gz`); `*` does not
    /// cross `/`. Default: every key ending in `.ndjson.gz`.
    #[serde(default)]
    pub glob: Option<String>,
    #[serde(rename = "upsert?", default)]
    pub upsert: Option<bool>,
    #[serde(default)]
    pub strict: Option<bool>,
    /// Drop the tables' secondary indexes while the files load, rebuild them after.
    #[serde(rename = "disable-idx?", default)]
    pub disable_idx: Option<bool>,
    /// Drop the (empty) tables' primary keys while the files load, add them back after.
    #[serde(rename = "drop-primary-key?", default)]
    pub drop_primary_key: Option<bool>,
    /// The FHIR checks (`{enable: off|async|on, checks: struct|refs|all}`).
    #[serde(default)]
    pub validation: Option<serde_json::Value>,
    /// Answer what an import would do (files, bytes, new/changed/unchanged/gone) and
    /// change nothing.
    #[serde(rename = "dry-run", default)]
    pub dry_run: Option<bool>,
    /// Read the objects from this S3 Inventory (`s3://` URL of a `manifest.json`, or
    /// of an inventory's prefix: its newest complete run) instead of listing `bucket`.
    #[serde(default)]
    pub inventory: Option<String>,
    /// Who asked (set by the API, never read from the body): recorded on every
    /// LoaderFile, with the types it may write.
    #[serde(skip)]
    pub owner: Option<String>,
    #[serde(skip)]
    pub writes: Option<Vec<String>>,
}

/// What the call did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Started {
    pub message: &'static str,
    pub queued: u64,
    pub skipped: u64,
}

impl LoadFromBucket {
    /// The bucket's name and the key prefix in it.
    pub fn bucket_and_prefix(&self) -> Result<(String, String)> {
        crate::model::location::parse_s3_prefix(&self.bucket)
    }

    /// The glob keys must match (default `**/*.ndjson.gz`).
    pub fn matcher(&self) -> Result<GlobMatcher> {
        let pattern = self.glob.as_deref().unwrap_or("**/*.ndjson.gz");
        Ok(GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::BadRequest(format!("invalid glob {pattern:?}: {e}")))?
            .compile_matcher())
    }

    /// The key prefixes to read: the bucket's prefix joined with each of `prefixes`.
    pub fn key_prefixes(&self) -> Result<Vec<String>> {
        let (_, prefix) = self.bucket_and_prefix()?;
        Ok(match &self.prefixes {
            Some(list) if !list.is_empty() => list.iter().map(|p| format!("{prefix}{p}")).collect(),
            _ => vec![prefix],
        })
    }

    /// The options the files are loaded with; refuses contradictory ones.
    pub fn file_options(&self) -> Result<FileOptions> {
        let options = FileOptions {
            upsert: self.upsert.unwrap_or(true),
            strict: self.strict.unwrap_or(false),
            disable_indexes: self.disable_idx.unwrap_or(false),
            drop_primary_key: self.drop_primary_key.unwrap_or(false),
            validation: crate::model::Validation::parse_opt(self.validation.as_ref())?,
            record_txids: false,
        };
        if options.drop_primary_key && !options.upsert {
            return Err(Error::BadRequest(
                "drop-primary-key? cannot go with upsert?: false: without the primary key an \
                 existing id cannot be told apart from a new one"
                    .into(),
            ));
        }
        Ok(options)
    }

    /// `thread-num` (default 4, at least 1).
    pub fn threads(&self) -> Result<u32> {
        match self.thread_num.unwrap_or(4) {
            0 => Err(Error::BadRequest("thread-num must be at least 1".into())),
            n => Ok(n),
        }
    }

    /// The store to read from, as queue messages carry it.
    pub fn store(&self) -> StoreSpec {
        StoreSpec {
            endpoint_url: self.endpoint_url.clone(),
            region: self.account.as_ref().and_then(|a| a.region.clone()),
            access_key_id: self.account.as_ref().map(|a| a.access_key_id.clone()),
            secret_access_key: self.account.as_ref().map(|a| a.secret_access_key.clone()),
        }
    }
}

/// Runs the call (or its dry run, with `dry-run`). `s3` must be built from
/// `params.store()` (see `sources::s3::client`).
pub async fn load_from_bucket(
    db: &Db,
    queue: &dyn MessageQueue,
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
) -> Result<serde_json::Value> {
    if params.dry_run.unwrap_or(false) {
        let summary = dry_run(db, s3, guard, params).await?;
        let mut v = serde_json::to_value(summary).map_err(|e| Error::Internal(e.to_string()))?;
        v["dry-run"] = json!(true);
        return Ok(v);
    }
    let started = import(db, queue, s3, guard, params).await?;
    serde_json::to_value(started).map_err(|e| Error::Internal(e.to_string()))
}

/// The bucket's matching objects, a page at a time: `(key, size, etag)`.
struct Listing<'a> {
    s3: &'a S3Source,
    bucket: String,
    /// Prefixes still to list.
    prefixes: Vec<String>,
    matcher: GlobMatcher,
    /// The prefix being listed and where its next page starts.
    current: Option<(String, Option<String>)>,
}

/// Checks the params every mode shares; returns the listing and the bucket's prefix.
async fn listing_of<'a>(
    s3: &'a S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
) -> Result<(Listing<'a>, String)> {
    let (bucket, prefix) = params.bucket_and_prefix()?;
    if let Some(url) = &params.endpoint_url {
        // https, no internal addresses, unless SIPHON_URL_ALLOWLIST names it (LocalStack).
        guard
            .check(url)
            .await
            .map_err(|e| Error::BadRequest(format!("endpoint-url: {e}")))?;
    }
    let matcher = params.matcher()?;
    let mut prefixes = params.key_prefixes()?;
    prefixes.reverse();
    Ok((
        Listing {
            s3,
            bucket,
            prefixes,
            matcher,
            current: None,
        },
        prefix,
    ))
}

impl Listing<'_> {
    /// The next page of matching objects (possibly empty), or `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Vec<(String, Option<u64>, Option<String>)>>> {
        let (prefix, token) = match self.current.take() {
            Some(c) => c,
            None => match self.prefixes.pop() {
                Some(p) => (p, None),
                None => return Ok(None),
            },
        };
        let what = format!("bucket s3://{}", self.bucket);
        let page = self
            .s3
            .list_page(&self.bucket, &prefix, None, token, &what)
            .await
            .map_err(|e| match e {
                SourceError::NotFound(m)
                | SourceError::AccessDenied(m)
                | SourceError::Other(m)
                | SourceError::Refused(m) => Error::BadRequest(m),
                SourceError::Transient(m) => Error::Unavailable(m),
                SourceError::Changed(m) => Error::Internal(m),
            })?;
        if page.next.is_some() {
            self.current = Some((prefix, page.next));
        }
        Ok(Some(
            page.objects
                .into_iter()
                .filter(|o| self.matcher.is_match(&o.key))
                .map(|o| (o.key, o.size, o.etag))
                .collect(),
        ))
    }
}

/// `dry-run: true`: what an import would do, touching nothing but a staging table.
async fn dry_run(
    db: &Db,
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
) -> Result<PlanSummary> {
    let (mut listing, _) = listing_of(s3, guard, params).await?;
    let prefixes: Vec<String> = listing.prefixes.clone();
    let plan = format!("dry-run-{}", uuid::Uuid::new_v4());
    let bucket = listing.bucket.clone();
    let result = async {
        while let Some(page) = listing.next_page().await? {
            let staged: Vec<StagedObject> = page
                .into_iter()
                .map(|(key, size, etag)| {
                    let location = ObjectLocation::new(&bucket, &key);
                    StagedObject {
                        file_id: file_id(&location),
                        resource_type: type_from_file_name(location.file_name())
                            .map(|t| t.as_str().to_string()),
                        key,
                        size: size.map(|s| s as i64),
                        etag,
                        modified: None,
                    }
                })
                .collect();
            db.stage_objects(&plan, &bucket, &staged).await?;
        }
        db.plan_summary(&plan, &bucket, &prefixes).await
    }
    .await;
    db.drop_plan(&plan).await?;
    result
}

/// The import: a LoaderFile and a message for each matching object without one.
async fn import(
    db: &Db,
    queue: &dyn MessageQueue,
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
) -> Result<Started> {
    let (mut listing, _) = listing_of(s3, guard, params).await?;
    let bucket = listing.bucket.clone();
    let threads = params.threads()?;
    let options = params.file_options()?;
    let group = uuid::Uuid::new_v4().to_string();
    let store = params.store();
    let store_ref = StoreRef {
        endpoint_url: store.endpoint_url.clone(),
        region: store.region.clone(),
        credentials: store.access_key_id.is_some(),
    };
    let mut started = Started {
        message: "Upload started",
        queued: 0,
        skipped: 0,
    };
    while let Some(page) = listing.next_page().await? {
        {
            let mut files = Vec::new();
            for (key, size, etag) in page {
                let location = ObjectLocation::new(&bucket, &key);
                let mut file = LoaderFile::pending(&location, etag, size, options)
                    .owned_by(params.owner.clone(), params.writes.clone());
                file.group = Some(group.clone());
                file.threads = Some(threads);
                file.store = store_ref.clone();
                files.push(file);
            }
            let created = db.create_loader_files(&files).await?;
            started.skipped += (files.len() - created.len()) as u64;
            let messages: Vec<LoadMessage> = created
                .iter()
                .map(|f| LoadMessage::for_file(f, store.clone()))
                .collect();
            if let Err(e) = queue::send(queue, &messages, None).await {
                // Nothing queued for these: remove their LoaderFiles so a retry picks them up.
                for f in &created {
                    let _ = db.delete_loader_file(&f.id).await;
                }
                return Err(e);
            }
            started.queued += messages.len() as u64;
        }
    }
    tracing::info!(
        bucket,
        group,
        queued = started.queued,
        skipped = started.skipped,
        "load-from-bucket"
    );
    Ok(started)
}

/// `aidbox.bulk/load-from-bucket-status`: the totals of `owner`'s files (`None`: all):
/// LoaderFiles by status, resources loaded and failed, tables loading without indexes,
/// and siphon's addition, `throughput`: the resources loaded in each of the last 60
/// minutes, oldest first (see [`super::throughput::per_minute`]).
pub async fn status(db: &Db, owner: Option<&str>) -> Result<serde_json::Value> {
    let mut files = json!({"pending": 0, "in-progress": 0, "done": 0, "error": 0});
    let (mut total, mut loaded, mut failed) = (0i64, 0i64, 0i64);
    for (status, n, l, f) in db.loader_file_totals(owner).await? {
        files[status] = json!(n);
        total += n;
        loaded += l;
        failed += f;
    }
    // Tables whose indexes (or primary key) are dropped for a load right now.
    let bulk = db.bulk_tables().await?;
    let now = chrono::Utc::now();
    let minutes = super::throughput::per_minute(
        &last_hour_runs(db, owner, now).await?,
        now,
        THROUGHPUT_MINUTES,
    );
    Ok(json!({"files": files, "total-files": total,
              "resources": {"loaded": loaded, "failed": failed}, "indexes-dropped": bulk,
              "throughput": {"to": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                             "loaded-per-minute": minutes}}))
}

/// Minutes of `throughput` in the status.
const THROUGHPUT_MINUTES: usize = 60;
/// Runs read for it at most (the latest first; a busier hour is undercounted, not slow).
const THROUGHPUT_RUNS: i64 = 20_000;

async fn last_hour_runs(
    db: &Db,
    owner: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<super::throughput::Span>> {
    // A minute of slack: `end` is compared as text, and stored instants carry fractions.
    let since = now - chrono::TimeDelta::minutes(THROUGHPUT_MINUTES as i64 + 1);
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let parse = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    Ok(db
        .loader_file_runs(owner, &since, THROUGHPUT_RUNS)
        .await?
        .into_iter()
        .filter_map(|(start, end, loaded)| {
            Some(super::throughput::Span {
                start: parse(&start)?,
                end: end.as_deref().and_then(parse),
                loaded: u64::try_from(loaded).ok()?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> LoadFromBucket {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bucket_urls_globs_and_stores() {
        let p = params(json!({"bucket": "s3://b/data/2026"}));
        assert_eq!(
            p.bucket_and_prefix().unwrap(),
            ("b".into(), "data/2026".into())
        );
        let m = p.matcher().unwrap();
        assert!(m.is_match("data/2026/Patient.ndjson.gz"));
        assert!(!m.is_match("data/2026/Patient.ndjson"));
        let p = params(json!({"bucket": "s3://b", "glob": "*.ndjson.gz"}));
        let m = p.matcher().unwrap();
        assert!(m.is_match("Patient.ndjson.gz") && !m.is_match("dir/Patient.ndjson.gz"));
        for bad in ["b", "s3://", "https://b"] {
            assert!(
                params(json!({"bucket": bad})).bucket_and_prefix().is_err(),
                "{bad}"
            );
        }
        assert!(params(json!({"bucket": "s3://b", "glob": "a[" }))
            .matcher()
            .is_err());
        let p = params(
            json!({"bucket": "s3://b", "endpoint-url": "http://127.0.0.1:4566",
            "account": {"access-key-id": "AK", "secret-access-key": "SK", "region": "eu-west-1"}}),
        );
        let store = p.store();
        assert_eq!(store.region.as_deref(), Some("eu-west-1"));
        assert!(!format!("{store:?}").contains("SK"));
        assert!(
            serde_json::from_value::<LoadFromBucket>(json!({"bucket": "s3://b", "bogus": 1}))
                .is_err()
        );
    }
}
