//! Exports to S3 (SPEC section 7): FHIR Bulk Data `$export` (this module's
//! [`Exports`]) on export workers ([`task`]) that stream `COPY ... TO STDOUT` into
//! resumable multipart uploads.
//!
//! An export is a job and one task per resource type, big types split into id ranges
//! so several run at once. The status answers 202 while tasks run and the manifest,
//! with freshly presigned URLs, once they are all done.

pub mod bucket;
pub mod layout;
pub mod request;
pub mod rows;
pub mod spec;
pub mod task;
pub mod type_filter;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::request::{ExportRequest, Level};
use self::spec::{ExportSpec, SpecLevel};
use crate::auth::scopes::Perm;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::fhir;
use crate::model::export::{Export, ExportKind, ExportStatus, PageFile, TaskKind, TaskStatus};
use crate::queue::{self, MessageQueue, StoreSpec};
use crate::resource_type::ResourceType;
use crate::sinks::{ObjectMeta, ObjectSink};
use crate::storage::exports::NewTask;
use crate::storage::Db;

/// Where and how exports are written.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// The export bucket.
    pub bucket: String,
    /// Key prefix inside it (empty, or ending with `/`).
    pub prefix: String,
    /// How long a presigned download URL works (default 1 h); signed again at every
    /// status request.
    pub url_lifetime: Duration,
    /// How long an export's files are kept (the bucket's lifecycle rule deletes them
    /// after; the status then answers 404). Default 7 days.
    pub retention: Duration,
    /// Status requests closer together than this get 429 + Retry-After.
    pub min_poll_interval: Duration,
    /// A type with more rows than this is split into id ranges exported in parallel.
    pub range_rows: i64,
    /// At most this many ranges per type.
    pub max_ranges: i64,
    /// A client with this many `$export`s active gets 429 + `Retry-After` for the next
    /// kick-off (the Bulk Data IG's answer to too many concurrent exports).
    pub max_active: i64,
    /// With `allowPartialManifests`: at most this many files on one manifest page.
    pub page_files: usize,
}

impl ExportConfig {
    /// `SIPHON_EXPORT_BUCKET` (exports are off without it), `SIPHON_EXPORT_PREFIX`,
    /// `SIPHON_EXPORT_URL_SECONDS` (3600), `SIPHON_EXPORT_RETENTION_DAYS` (7),
    /// `SIPHON_EXPORT_MIN_POLL_MS` (500), `SIPHON_EXPORT_RANGE_ROWS` (500,000),
    /// `SIPHON_EXPORT_MAX_RANGES` (8), `SIPHON_EXPORT_MAX_ACTIVE` (4 per client),
    /// `SIPHON_EXPORT_PAGE_FILES` (1,000).
    pub fn from_env(
        env: &crate::config::Env,
    ) -> std::result::Result<Option<Self>, crate::config::ConfigError> {
        let Some(bucket) = env.get("SIPHON_EXPORT_BUCKET") else {
            return Ok(None);
        };
        let mut prefix = env
            .get("SIPHON_EXPORT_PREFIX")
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Ok(Some(ExportConfig {
            bucket: bucket.to_string(),
            prefix,
            url_lifetime: Duration::from_secs(env.number(
                "SIPHON_EXPORT_URL_SECONDS",
                3600,
                60,
                7 * 24 * 3600,
            )?),
            retention: Duration::from_secs(
                env.number("SIPHON_EXPORT_RETENTION_DAYS", 7, 1, 3650)? * 86_400,
            ),
            min_poll_interval: Duration::from_millis(env.number(
                "SIPHON_EXPORT_MIN_POLL_MS",
                500,
                0,
                60_000,
            )?),
            range_rows: env.number("SIPHON_EXPORT_RANGE_ROWS", 500_000, 1, 1 << 40)? as i64,
            max_ranges: env.number("SIPHON_EXPORT_MAX_RANGES", 8, 1, 64)? as i64,
            max_active: env.number("SIPHON_EXPORT_MAX_ACTIVE", 4, 1, 1000)? as i64,
            page_files: env.number("SIPHON_EXPORT_PAGE_FILES", 1000, 1, 100_000)? as usize,
        }))
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            bucket: String::new(),
            prefix: String::new(),
            url_lifetime: Duration::from_secs(3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            min_poll_interval: Duration::from_millis(500),
            range_rows: 500_000,
            max_ranges: 8,
            max_active: 4,
            page_files: 1000,
        }
    }
}

