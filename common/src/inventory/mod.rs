//! Import from an S3 Inventory (`seeds/lakefs-import-from-s3.md`): millions of objects
//! without listing the bucket, a dry run first, and gradual re-import of what changed.
//!
//! `aidbox.bulk/load-from-bucket` with `inventory` reads the objects from the inventory's
//! manifest (checked against `manifest.checksum`, every data file against its MD5)
//! instead of listing `bucket`. The objects are staged in Postgres
//! (`storage::plans`) and compared there with the LoaderFiles:
//!
//! | object in the source bucket since the last import | what the next inventory import does |
//! |---|---|
//! | created | **new**: a LoaderFile and a message; it loads |
//! | overwritten (another ETag) | **changed**: its LoaderFile is reset and it loads again (upserting) |
//! | unchanged | nothing |
//! | deleted | **gone**: its LoaderFile is marked `gone` (its resources stay loaded) |
//! | listed, but deleted or rewritten before its turn (inventories lag) | its LoaderFile ends `missing`, the import goes on |
//!
//! A dry run answers these counts at once (within the API's budget) and changes nothing.
//! An import is an `$import` session (pause, resume, abort, progress as `$import`'s):
//! its planning runs on the export workers as a resumable task ([`plan`]), staging a
//! whole inventory file per checkpoint and queueing a page of objects per checkpoint.
//! siphon never writes to the source bucket or the inventory bucket.

pub mod auto;
pub mod fetch;
pub mod manifest;
pub mod plan;
pub mod rows;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::manifest::{CsvColumns, FileFormat, ManifestFile};
use self::rows::InventoryRow;
use crate::error::{Error, Result};
use crate::ingestion::bucket::LoadFromBucket;
use crate::model::export::{ExportKind, TaskKind};
use crate::model::loader_file::{file_id, type_from_file_name};
use crate::model::session::{InventorySummary, PlanProgress, SessionRequest};
use crate::model::{FileOptions, ObjectLocation, StoreRef};
use crate::queue::{self, MessageQueue};
use crate::sessions::SessionView;
use crate::sources::s3::S3Source;
use crate::sources::UrlGuard;
use crate::storage::exports::NewTask;
use crate::storage::plans::{DryStage, StagedObject};
use crate::storage::{imports, Db};

/// Rows handed to Postgres per COPY.
const STAGE_BATCH: usize = 10_000;

/// Everything the planning of one inventory import needs, as stored with its job (never
/// a secret: `account` keys travel in the queue message only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryJob {
    /// The `$import` session (also the planning job's id).
    pub session: String,
    /// `s3://inventory-bucket/.../manifest.json`.
    pub manifest: String,
    pub inventory_bucket: String,
    /// The manifest's `creationTimestamp`, RFC 3339.
    pub created: String,
    /// The source bucket.
    pub bucket: String,
    /// Key prefixes to import (the `bucket` URL's prefix, joined with `prefixes`).
    pub prefixes: Vec<String>,
    pub glob: String,
    pub format: FileFormat,
    pub columns: CsvColumns,
    pub files: Vec<ManifestFile>,
    pub options: FileOptions,
    pub threads: u32,
    pub store: StoreRef,
    /// Who started the import and what it may write (see `LoaderFile::owner`).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub writes: Option<Vec<String>>,
}

impl InventoryJob {
    /// The staging plan's name.
    pub fn plan(&self) -> String {
        format!("inventory-{}", self.session)
    }
}

/// Objects the inventory listed that an import leaves out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Older versions and delete markers (inventories of versioned buckets).
    pub versions: u64,
    /// Keys outside the prefixes or not matching the glob.
    pub filtered: u64,
}

