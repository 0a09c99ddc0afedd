//! `aidbox.bulk/dump-to-bucket`: tables or a query written to any S3-compatible bucket as
//! files analysts load (ndjson, csv, tsv, Parquet, `sql`, `elastic-bulk`), under a
//! dlt-style key layout, by the same export tasks as `$export`. The job ends with a
//! completion marker, `_siphon_loads/{load_id}.json`, written last.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::layout::{self, DEFAULT_LAYOUT};
use super::spec::{ExportSpec, SpecLevel};
use super::ExportMessage;
use crate::auth::scopes::Perm;
use crate::auth::Principal;
use crate::dumping::check_query;
use crate::error::{Error, Result};
use crate::formats::{Chosen, Exporter, Shape};
use crate::ingestion::bucket::Account;
use crate::model::export::{Column, Export, ExportKind, ExportStatus, TaskKind, TaskStatus};
use crate::model::StoreRef;
use crate::queue::{self, MessageQueue, StoreSpec};
use crate::resource_type::ResourceType;
use crate::sinks::{ObjectMeta, ObjectSink, SinkError};
use crate::sources::UrlGuard;
use crate::storage::exports::NewTask;
use crate::storage::Db;

/// The RPC's params.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpToBucket {
    /// `s3://name` or `s3://name/prefix`.
    pub bucket: String,
    /// Resource types (default: every resource table but siphon's own).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// One read-only statement, run as `$dump-sql` runs it (instead of `types`).
    #[serde(default)]
    pub query: Option<String>,
    /// `ndjson` (default), `csv`, `tsv`, `parquet`, `sql`, `elastic-bulk`.
    #[serde(default)]
    pub format: Option<String>,
    /// gzip the text formats.
    #[serde(default)]
    pub gzip: Option<bool>,
    /// dlt's key layout (default `{table_name}/{load_id}.{file_id}.{ext}`).
    #[serde(default)]
    pub layout: Option<String>,
    /// `sql`: the table the INSERTs write; `elastic-bulk`: the index.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(rename = "endpoint-url", default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub account: Option<Account>,
    /// Only rows changed after this instant (or date).
    #[serde(rename = "_since", default)]
    pub since: Option<String>,
}

impl DumpToBucket {
    /// The bucket and the key prefix (empty or ending with `/`).
    pub fn bucket_and_prefix(&self) -> Result<(String, String)> {
        let (name, prefix) = crate::model::location::parse_s3_prefix(&self.bucket)?;
        let prefix = prefix.trim_matches('/');
        Ok((
            name,
            if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        ))
    }

    /// The store to write to, as queue messages carry it.
    pub fn store(&self) -> StoreSpec {
        StoreSpec {
            endpoint_url: self.endpoint_url.clone(),
            region: self.account.as_ref().and_then(|a| a.region.clone()),
            access_key_id: self.account.as_ref().map(|a| a.access_key_id.clone()),
            secret_access_key: self.account.as_ref().map(|a| a.secret_access_key.clone()),
        }
    }
}

fn parse_since(raw: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(Error::BadRequest(format!(
        "_since {raw:?} is not an instant (RFC 3339, e.g. 2024-01-01T00:00:00Z) or a date"
    )))
}

/// What a dump-to-bucket needs besides its params.
pub struct DumpContext<'a> {
    pub db: &'a Db,
    /// The export queue.
    pub queue: &'a dyn MessageQueue,
    /// The target bucket, reached as the params say.
    pub sink: &'a dyn ObjectSink,
    pub guard: &'a dyn UrlGuard,
    /// `$dump-sql`'s statement timeout.
    pub timeout_ms: u64,
    pub range_rows: i64,
    pub max_ranges: i64,
}