/// The body of an export-queue message: one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportMessage {
    pub task: String,
    /// How to reach the bucket when not the function's own store (dump-to-bucket).
    #[serde(default, skip_serializing_if = "StoreSpec::is_default")]
    pub store: StoreSpec,
}

/// What the status endpoint answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// 202 with `X-Progress`.
    Running { progress: String },
    /// 200 with the manifest (or, with `allowPartialManifests`, its first page, or the
    /// page asked for); the URLs in it expire at `expires`.
    Complete {
        manifest: Value,
        expires: DateTime<Utc>,
    },
    /// `allowPartialManifests`, still running: 202 with `X-Progress` and the first page
    /// of the manifest of the files finished so far.
    Partial {
        manifest: Value,
        expires: DateTime<Utc>,
        progress: String,
    },
    /// An error status with an OperationOutcome.
    Failed { message: String },
}

/// A status request's answer, and how to give it.
#[derive(Debug)]
pub struct StatusAnswer {
    pub status: Status,
    /// `Prefer: separate-export-status` at the kick-off (STU3): the response's HTTP
    /// status is the status request's own (200), the export's goes in `X-Export-Status`.
    pub separate: bool,
}

/// The manifest's `error` item for the kick-off's error file: a file item (`type`,
/// `url`, `count`) as the IG defines it, which is also the file's OperationOutcomes
/// merged into one (`resourceType`, `issue`), so that clients that look for the
/// OperationOutcome naming an ignored parameter in the manifest itself (SMART's Bulk
/// Data tester does) find it there too; clients that read file items ignore the extra
/// fields.
fn error_item(url: String, outcomes: &[Value]) -> Value {
    let issues: Vec<Value> = outcomes
        .iter()
        .flat_map(|o| o["issue"].as_array().cloned().unwrap_or_default())
        .collect();
    json!({"type": "OperationOutcome", "url": url, "count": outcomes.len(),
           "resourceType": "OperationOutcome", "issue": issues})
}

/// The `$export` service: what the API calls.
pub struct Exports {
    pub db: Db,
    /// The export queue.
    pub queue: Arc<dyn MessageQueue>,
    /// The export bucket.
    pub sink: Arc<dyn ObjectSink>,
    pub config: ExportConfig,
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("export {id} not found"))
}

fn stored_spec(export: &Export) -> Result<ExportSpec> {
    serde_json::from_value(export.request.clone())
        .map_err(|e| Error::Internal(format!("unreadable export {}: {e}", export.id)))
}

/// Every finished file of an export's tasks, in task order: resources under `output`,
/// deletions (transaction Bundles) under `deleted`.
fn finished_files(tasks: &[crate::model::export::ExportTask]) -> Vec<PageFile> {
    let mut files = Vec::new();
    for task in tasks {
        let (list, resource_type) = match task.kind {
            TaskKind::Resources | TaskKind::Query => ("output", task.resource_type.as_str()),
            // Files of blocks hold many types: their manifest items have no `type`.
            TaskKind::Blocks => ("output", ""),
            TaskKind::Deleted => ("deleted", "Bundle"),
            TaskKind::Inventory | TaskKind::Pull => continue,
        };
        for file in &task.checkpoint.files {
            files.push(PageFile {
                list: list.into(),
                resource_type: resource_type.into(),
                key: file.key.clone(),
                count: file.count,
            });
        }
    }
    files
}