/// Reads and checks the manifest `params.inventory` names (checksum, source bucket,
/// format, columns, every data file present with its size): each problem is a 400 that
/// names it. `s3` reaches the inventory bucket (built from `params.store()`).
pub async fn prepare(
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
    session: &str,
) -> Result<InventoryJob> {
    let url = params
        .inventory
        .as_deref()
        .ok_or_else(|| Error::BadRequest("inventory is missing".into()))?;
    let (bucket, _) = params.bucket_and_prefix()?;
    if let Some(endpoint) = &params.endpoint_url {
        guard
            .check(endpoint)
            .await
            .map_err(|e| Error::BadRequest(format!("endpoint-url: {e}")))?;
    }
    let glob = params
        .glob
        .clone()
        .unwrap_or_else(|| "**/*.ndjson.gz".into());
    params.matcher()?;
    let options = params.file_options()?;
    let threads = params.threads()?;
    let (inventory_bucket, key) = fetch::locate(s3, url).await?;
    let manifest = fetch::manifest(s3, &inventory_bucket, &key).await?;
    if manifest.source_bucket != bucket {
        return Err(Error::BadRequest(format!(
            "the inventory s3://{inventory_bucket}/{key} lists bucket {:?}, not {bucket:?}",
            manifest.source_bucket
        )));
    }
    let format = manifest.format()?;
    let columns = manifest.csv_columns()?;
    fetch::check_files(s3, &inventory_bucket, &manifest.files).await?;
    let created = manifest
        .creation_timestamp
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let store = params.store();
    Ok(InventoryJob {
        session: session.to_string(),
        manifest: format!("s3://{inventory_bucket}/{key}"),
        inventory_bucket,
        created,
        bucket,
        prefixes: params.key_prefixes()?,
        glob,
        format,
        columns,
        files: manifest.files,
        options,
        threads,
        store: StoreRef {
            endpoint_url: store.endpoint_url.clone(),
            region: store.region.clone(),
            credentials: store.access_key_id.is_some(),
        },
        owner: params.owner.clone(),
        writes: params.writes.clone(),
    })
}

/// The objects of some inventory rows that an import loads.
fn staged(
    job: &InventoryJob,
    matcher: &globset::GlobMatcher,
    rows: Vec<InventoryRow>,
    skipped: &mut Skipped,
) -> Vec<StagedObject> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !row.current() {
            skipped.versions += 1;
            continue;
        }
        if !job.prefixes.iter().any(|p| row.key.starts_with(p.as_str()))
            || !matcher.is_match(&row.key)
        {
            skipped.filtered += 1;
            continue;
        }
        let location = ObjectLocation::new(&job.bucket, &row.key);
        out.push(StagedObject {
            file_id: file_id(&location),
            resource_type: type_from_file_name(location.file_name())
                .map(|t| t.as_str().to_string()),
            key: row.key,
            size: row.size,
            etag: row.etag,
            modified: row.modified,
        });
    }
    out
}