/// Checks the params (and that `who` may read every type it dumps, or run SQL for a
/// `query`), plans the tasks and queues them. Answers the export.
pub async fn kick_off(
    ctx: DumpContext<'_>,
    params: &DumpToBucket,
    who: &Principal,
) -> Result<Export> {
    let owner = who.client_id.as_str();
    let (bucket, prefix) = params.bucket_and_prefix()?;
    if let Some(url) = &params.endpoint_url {
        ctx.guard
            .check(url)
            .await
            .map_err(|e| Error::BadRequest(format!("endpoint-url: {e}")))?;
    }
    let layout = params
        .layout
        .clone()
        .unwrap_or_else(|| DEFAULT_LAYOUT.to_string());
    layout::check(&layout)?;
    let format = format_of(params)?;
    let gzip = params.gzip.unwrap_or(false);
    let since = params.since.as_deref().map(parse_since).transpose()?;
    let (types, query) = what_to_dump(&ctx, params, who, since.is_some(), &format).await?;
    check_reachable(&ctx, params).await?;
    let started = chrono::Utc::now();
    let id = uuid::Uuid::new_v4().to_string();
    let store = params.store();
    let spec = ExportSpec {
        level: SpecLevel::Bucket,
        types: types.iter().map(|t| t.as_str().to_string()).collect(),
        since: since.map(|t| t.to_rfc3339()),
        gzip,
        request: format!("aidbox.bulk/dump-to-bucket {}", params.bucket),
        bucket,
        prefix,
        store: StoreRef {
            endpoint_url: store.endpoint_url.clone(),
            region: store.region.clone(),
            credentials: store.access_key_id.is_some(),
        },
        format: Some(format.name().to_string()),
        table: params.table.clone(),
        layout: Some(layout),
        load_id: Some(layout::load_id(started)),
        started: Some(started.to_rfc3339()),
        query,
        timeout_ms: Some(ctx.timeout_ms),
        ..ExportSpec::default()
    };
    let tasks = plan_tasks(&ctx, &spec, &types).await?;
    let stored = serde_json::to_value(&spec).map_err(|e| Error::Internal(e.to_string()))?;
    let export = ctx
        .db
        .create_export(&id, ExportKind::Bucket, owner, &stored, &tasks, &[])
        .await?;
    let messages: Vec<ExportMessage> = (0..tasks.len())
        .map(|n| ExportMessage {
            task: format!("{id}/{n}"),
            store: store.clone(),
        })
        .collect();
    if let Err(e) = queue::send(ctx.queue, &messages, None).await {
        let _ = ctx.db.cancel_export(&id).await;
        return Err(e);
    }
    if tasks.is_empty() {
        ctx.db.settle_export(&id).await?;
        write_marker(ctx.db, ctx.sink, &export.id).await?;
    }
    tracing::info!(
        export = id,
        owner,
        bucket = spec.bucket,
        format = format.name(),
        tasks = tasks.len(),
        "dump-to-bucket started"
    );
    Ok(export)
}

/// The file format the params ask for (gzip only for the text formats).
fn format_of(params: &DumpToBucket) -> Result<Chosen> {
    let format = Chosen::parse(Exporter::Bucket, params.format.as_deref())?;
    // The table or index is checked here; each task names its own default index.
    format.target(params.table.as_deref(), "query")?;
    format.check_gzip(params.gzip.unwrap_or(false))?;
    Ok(format)
}

/// The types to dump, or the query: `types` named (each readable by `who`), a `query`
/// (`who` may run SQL), or neither (every table `who` may read).
async fn what_to_dump(
    ctx: &DumpContext<'_>,
    params: &DumpToBucket,
    who: &Principal,
    since: bool,
    format: &Chosen,
) -> Result<(Vec<ResourceType>, Option<String>)> {
    match (&params.types, &params.query) {
        (Some(_), Some(_)) => Err(Error::BadRequest(
            "give either `types` or `query`, not both".into(),
        )),
        (_, Some(query)) => {
            if since {
                return Err(Error::BadRequest(
                    "_since is for `types`: filter a query in the query".into(),
                ));
            }
            who.require_sql()?;
            check_query(query)?;
            let columns = ctx.db.describe_query(query, ctx.timeout_ms).await?;
            check_query_columns(&columns, format)?;
            Ok((Vec::new(), Some(query.clone())))
        }
        (Some(types), None) => Ok((named_types(ctx.db, types, who).await?, None)),
        (None, None) => Ok((readable_types(ctx.db, who).await?, None)),
    }
}