impl Exports {
    /// The types an export of `request` covers that have a table.
    /// The types an export writes: those asked for (each must be readable by `who`:
    /// 403 otherwise), or every type of the level that `who` may read (403 when it may
    /// read none), of those that have a table.
    async fn types(&self, request: &ExportRequest, who: &Principal) -> Result<Vec<ResourceType>> {
        let tables = self.db.resource_tables().await?;
        let exists = |t: &str| tables.iter().any(|x| x == &t.to_ascii_lowercase());
        // Blocks hold the resources of Patient compartments, whatever the level.
        let compartment = request.level != Level::System || request.organize_by_patient;
        let mut out = Vec::new();
        match &request.types {
            Some(types) => {
                for ty in types {
                    who.require(ty.as_str(), Perm::Read)?;
                    if compartment && fhir::patient_compartment(ty.as_str()).is_none() {
                        let why = format!("_type {ty} is not in the Patient compartment");
                        if !request.lenient {
                            return Err(Error::BadRequest(format!(
                                "{why} (send Prefer: handling=lenient to have it ignored)"
                            )));
                        }
                        continue;
                    }
                    if exists(ty.as_str()) {
                        out.push(ty.clone());
                    }
                }
            }
            None => {
                let all: Vec<&str> = if compartment {
                    fhir::patient_compartment_types().collect()
                } else {
                    fhir::resource_types().iter().map(String::as_str).collect()
                };
                let readable = who.grants.readable(all.iter().copied());
                if !who.admin && readable.is_empty() {
                    return Err(Error::Forbidden(format!(
                        "client {:?} may read none of the types this export covers (it needs system/<Type>.r scopes)",
                        who.client_id
                    )));
                }
                for t in all {
                    if exists(t) && who.may(t, Perm::Read) {
                        out.push(ResourceType::parse(t)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The Patients of a Group-level export: the Group's active `Patient` members (see
    /// [`member_patient`]), narrowed to `patient` when given.
    async fn group_members(&self, group: &str, patients: &[String]) -> Result<Vec<String>> {
        let ty = ResourceType::parse("Group")?;
        let stored = self
            .db
            .get(&ty, group)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Group/{group} not found")))?;
        let mut members: Vec<String> = stored.resource["member"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["inactive"] != true)
            .filter_map(|m| member_patient(&m["entity"]))
            .collect();
        if !patients.is_empty() {
            members.retain(|m| patients.contains(m));
        }
        members.sort();
        members.dedup();
        Ok(members)
    }

    /// How many id ranges `rows` rows are cut into.
    fn parts(&self, rows: i64) -> i64 {
        ((rows + self.config.range_rows - 1) / self.config.range_rows.max(1))
            .clamp(1, self.config.max_ranges.max(1))
    }

    /// The tasks of an export of `types`: one per type, big types cut into id ranges;
    /// with `organized`, Patient blocks over ranges of Patient ids instead, cut by the
    /// rows of all the types (none when no Patient is stored: no block has a Patient).
    async fn tasks(
        &self,
        types: &[ResourceType],
        deleted: bool,
        organized: bool,
    ) -> Result<Vec<NewTask>> {
        let mut tasks = Vec::new();
        if organized {
            let patient = ResourceType::parse("Patient")?;
            if self.db.row_count(&patient).await? > 0 && !types.is_empty() {
                let mut rows = 0;
                for ty in types {
                    rows += self.db.row_count(ty).await?;
                }
                let cuts = self.db.id_cuts(&patient, self.parts(rows)).await?;
                tasks.extend(NewTask::ranges_of(TaskKind::Blocks, &patient, &cuts));
            }
        } else {
            for ty in types {
                let rows = self.db.row_count(ty).await?;
                let cuts = self.db.id_cuts(ty, self.parts(rows)).await?;
                tasks.extend(NewTask::ranges(ty, &cuts));
            }
        }
        if deleted {
            tasks.push(NewTask {
                kind: TaskKind::Deleted,
                resource_type: "Bundle".into(),
                part: 1,
                range_from: None,
                range_to: None,
            });
        }
        Ok(tasks)
    }

    /// Starts an export for `who` (its owner); `url` is the kick-off URL. Answers the
    /// export (its id makes the status URL).
    pub async fn kick_off(
        &self,
        request: ExportRequest,
        who: &Principal,
        url: &str,
    ) -> Result<Export> {
        let owner = who.client_id.as_str();
        let types = self.types(&request, who).await?;
        let patients = match &request.level {
            Level::Group(group) => {
                who.require("Group", Perm::Read)?;
                self.group_members(group, &request.patients).await?
            }
            _ => request.patients.clone(),
        };
        let limited = matches!(request.level, Level::Group(_)) || !patients.is_empty();
        let id = uuid::Uuid::new_v4().to_string();
        let mut spec = self.spec(&request, &types, limited, url, &id);
        // What the kick-off ignored or accepted without applying goes to the error file,
        // written once the export exists (a kick-off over the cap leaves nothing behind).
        let outcomes = spec.kick_off_outcomes();
        let error_file = (!outcomes.is_empty()).then(|| format!("{}errors.ndjson", spec.prefix));
        spec.error_file = error_file.clone();
        let tasks = self
            .tasks(&types, request.since.is_some(), request.organize_by_patient)
            .await?;
        let stored = serde_json::to_value(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let patients: &[String] = if limited { &patients } else { &[] };
        let export = self
            .db
            .create_export_within_cap(&id, owner, &stored, &tasks, patients, self.config.max_active)
            .await?
            .ok_or_else(|| Error::Throttled {
                message: format!(
                    "client {owner} already has {} exports running (SIPHON_EXPORT_MAX_ACTIVE); wait for one to complete or cancel one",
                    self.config.max_active
                ),
                retry_after_secs: 30,
            })?;
        if let Some(key) = error_file {
            self.write_outcomes(&id, &key, &outcomes).await?;
        }
        self.queue_tasks(&id, tasks.len()).await?;
        if tasks.is_empty() {
            self.db.settle_export(&id).await?;
        }
        tracing::info!(
            export = id,
            owner,
            types = types.len(),
            tasks = tasks.len(),
            "export started"
        );
        Ok(export)
    }

    /// What export `id` stores about itself: the request's checked parameters, `types`
    /// resolved, `limited` to listed Patients, its files under the export's prefix.
    fn spec(
        &self,
        request: &ExportRequest,
        types: &[ResourceType],
        limited: bool,
        url: &str,
        id: &str,
    ) -> ExportSpec {
        ExportSpec {
            level: match &request.level {
                Level::System => SpecLevel::System,
                Level::Patient => SpecLevel::Patient,
                Level::Group(_) => SpecLevel::Group,
            },
            group: match &request.level {
                Level::Group(g) => Some(g.clone()),
                _ => None,
            },
            types: types.iter().map(|t| t.as_str().to_string()).collect(),
            since: request.since.map(|t| t.to_rfc3339()),
            until: request.until.map(|t| t.to_rfc3339()),
            type_filters: request.type_filters.clone(),
            patients: limited,
            elements: request
                .elements
                .iter()
                .map(|e| {
                    (
                        e.resource_type.as_ref().map(|t| t.as_str().to_string()),
                        e.name.clone(),
                    )
                })
                .collect(),
            gzip: request.gzip,
            format: Some(request.format.name().to_string()),
            request: url.to_string(),
            bucket: self.config.bucket.clone(),
            prefix: format!("{}{id}/", self.config.prefix),
            ignored: request.ignored.clone(),
            associated: request.associated.clone(),
            partial_manifests: request.partial_manifests,
            organize_by: request.organize_by_patient.then(|| "Patient".to_string()),
            separate_status: request.separate_status,
            ..ExportSpec::default()
        }
    }

    /// Queues the `count` tasks of export `id`; when that fails the export is cancelled.
    async fn queue_tasks(&self, id: &str, count: usize) -> Result<()> {
        let messages: Vec<ExportMessage> = (0..count)
            .map(|n| ExportMessage {
                task: format!("{id}/{n}"),
                store: StoreSpec::default(),
            })
            .collect();
        if let Err(e) = queue::send(&*self.queue, &messages, None).await {
            tracing::error!(export = id, error = %e, "cannot queue the export's tasks");
            let _ = self.db.cancel_export(id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Writes the kick-off's OperationOutcomes to the export's error file at `key`; on
    /// failure the export is cancelled.
    async fn write_outcomes(
        &self,
        id: &str,
        key: &str,
        outcomes: &[serde_json::Value],
    ) -> Result<()> {
        let lines: String = outcomes.iter().map(|o| o.to_string() + "\n").collect();
        let meta = ObjectMeta {
            content_type: "application/fhir+ndjson".into(),
            content_encoding: None,
        };
        if let Err(e) = self.sink.put(key, &meta, lines.into()).await {
            tracing::error!(export = id, error = %e, "cannot write the kick-off's error file");
            let _ = self.db.cancel_export(id).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// The export if `who` may see it (its owner, or the admin); 404 otherwise, so
    /// other clients cannot tell it exists.
    async fn visible(&self, id: &str, who: &Principal) -> Result<Export> {
        let export = self.db.export(id).await?.ok_or_else(|| not_found(id))?;
        // Dumps to a bucket and inventory plannings have their own endpoints.
        if export.kind != ExportKind::Fhir || (!who.admin && export.owner != who.client_id) {
            return Err(not_found(id));
        }
        let created = DateTime::parse_from_rfc3339(&export.created)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        if Utc::now() - created
            > chrono::Duration::from_std(self.config.retention).unwrap_or_default()
        {
            return Err(Error::NotFound(format!(
                "export {id} expired: its files are kept {} days",
                self.config.retention.as_secs() / 86_400
            )));
        }
        Ok(export)
    }

    /// The status endpoint (`GET`); `base` is the URL the API is reached at (for the
    /// `link` of manifest pages).
    pub async fn status(&self, id: &str, who: &Principal, base: &str) -> Result<StatusAnswer> {
        let export = self.visible(id, who).await?;
        // A cancelled export is gone (404, as the IG says), however soon it is polled.
        if export.status == ExportStatus::Cancelled {
            return Err(Error::NotFound(format!("export {id} was cancelled")));
        }
        if !self
            .db
            .poll_export(id, self.config.min_poll_interval.as_millis() as i64)
            .await?
        {
            return Err(Error::Throttled {
                message: format!(
                    "export {id} was polled less than {} ms ago: wait for Retry-After",
                    self.config.min_poll_interval.as_millis()
                ),
                retry_after_secs: 1,
            });
        }
        let spec = stored_spec(&export)?;
        Ok(StatusAnswer {
            status: self.current(&export, &spec, base).await?,
            separate: spec.separate_status,
        })
    }

    /// Where export `export` stands: running (with the files finished so far, when
    /// partial manifests were asked for), complete with its manifest, or failed.
    async fn current(&self, export: &Export, spec: &ExportSpec, base: &str) -> Result<Status> {
        let id = export.id.as_str();
        let tasks = self.db.export_tasks(id).await?;
        match export.status {
            ExportStatus::Cancelled => Err(Error::NotFound(format!("export {id} was cancelled"))),
            ExportStatus::Error => Ok(Status::Failed {
                message: format!(
                    "export {id} failed: {}",
                    export.error.as_deref().unwrap_or("unknown error")
                ),
            }),
            ExportStatus::Active => {
                let done = tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Done)
                    .count();
                let rows: i64 = tasks.iter().map(|t| t.count).sum();
                let progress = format!(
                    "in progress: {done}/{} tasks done, {rows} resources",
                    tasks.len()
                );
                if spec.partial_manifests {
                    // The files finished so far, on pages that never change once returned.
                    let pages = self
                        .db
                        .seal_export_pages(id, &finished_files(&tasks), self.config.page_files)
                        .await?;
                    if !pages.is_empty() {
                        let manifest = self.manifest(export, spec, &pages, 1, base).await?;
                        return Ok(Status::Partial {
                            manifest,
                            expires: self.expires(),
                            progress,
                        });
                    }
                }
                Ok(Status::Running { progress })
            }
            ExportStatus::Done => {
                let files = finished_files(&tasks);
                let pages = if spec.partial_manifests {
                    self.db
                        .seal_export_pages(id, &files, self.config.page_files)
                        .await?
                } else {
                    vec![files]
                };
                Ok(Status::Complete {
                    manifest: self.manifest(export, spec, &pages, 1, base).await?,
                    expires: self.expires(),
                })
            }
        }
    }

    /// Page `n` of an export's manifest (`allowPartialManifests`), at the `link` a
    /// previous page gave: as it was when first returned (its URLs signed anew). 404 for a
    /// page not written yet.
    pub async fn page(
        &self,
        id: &str,
        who: &Principal,
        n: usize,
        base: &str,
    ) -> Result<StatusAnswer> {
        let export = self.visible(id, who).await?;
        if export.status == ExportStatus::Cancelled {
            return Err(Error::NotFound(format!("export {id} was cancelled")));
        }
        let spec = stored_spec(&export)?;
        let pages = self.db.export_pages(id).await?;
        if !spec.partial_manifests || n == 0 || n > pages.len() {
            return Err(Error::NotFound(format!(
                "export {id} has no manifest page {n}"
            )));
        }
        Ok(StatusAnswer {
            status: Status::Complete {
                manifest: self.manifest(&export, &spec, &pages, n, base).await?,
                expires: self.expires(),
            },
            separate: spec.separate_status,
        })
    }

    fn expires(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.config.url_lifetime).unwrap_or_default()
    }

    /// Manifest page `n` (from 1) of `pages`, its URLs presigned now: page 1 carries the
    /// kick-off's error file, and each page but the last a `link` to the next.
    async fn manifest(
        &self,
        export: &Export,
        spec: &ExportSpec,
        pages: &[Vec<PageFile>],
        n: usize,
        base: &str,
    ) -> Result<Value> {
        let ttl = self.config.url_lifetime;
        let mut output = Vec::new();
        let mut deleted = Vec::new();
        for file in pages.get(n - 1).map(Vec::as_slice).unwrap_or_default() {
            let url = self.sink.presign_get(&file.key, ttl).await?;
            let mut entry = json!({"type": file.resource_type, "url": url, "count": file.count});
            if file.resource_type.is_empty() {
                entry.as_object_mut().map(|o| o.remove("type"));
            }
            if file.list == "deleted" {
                deleted.push(entry);
            } else {
                output.push(entry);
            }
        }
        let mut error = Vec::new();
        if let (1, Some(key)) = (n, &spec.error_file) {
            let url = self.sink.presign_get(key, ttl).await?;
            error.push(error_item(url, &spec.kick_off_outcomes()));
        }
        let mut manifest = json!({
            "transactionTime": export.transaction_time,
            "request": spec.request,
            "requiresAccessToken": false,
            "output": output,
            "error": error,
        });
        if spec.since.is_some() {
            manifest["deleted"] = json!(deleted);
        }
        if let Some(by) = &spec.organize_by {
            manifest["outputOrganizedBy"] = json!(by);
        }
        if n < pages.len() {
            manifest["link"] = json!([{"relation": "next",
                "url": format!("{base}/$export-status/{}?page={}", export.id, n + 1)}]);
        }
        Ok(manifest)
    }

    /// Exports `who` may see (all for the admin), newest first, with their progress.
    pub async fn list(&self, who: &Principal, limit: i64, offset: i64) -> Result<Vec<Value>> {
        let owner = (!who.admin).then_some(who.client_id.as_str());
        let mut out = Vec::new();
        for export in self.db.exports(owner, limit, offset).await? {
            let tasks = self.db.export_tasks(&export.id).await?;
            let done = tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Done)
                .count();
            let rows: i64 = tasks.iter().map(|t| t.count).sum();
            let files: usize = tasks.iter().map(|t| t.checkpoint.files.len()).sum();
            out.push(json!({
                "id": export.id, "kind": export.kind.as_str(), "owner": export.owner,
                "status": export.status.as_str(), "error": export.error,
                "created": export.created, "transactionTime": export.transaction_time,
                "request": export.request["request"],
                "tasks": tasks.len(), "tasksDone": done, "resources": rows, "files": files,
            }));
        }
        Ok(out)
    }

    /// `DELETE` on the status URL: a running export stops (its workers abort their
    /// uploads and delete their files), a complete one has its files deleted. Afterwards
    /// the status is 404.
    pub async fn cancel(&self, id: &str, who: &Principal) -> Result<()> {
        let export = self.visible(id, who).await?;
        let Some(was) = self.db.cancel_export(id).await? else {
            return Err(Error::NotFound(format!("export {id} was cancelled")));
        };
        // Files of tasks that had ended are deleted here; running tasks delete their own
        // when they see the cancel (or when the sweep hands them to a worker).
        let spec: Option<ExportSpec> = serde_json::from_value(export.request.clone()).ok();
        for task in self.db.export_tasks(id).await? {
            if task.status != TaskStatus::Running {
                for file in &task.checkpoint.files {
                    self.sink.delete(&file.key).await?;
                }
            }
        }
        if let Some(key) = spec.and_then(|s| s.error_file) {
            self.sink.delete(&key).await?;
        }
        tracing::info!(export = id, was = was.as_str(), "export cancelled");
        Ok(())
    }
}

/// The `Patient/<id>` a Group member's `entity` names: a relative reference
/// (`Patient/p1`, versioned or not), an absolute one (`https://ehr.example/fhir/Patient/p1`),
/// or `urn:uuid:<id>` (as Synthea writes its Groups, whose Patients carry those ids) when
/// the entity's `type` is Patient or absent. `None` for anything else.
pub fn member_patient(entity: &serde_json::Value) -> Option<String> {
    let reference = entity["reference"].as_str()?;
    let id_ok = |id: &str| {
        (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if let Some(id) = reference.strip_prefix("urn:uuid:") {
        let typed = entity["type"].as_str().is_none_or(|t| t == "Patient");
        return (typed && id_ok(id)).then(|| format!("Patient/{id}"));
    }
    let path = reference.split(['?', '#']).next()?;
    let path = match path.find("/_history/") {
        Some(at) => &path[..at],
        None => path,
    };
    let (before, id) = path.rsplit_once('/')?;
    let relative_or_absolute = before == "Patient" || before.ends_with("/Patient");
    (relative_or_absolute && id_ok(id)).then(|| format!("Patient/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_item_is_a_file_item_and_the_outcomes_merged() {
        let spec = ExportSpec {
            ignored: vec!["_typeFilter \"Patient?x=y\" is not supported".into()],
            associated: vec!["RelevantProvenanceResources".into()],
            ..ExportSpec::default()
        };
        let item = error_item("http://s3/errors.ndjson".into(), &spec.kick_off_outcomes());
        assert_eq!(item["type"], "OperationOutcome");
        assert_eq!(item["url"], "http://s3/errors.ndjson");
        assert_eq!(item["count"], 2);
        assert_eq!(item["resourceType"], "OperationOutcome");
        let issues = item["issue"].as_array().unwrap();
        assert_eq!(issues.len(), 2);
        assert!(issues[0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("_typeFilter"));
        assert!(issues[1]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("RelevantProvenanceResources"));
    }

    #[test]
    fn group_members_name_patients_in_every_reference_form_but_only_patients() {
        use serde_json::json;
        for (entity, want) in [
            (json!({"reference": "Patient/p1"}), Some("Patient/p1")),
            (
                json!({"reference": "Patient/p1/_history/3"}),
                Some("Patient/p1"),
            ),
            (
                json!({"reference": "https://ehr.example/fhir/Patient/p-2"}),
                Some("Patient/p-2"),
            ),
            (
                json!({"reference": "urn:uuid:dab86f8b-0f8c-4fc6-a3a1-5b3a8bce8a53"}),
                Some("Patient/dab86f8b-0f8c-4fc6-a3a1-5b3a8bce8a53"),
            ),
            (
                json!({"reference": "urn:uuid:u1", "type": "Patient"}),
                Some("Patient/u1"),
            ),
            (json!({"reference": "urn:uuid:u1", "type": "Device"}), None),
            (json!({"reference": "Device/d1"}), None),
            (json!({"reference": "Group/g1"}), None),
            (json!({"reference": "Patient/"}), None),
            (json!({"reference": "Patient/a b"}), None),
            (json!({"display": "no reference"}), None),
        ] {
            assert_eq!(member_patient(&entity).as_deref(), want, "{entity}");
        }
    }
}