/// Where staged objects go.
pub enum Stage<'a> {
    /// The shared staging table: an import's planning, resumable part by part.
    Plan(&'a Db),
    /// A dry run's own temporary table.
    Dry(&'a DryStage),
}

/// Stages data file `part` of `job` into `plan` (what an earlier attempt staged of it is
/// cleared first). Returns the objects staged.
pub async fn stage_part(
    stage: Stage<'_>,
    s3: &S3Source,
    job: &InventoryJob,
    plan: &str,
    part: usize,
    skipped: &mut Skipped,
) -> Result<u64> {
    let file = &job.files[part];
    if let Stage::Plan(db) = stage {
        db.clear_part(plan, part as i32).await?;
    }
    let local = fetch::download(s3, &job.inventory_bucket, file).await?;
    let matcher = globset::GlobBuilder::new(&job.glob)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::BadRequest(format!("invalid glob {:?}: {e}", job.glob)))?
        .compile_matcher();
    // Reading is blocking (gzip, CSV, Parquet) and so is choosing what to stage (ids are
    // SHA-1 based): both run on their own thread and hand batches over a short channel,
    // so memory holds two batches at most while this task feeds COPY.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<StagedObject>>(2);
    let path = local.path.clone();
    let reading = job.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut skipped = Skipped::default();
        let job = &reading;
        let name = &job.files[part].key;
        rows::read(
            &path,
            name,
            job.format,
            &job.columns,
            STAGE_BATCH,
            &mut |batch| {
                let objects = staged(job, &matcher, batch, &mut skipped);
                tx.blocking_send(objects)
                    .map_err(|_| Error::Internal("the stager stopped".into()))
            },
        )
        .map(|_| skipped)
    });
    let mut count = 0u64;
    let mut failed = None;
    while let Some(objects) = rx.recv().await {
        let done = match stage {
            Stage::Plan(db) => {
                db.stage_part(plan, &job.bucket, part as i32, &objects)
                    .await
            }
            Stage::Dry(dry) => dry.stage(plan, &job.bucket, &objects).await,
        };
        if let Err(e) = done {
            failed = Some(e);
            break;
        }
        count += objects.len() as u64;
    }
    drop(rx);
    let read = reader
        .await
        .map_err(|e| Error::Internal(format!("the inventory reader died: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let more = read?;
    skipped.versions += more.versions;
    skipped.filtered += more.filtered;
    drop(local);
    Ok(count)
}

/// `dry-run: true` with `inventory`: what an import would do (files and bytes, per type;
/// new, changed, unchanged, gone; what the inventory lists that is skipped), touching
/// nothing but a staging table it empties again.
pub async fn dry_run(
    db: &Db,
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
) -> Result<Value> {
    let job = prepare(
        s3,
        guard,
        params,
        &format!("dry-run-{}", uuid::Uuid::new_v4()),
    )
    .await?;
    let plan = job.plan();
    let started = std::time::Instant::now();
    let mut skipped = Skipped::default();
    let dry = db.dry_stage().await?;
    for part in 0..job.files.len() {
        stage_part(Stage::Dry(&dry), s3, &job, &plan, part, &mut skipped).await?;
    }
    let staged = started.elapsed();
    let summary = dry.summary(&plan, &job.bucket, &job.prefixes).await?;
    dry.close().await?;
    tracing::debug!(
        manifest = job.manifest,
        stage_ms = staged.as_millis() as u64,
        compare_ms = (started.elapsed() - staged).as_millis() as u64,
        "inventory dry run timings"
    );
    tracing::info!(
        manifest = job.manifest,
        objects = summary.files,
        seconds = started.elapsed().as_secs_f64(),
        "inventory dry run"
    );
    let mut v = serde_json::to_value(summary).map_err(|e| Error::Internal(e.to_string()))?;
    v["dry-run"] = json!(true);
    v["inventory"] = json!({"manifest": job.manifest, "created": job.created,
        "format": job.format, "files": job.files.len(), "skipped": skipped});
    Ok(v)
}

/// Starts an inventory import: an `$import` session whose planning task goes on the
/// export queue (`task_queue`); answers the session.
pub async fn start(
    db: &Db,
    task_queue: &dyn MessageQueue,
    s3: &S3Source,
    guard: &dyn UrlGuard,
    params: &LoadFromBucket,
    owner: &str,
) -> Result<SessionView> {
    let session = uuid::Uuid::new_v4().to_string();
    let job = prepare(s3, guard, params, &session).await?;
    begin(db, task_queue, &job, params.store(), owner).await?;
    crate::sessions::view_session(db, &session).await
}

/// Creates the session and the planning job of a prepared `job`, and queues the task.
pub async fn begin(
    db: &Db,
    task_queue: &dyn MessageQueue,
    job: &InventoryJob,
    store: queue::StoreSpec,
    owner: &str,
) -> Result<()> {
    let request = SessionRequest {
        inventory: Some(InventorySummary {
            manifest: job.manifest.clone(),
            created: job.created.clone(),
            bucket: job.bucket.clone(),
            format: format!("{:?}", job.format),
            files: job.files.len() as u64,
            threads: job.threads,
            credentials: job.store.credentials,
        }),
        plan: Some(PlanProgress::default()),
        pull: None,
        submission: None,
    };
    let request = serde_json::to_value(&request).map_err(|e| Error::Internal(e.to_string()))?;
    {
        let client = db.client().await?;
        if !imports::insert(&**client, &job.session, None, &request, Some(owner)).await? {
            return Err(Error::Conflict(format!(
                "import session {} already exists",
                job.session
            )));
        }
    }
    let spec = serde_json::to_value(job).map_err(|e| Error::Internal(e.to_string()))?;
    let task = NewTask {
        kind: TaskKind::Inventory,
        resource_type: "inventory".into(),
        part: 1,
        range_from: None,
        range_to: None,
    };
    db.create_export(
        &job.session,
        ExportKind::Inventory,
        owner,
        &spec,
        &[task],
        &[],
    )
    .await?;
    let message = crate::exporting::ExportMessage {
        task: format!("{}/0", job.session),
        store,
    };
    if let Err(e) = queue::send(task_queue, &[message], None).await {
        let why = format!("could not queue the planning: {e}");
        let _ = db.cancel_export(&job.session).await;
        let client = db.client().await?;
        imports::set_status(
            &**client,
            &job.session,
            crate::model::SessionStatus::Error,
            Some(&why),
        )
        .await?;
        return Err(e);
    }
    tracing::info!(
        session = job.session,
        manifest = job.manifest,
        files = job.files.len(),
        "inventory import started"
    );
    Ok(())
}