/// Files name their columns: each once (and not siphon's own row number); elastic-bulk
/// needs an `id`.
fn check_query_columns(columns: &[Column], format: &Chosen) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if c.name == "siphon_rn" || !seen.insert(c.name.as_str()) {
            return Err(Error::BadRequest(format!(
                "the query's column {:?} {}: give each column its own name (AS ...)",
                c.name,
                if c.name == "siphon_rn" {
                    "is a name siphon uses"
                } else {
                    "appears more than once"
                }
            )));
        }
    }
    if format.format.shape() == Shape::Bulk && !columns.iter().any(|c| c.name == "id") {
        return Err(Error::BadRequest(format!(
            "{} needs an `id` column in the query",
            format.name()
        )));
    }
    Ok(())
}

/// The named types: each a resource table (never one of siphon's own, Client holds
/// secret hashes) that `who` may read.
async fn named_types(db: &Db, types: &[String], who: &Principal) -> Result<Vec<ResourceType>> {
    let tables = db.resource_tables().await?;
    let mut out = Vec::new();
    for t in types {
        let ty = ResourceType::parse(t)?;
        if ty.is_system() || !tables.contains(&ty.table_name()) {
            return Err(Error::NotFound(format!("no resources of type {ty}")));
        }
        who.require(ty.as_str(), Perm::Read)?;
        out.push(ty);
    }
    Ok(out)
}

/// Every resource table `who` may read (403 when none and `who` is not an admin).
async fn readable_types(db: &Db, who: &Principal) -> Result<Vec<ResourceType>> {
    let mut out = Vec::new();
    for table in db.resource_tables().await? {
        if crate::resource_type::is_system(&table) {
            continue;
        }
        let name = crate::fhir::resource_types()
            .iter()
            .find(|t| t.to_ascii_lowercase() == table)
            .cloned()
            .unwrap_or_else(|| {
                let mut c = table.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            });
        if let Ok(ty) = ResourceType::parse(&name) {
            if who.may(ty.as_str(), Perm::Read) {
                out.push(ty);
            }
        }
    }
    if out.is_empty() && !who.admin {
        return Err(Error::Forbidden(format!(
            "client {:?} may read none of the resource tables (it needs system/<Type>.r scopes)",
            who.client_id
        )));
    }
    Ok(out)
}

/// The bucket must exist and be reachable: the caller's mistake, said now.
async fn check_reachable(ctx: &DumpContext<'_>, params: &DumpToBucket) -> Result<()> {
    match ctx.sink.check_bucket().await {
        Ok(()) => Ok(()),
        Err(SinkError::Transient(m)) if params.endpoint_url.is_none() => Err(Error::Unavailable(m)),
        Err(SinkError::Transient(m)) => Err(Error::BadRequest(format!(
            "endpoint-url cannot be reached: {m}"
        ))),
        Err(e) => Err(Error::BadRequest(e.to_string())),
    }
}

/// The tasks of a dump: the query's one, then each type's id ranges (one range when the
/// layout names a single file).
async fn plan_tasks(
    ctx: &DumpContext<'_>,
    spec: &ExportSpec,
    types: &[ResourceType],
) -> Result<Vec<NewTask>> {
    let mut tasks = Vec::new();
    if spec.query.is_some() {
        tasks.push(NewTask {
            kind: TaskKind::Query,
            resource_type: "query".into(),
            part: 1,
            range_from: None,
            range_to: None,
        });
    }
    for ty in types {
        let rows = ctx.db.row_count(ty).await?;
        let parts = if spec.single_file() {
            1
        } else {
            ((rows + ctx.range_rows - 1) / ctx.range_rows.max(1)).clamp(1, ctx.max_ranges.max(1))
        };
        let cuts = ctx.db.id_cuts(ty, parts).await?;
        tasks.extend(NewTask::ranges(ty, &cuts));
    }
    Ok(tasks)
}

/// The marker a finished dump ends with: `{prefix}_siphon_loads/{load_id}.json`
/// listing its files, counts, query and format. Written after every file; idempotent.
pub async fn write_marker(
    db: &Db,
    sink: &dyn ObjectSink,
    export_id: &str,
) -> Result<Option<String>> {
    let Some(export) = db.export(export_id).await? else {
        return Ok(None);
    };
    if export.kind != ExportKind::Bucket || export.status != ExportStatus::Done {
        return Ok(None);
    }
    let spec: ExportSpec = serde_json::from_value(export.request.clone())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let view = view_of(db, &export, &spec).await?;
    let key = marker_key(&spec);
    let meta = ObjectMeta {
        content_type: "application/json".into(),
        content_encoding: None,
    };
    sink.put(&key, &meta, view.to_string().into()).await?;
    Ok(Some(key))
}

fn marker_key(spec: &ExportSpec) -> String {
    format!(
        "{}_siphon_loads/{}.json",
        spec.prefix,
        spec.load_id.as_deref().unwrap_or("load")
    )
}

/// The job as `GET /$dump-to-bucket/{id}` shows it: every written object and count.
async fn view_of(db: &Db, export: &Export, spec: &ExportSpec) -> Result<Value> {
    let tasks = db.export_tasks(&export.id).await?;
    let mut tables = serde_json::Map::new();
    let mut files = Vec::new();
    for t in &tasks {
        let table = if t.kind == TaskKind::Query {
            "query".to_string()
        } else {
            t.resource_type.to_ascii_lowercase()
        };
        let entry = tables
            .entry(table.clone())
            .or_insert_with(|| json!({"count": 0, "files": 0}));
        entry["count"] = json!(entry["count"].as_i64().unwrap_or(0) + t.count);
        entry["files"] =
            json!(entry["files"].as_i64().unwrap_or(0) + t.checkpoint.files.len() as i64);
        for f in &t.checkpoint.files {
            files.push(json!({"key": f.key, "table": table, "count": f.count, "bytes": f.bytes}));
        }
    }
    let done = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Done)
        .count();
    let rows: i64 = tasks.iter().map(|t| t.count).sum();
    Ok(json!({
        "id": export.id,
        "status": export.status.as_str(),
        "error": export.error,
        "loadId": spec.load_id,
        "bucket": format!("s3://{}/{}", spec.bucket, spec.prefix),
        "format": spec.format,
        "gzip": spec.gzip,
        "layout": spec.layout,
        "query": spec.query,
        "types": spec.types,
        "started": spec.started,
        "progress": format!("{}: {done}/{} tasks done, {rows} rows", export.status.as_str(), tasks.len()),
        "tables": tables,
        "files": files,
        "marker": (export.status == ExportStatus::Done).then(|| marker_key(spec)),
    }))
}

/// `GET /$dump-to-bucket/{id}`: the job, if `who` may see it.
pub async fn view(db: &Db, id: &str, who: &Principal) -> Result<Value> {
    let export = db
        .export(id)
        .await?
        .filter(|e| e.kind == ExportKind::Bucket && (who.admin || e.owner == who.client_id))
        .ok_or_else(|| Error::NotFound(format!("dump {id} not found")))?;
    let spec: ExportSpec = serde_json::from_value(export.request.clone())
        .map_err(|e| Error::Internal(e.to_string()))?;
    view_of(db, &export, &spec).await
}

/// `DELETE /$dump-to-bucket/{id}`: a running dump stops; its running tasks abort their
/// uploads and delete their files, and no marker is written. A finished dump is kept
/// (its files are yours): 409.
pub async fn cancel(db: &Db, id: &str, who: &Principal) -> Result<()> {
    let export = db
        .export(id)
        .await?
        .filter(|e| e.kind == ExportKind::Bucket && (who.admin || e.owner == who.client_id))
        .ok_or_else(|| Error::NotFound(format!("dump {id} not found")))?;
    if export.status != ExportStatus::Active {
        return Err(Error::Conflict(format!(
            "dump {id} is {}: nothing to cancel (a finished dump's files stay in your bucket)",
            export.status.as_str()
        )));
    }
    db.cancel_export(id).await?;
    db.drop_materialized(id).await?;
    Ok(())
}

/// The client a dump's store needs (the function's own when the params name none).
pub fn needs_own_store(store: &StoreSpec) -> bool {
    store.is_default()
}

/// Keeps the sink type nameable for callers building one per request.
pub type SharedSink = Arc<dyn ObjectSink>;
