//! Exports in Postgres: the job (`siphon_export`), its tasks (`siphon_export_task`) with
//! their leases and checkpoints, the Patients a Patient- or Group-level export covers
//! (`siphon_export_patient`), and the questions an export asks of the resource tables
//! (which exist, how many rows, where to cut id ranges).

use crate::storage::statements::Statements;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::leases::EXPORT_TASK;
use super::{is_undefined_table, Db};
use crate::error::{Error, Result};
use crate::lease::Claim;
use crate::model::export::{
    Export, ExportKind, ExportStatus, ExportTask, PageFile, TaskCheckpoint, TaskKind, TaskStatus,
};
use crate::model::Stuck;
use crate::resource_type::ResourceType;

/// A task to create with its export.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub kind: TaskKind,
    pub resource_type: String,
    pub part: i32,
    pub range_from: Option<String>,
    pub range_to: Option<String>,
}

impl NewTask {
    /// The tasks of one type cut at `cuts` (ids, ascending): part 1 up to the first cut,
    /// ..., the last from the last cut on; one task without cuts.
    pub fn ranges(ty: &ResourceType, cuts: &[String]) -> Vec<NewTask> {
        Self::ranges_of(TaskKind::Resources, ty, cuts)
    }

    /// [`NewTask::ranges`] for tasks of `kind` (Patient blocks cut at Patient ids).
    pub fn ranges_of(kind: TaskKind, ty: &ResourceType, cuts: &[String]) -> Vec<NewTask> {
        let mut tasks = Vec::with_capacity(cuts.len() + 1);
        let mut from = None;
        for (n, to) in cuts.iter().map(Some).chain([None]).enumerate() {
            tasks.push(NewTask {
                kind,
                resource_type: ty.as_str().to_string(),
                part: n as i32 + 1,
                range_from: from.clone(),
                range_to: to.cloned(),
            });
            from = to.cloned();
        }
        tasks
    }
}

/// What claiming a task found: held, the task with its export as it is now.
pub type TaskClaim = Claim<Box<(ExportTask, Export)>, TaskStatus>;

/// What committing a checkpoint found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskCommit {
    Committed,
    /// Another worker took the task over: nothing was written.
    LeaseLost,
    /// The export was cancelled: nothing was written; clean up.
    Cancelled,
}

const EXPORT_COLUMNS: &str = "id, kind, owner, status, request, to_json(transaction_time)#>>'{}', error, to_json(created_at)#>>'{}'";
const TASK_COLUMNS: &str = "id, export_id, kind, resource_type, part, range_from, range_to, status, checkpoint, count, error, to_json(lease_until)#>>'{}', receipt";
/// The index of the first column after [`TASK_COLUMNS`].
const TASK_COLUMN_COUNT: usize = 13;

fn export_row(r: &tokio_postgres::Row) -> Result<Export> {
    let status: String = r.get(3);
    let kind: String = r.get(1);
    Ok(Export {
        id: r.get(0),
        kind: ExportKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("unknown export kind {kind:?}")))?,
        owner: r.get(2),
        status: ExportStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown export status {status:?}")))?,
        request: r.get(4),
        transaction_time: r.get(5),
        error: r.get(6),
        created: r.get(7),
    })
}

fn task_row(r: &tokio_postgres::Row) -> Result<ExportTask> {
    let kind: String = r.get(2);
    let status: String = r.get(7);
    let checkpoint: Value = r.get(8);
    Ok(ExportTask {
        id: r.get(0),
        export_id: r.get(1),
        kind: TaskKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("unknown task kind {kind:?}")))?,
        resource_type: r.get(3),
        part: r.get(4),
        range_from: r.get(5),
        range_to: r.get(6),
        status: TaskStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("unknown task status {status:?}")))?,
        checkpoint: serde_json::from_value(checkpoint)
            .map_err(|e| Error::Internal(format!("unreadable task checkpoint: {e}")))?,
        count: r.get(9),
        error: r.get(10),
        lease_until: r.get(11),
        receipt: r.get(12),
    })
}

fn checkpoint_value(c: &TaskCheckpoint) -> Value {
    serde_json::to_value(c).unwrap_or_default()
}

async fn read_export<C: GenericClient + Sync>(
    c: &C,
    id: &str,
    lock: &str,
) -> Result<Option<Export>> {
    c.row_opt(
        &format!("SELECT {EXPORT_COLUMNS} FROM siphon_export WHERE id = $1 {lock}"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(export_row)
    .transpose()
}

/// The export row, its tasks and its Patient list, inside the caller's transaction.
pub async fn insert_export(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
    kind: ExportKind,
    owner: &str,
    request: &Value,
    tasks: &[NewTask],
    patients: &[String],
) -> Result<Export> {
    let row = tx
        .row(
            &format!(
                "INSERT INTO siphon_export (id, kind, owner, status, request)
                 VALUES ($1, $2, $3, 'active', $4) RETURNING {EXPORT_COLUMNS}"
            ),
            &[&id, &kind.as_str(), &owner, request],
        )
        .await?;
    for (n, t) in tasks.iter().enumerate() {
        let task_id = format!("{id}/{n}");
        tx.run(
            "INSERT INTO siphon_export_task (id, export_id, kind, resource_type, part, range_from, range_to, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
            &[&task_id, &id, &t.kind.as_str(), &t.resource_type, &t.part, &t.range_from, &t.range_to],
        )
        .await?;
    }
    if !patients.is_empty() {
        tx.run(
            "INSERT INTO siphon_export_patient (export_id, ref)
             SELECT $1, r FROM unnest($2::text[]) r ON CONFLICT DO NOTHING",
            &[&id, &patients],
        )
        .await?;
    }
    export_row(&row)
}

/// The manifest pages of an export, in order.
async fn read_pages<C: GenericClient + Sync>(c: &C, id: &str) -> Result<Vec<Vec<PageFile>>> {
    c.rows(
        "SELECT files FROM siphon_export_page WHERE export_id = $1 ORDER BY page",
        &[&id],
    )
    .await?
    .iter()
    .map(|r| {
        serde_json::from_value(r.get(0))
            .map_err(|e| Error::Internal(format!("unreadable manifest page of {id}: {e}")))
    })
    .collect()
}

impl Db {
    /// The manifest pages of export `id` once every file of `available` is on one
    /// ([`new_pages`](crate::model::export::new_pages), at most `max` files to a new
    /// page), under the export's row lock: two polls at once cannot both add a page.
    pub async fn seal_export_pages(
        &self,
        id: &str,
        available: &[PageFile],
        max: usize,
    ) -> Result<Vec<Vec<PageFile>>> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        tx.run(
            "SELECT 1 FROM siphon_export WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
        let mut pages = read_pages(&tx, id).await?;
        for files in crate::model::export::new_pages(&pages, available, max) {
            let page = pages.len() as i32 + 1;
            let value = serde_json::to_value(&files).map_err(|e| Error::Internal(e.to_string()))?;
            tx.run(
                "INSERT INTO siphon_export_page (export_id, page, files) VALUES ($1, $2, $3)",
                &[&id, &page, &value],
            )
            .await?;
            pages.push(files);
        }
        tx.commit().await?;
        Ok(pages)
    }

    /// The manifest pages of export `id` written so far.
    pub async fn export_pages(&self, id: &str) -> Result<Vec<Vec<PageFile>>> {
        let client = self.client().await?;
        read_pages(&**client, id).await
    }
}

/// The checkpoint of task `task_id` if it ended in error, its row locked until the
/// transaction ends (a restart's first step).
pub async fn failed_task<C: GenericClient + Sync>(
    c: &C,
    task_id: &str,
) -> Result<Option<TaskCheckpoint>> {
    let row = c
        .row_opt(
            "SELECT checkpoint FROM siphon_export_task WHERE id = $1 AND status = 'error' FOR UPDATE",
            &[&task_id],
        )
        .await?;
    row.map(|r| {
        serde_json::from_value(r.get(0))
            .map_err(|e| Error::Internal(format!("unreadable task checkpoint: {e}")))
    })
    .transpose()
}

/// Makes failed task `task_id` pending again from `checkpoint` (its error cleared), and
/// its export active: a message for it may then claim it.
pub async fn restart_task<C: GenericClient + Sync>(
    c: &C,
    task_id: &str,
    checkpoint: &TaskCheckpoint,
) -> Result<()> {
    let row = c
        .row_opt(
            "UPDATE siphon_export_task SET status = 'pending', checkpoint = $2, error = NULL,
                lease_owner = NULL, lease_until = NULL, receipt = NULL, updated_at = now()
             WHERE id = $1 AND status = 'error' RETURNING export_id",
            &[&task_id, &checkpoint_value(checkpoint)],
        )
        .await?
        .ok_or_else(|| Error::Internal(format!("task {task_id} is not in error")))?;
    let export: String = row.get(0);
    c.run(
        "UPDATE siphon_export SET status = 'active', error = NULL, updated_at = now() WHERE id = $1",
        &[&export],
    )
    .await?;
    Ok(())
}

impl Db {
    /// Creates an export with its tasks and Patient list, in one transaction.
    pub async fn create_export(
        &self,
        id: &str,
        kind: ExportKind,
        owner: &str,
        request: &Value,
        tasks: &[NewTask],
        patients: &[String],
    ) -> Result<Export> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let export = insert_export(&tx, id, kind, owner, request, tasks, patients).await?;
        tx.commit().await?;
        Ok(export)
    }

    /// Creates a `$export` (kind `fhir`) as `create_export` does, unless `owner` already
    /// has `cap` of them active: then nothing is created and the answer is `None`. A
    /// transaction-level advisory lock on the owner makes the count and the insert one
    /// step for concurrent kick-offs of one client (and holds behind a transaction
    /// pooler: it ends with the transaction).
    pub async fn create_export_within_cap(
        &self,
        id: &str,
        owner: &str,
        request: &Value,
        tasks: &[NewTask],
        patients: &[String],
        cap: i64,
    ) -> Result<Option<Export>> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        tx.run(
            "SELECT pg_advisory_xact_lock(hashtext('siphon_export_owner'), hashtext($1))",
            &[&owner],
        )
        .await?;
        let active: i64 = tx
            .row(
                "SELECT count(*) FROM siphon_export
                 WHERE owner = $1 AND kind = $2 AND status = 'active'",
                &[&owner, &ExportKind::Fhir.as_str()],
            )
            .await?
            .get(0);
        if active >= cap {
            return Ok(None);
        }
        let export =
            insert_export(&tx, id, ExportKind::Fhir, owner, request, tasks, patients).await?;
        tx.commit().await?;
        Ok(Some(export))
    }

    /// One export.
    pub async fn export(&self, id: &str) -> Result<Option<Export>> {
        let client = self.client().await?;
        read_export(&**client, id, "").await
    }

    /// Exports, newest first (only `owner`'s unless `None`).
    pub async fn exports(
        &self,
        owner: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Export>> {
        let client = self.client().await?;
        client
            .rows(
                &format!(
                    "SELECT {EXPORT_COLUMNS} FROM siphon_export WHERE $1::text IS NULL OR owner = $1
                     ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
                ),
                &[&owner, &limit, &offset],
            )
            .await?
            .iter()
            .map(export_row)
            .collect()
    }

    /// An export's tasks, in order.
    pub async fn export_tasks(&self, export_id: &str) -> Result<Vec<ExportTask>> {
        let client = self.client().await?;
        client
            .rows(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM siphon_export_task WHERE export_id = $1
                     ORDER BY resource_type, part, id"
                ),
                &[&export_id],
            )
            .await?
            .iter()
            .map(task_row)
            .collect()
    }

    /// Records a status poll; `false` when the previous one was less than
    /// `min_interval_ms` ago (the caller answers 429).
    pub async fn poll_export(&self, id: &str, min_interval_ms: i64) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .run(
                "UPDATE siphon_export SET polled_at = now()
                 WHERE id = $1 AND (polled_at IS NULL
                    OR polled_at < now() - make_interval(secs => $2::bigint / 1000.0))",
                &[&id, &min_interval_ms],
            )
            .await?;
        Ok(n == 1)
    }

    /// Cancels an export (active or done): it becomes `cancelled`, its pending tasks too.
    /// Returns the status it had, or `None` when it was cancelled already.
    pub async fn cancel_export(&self, id: &str) -> Result<Option<ExportStatus>> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let Some(export) = read_export(&tx, id, "FOR UPDATE").await? else {
            return Ok(None);
        };
        if export.status == ExportStatus::Cancelled {
            return Ok(None);
        }
        tx.run(
            "UPDATE siphon_export SET status = 'cancelled', updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        tx.run(
            "UPDATE siphon_export_task SET status = 'cancelled', updated_at = now()
             WHERE export_id = $1 AND status = 'pending'",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(export.status))
    }

    /// Claims a task for `owner` (pending, or running with a lease that ran out or is
    /// `owner`'s), with the export as it is now. Cancelled exports' running tasks can be
    /// claimed too, to clean up.
    pub async fn claim_export_task(
        &self,
        task_id: &str,
        owner: &str,
        lease_secs: f64,
        receipt: Option<&str>,
    ) -> Result<TaskClaim> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let row = tx
            .row_opt(
                &format!(
                    "UPDATE siphon_export_task t SET status = 'running', lease_owner = $2,
                        lease_until = now() + make_interval(secs => $3::float8), receipt = $4,
                        updated_at = now(),
                        recovery = coalesce(t.recovery, '{{}}'::jsonb)
                            || jsonb_build_object('from', t.checkpoint, 'claimed', now())
                     FROM (SELECT lease_owner AS prev_owner, recovery->'from' AS prev_from,
                                  checkpoint AS prev_checkpoint
                             FROM siphon_export_task WHERE id = $1) prev
                     WHERE t.id = $1 AND (t.status = 'pending' OR (t.status = 'running' AND {}))
                     RETURNING {TASK_COLUMNS}, coalesce(prev_owner <> $2
                                   AND prev_from IS DISTINCT FROM prev_checkpoint, false)",
                    EXPORT_TASK.free_for("$2")
                ),
                &[&task_id, &owner, &lease_secs, &receipt],
            )
            .await?;
        let claim = match row {
            Some(row) => {
                let task = task_row(&row)?;
                let export = read_export(&tx, &task.export_id, "")
                    .await?
                    .ok_or_else(|| Error::Internal(format!("task {task_id} has no export")))?;
                Claim::Held {
                    progressed: row.get(TASK_COLUMN_COUNT),
                    work: Box::new((task, export)),
                }
            }
            None => {
                match tx
                    .row_opt(
                        "SELECT status, to_json(lease_until)#>>'{}' FROM siphon_export_task WHERE id = $1",
                        &[&task_id],
                    )
                    .await?
                {
                    None => Claim::Missing,
                    Some(r) => {
                        let status: String = r.get(0);
                        match TaskStatus::parse(&status) {
                            Some(TaskStatus::Running) => Claim::Busy { until: r.get(1) },
                            Some(s) => Claim::Ended(s),
                            None => Claim::Missing,
                        }
                    }
                }
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// Commits a checkpoint as the task's owner, renewing the lease; the export row is
    /// held `FOR SHARE`, so a cancel lands before (this commit then writes nothing) or
    /// after (the next one sees it).
    pub async fn commit_export_task(
        &self,
        task_id: &str,
        export_id: &str,
        owner: &str,
        checkpoint: &TaskCheckpoint,
        count: i64,
        lease_secs: f64,
    ) -> Result<TaskCommit> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let status: Option<String> = tx
            .row_opt(
                "SELECT status FROM siphon_export WHERE id = $1 FOR SHARE",
                &[&export_id],
            )
            .await?
            .map(|r| r.get(0));
        if status.as_deref() != Some("active") {
            return Ok(TaskCommit::Cancelled);
        }
        let n = tx
            .run(
                "UPDATE siphon_export_task SET checkpoint = $3, count = $4,
                    lease_until = now() + make_interval(secs => $5::float8), updated_at = now()
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[
                    &task_id,
                    &owner,
                    &checkpoint_value(checkpoint),
                    &count,
                    &lease_secs,
                ],
            )
            .await?;
        if n != 1 {
            return Ok(TaskCommit::LeaseLost);
        }
        tx.commit().await?;
        Ok(TaskCommit::Committed)
    }

    /// Ends a task as its owner (`done`, `cancelled` or `error`), its lease given back.
    /// `false` when the lease was lost.
    pub async fn end_export_task(
        &self,
        task_id: &str,
        owner: &str,
        status: TaskStatus,
        checkpoint: &TaskCheckpoint,
        count: i64,
        error: Option<&str>,
    ) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .run(
                "UPDATE siphon_export_task SET status = $3, checkpoint = $4, count = $5, error = $6,
                    lease_owner = NULL, lease_until = NULL, receipt = NULL, updated_at = now()
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[&task_id, &owner, &status.as_str(), &checkpoint_value(checkpoint), &count, &error],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the export once every task has ended: `done`, or `error` naming the first
    /// failed task. Returns the export's status afterwards.
    pub async fn settle_export(&self, export_id: &str) -> Result<Option<ExportStatus>> {
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let Some(export) = read_export(&tx, export_id, "FOR UPDATE").await? else {
            return Ok(None);
        };
        if export.status != ExportStatus::Active {
            return Ok(Some(export.status));
        }
        let row = tx
            .row(
                "SELECT count(*) FILTER (WHERE status IN ('pending', 'running')),
                        min(resource_type || ': ' || error) FILTER (WHERE status = 'error')
                 FROM siphon_export_task WHERE export_id = $1",
                &[&export_id],
            )
            .await?;
        let (open, failed): (i64, Option<String>) = (row.get(0), row.get(1));
        let status = match (open, failed) {
            (_, Some(why)) => {
                tx.run(
                    "UPDATE siphon_export SET status = 'error', error = $2, updated_at = now() WHERE id = $1",
                    &[&export_id, &why],
                )
                .await?;
                ExportStatus::Error
            }
            (0, None) => {
                tx.run(
                    "UPDATE siphon_export SET status = 'done', updated_at = now() WHERE id = $1",
                    &[&export_id],
                )
                .await?;
                ExportStatus::Done
            }
            _ => ExportStatus::Active,
        };
        tx.commit().await?;
        Ok(Some(status))
    }

    /// Running tasks whose lease ran out more than `grace_secs` ago and that the sweep has
    /// not acted on in the last `again_secs`, unless a worker has claimed or checkpointed
    /// the task since (then that worker died too: a new stall).
    pub async fn stalled_export_tasks(
        &self,
        grace_secs: f64,
        again_secs: f64,
        limit: i64,
    ) -> Result<Vec<ExportTask>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM siphon_export_task WHERE {} {} LIMIT $3",
                    EXPORT_TASK.stalled(),
                    EXPORT_TASK.stalled_order()
                ),
                &[&grace_secs, &again_secs, &limit],
            )
            .await
            .map_err(Error::from);
        match rows {
            // A damaged task is logged and left out, not the sweep of every other one.
            Ok(rows) => Ok(rows
                .iter()
                .filter_map(|r| match task_row(r) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        let id: String = r.get(0);
                        tracing::error!(task = id, error = %e, "unreadable export task left out of the sweep");
                        None
                    }
                })
                .collect()),
            Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Records what the sweep did for a stalled task, and how stuck it is (see
    /// [`Db::export_task_stuck`]).
    pub async fn note_export_task_recovery(
        &self,
        task_id: &str,
        how: &str,
        stuck: &Stuck,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .run(
                "UPDATE siphon_export_task SET recovery = (coalesce(recovery, '{}'::jsonb)
                    - 'stuck_since') || jsonb_strip_nulls(jsonb_build_object('at', now(),
                        'how', $2::text, 'barren', $3::int, 'stuck_since', $4::text,
                        'count', coalesce((recovery->>'count')::int, 0) + 1))
                 WHERE id = $1",
                &[&task_id, &how, &(stuck.barren as i32), &stuck.since],
            )
            .await?;
        Ok(())
    }

    /// How stuck a stalled task is as the sweep acts on it now: `barren` one more if its
    /// last worker died with the checkpoint where it found it at its claim (and claimed
    /// it after the sweep's last act), the same if nobody claimed it since, 0 when that
    /// worker got further; `since` the claim of the first of those workers.
    pub async fn export_task_stuck(&self, task_id: &str) -> Result<Stuck> {
        let client = self.client().await?;
        let row = client
            .row_opt(
                "SELECT s.barren,
                        CASE WHEN s.barren = 0 THEN NULL
                             ELSE coalesce(t.recovery->>'stuck_since', t.recovery->>'claimed') END
                 FROM siphon_export_task t,
                 LATERAL (SELECT t.recovery->>'at' IS NULL
                          OR (t.recovery->>'claimed')::timestamptz
                             > (t.recovery->>'at')::timestamptz AS fresh) f,
                 LATERAL (SELECT CASE
                    WHEN t.recovery->'from' IS NULL THEN coalesce((t.recovery->>'barren')::int, 0)
                    WHEN t.recovery->'from' IS DISTINCT FROM t.checkpoint THEN 0
                    WHEN f.fresh THEN coalesce((t.recovery->>'barren')::int, 0) + 1
                    ELSE coalesce((t.recovery->>'barren')::int, 0) END AS barren) s
                 WHERE t.id = $1",
                &[&task_id],
            )
            .await?;
        Ok(row.map_or_else(Stuck::default, |r| Stuck {
            barren: r.get::<_, i32>(0).max(0) as u32,
            since: r.get(1),
        }))
    }

    /// The resource tables that exist (table names, lower case).
    pub async fn resource_tables(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        Ok(client
            .rows(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                   AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped
                        AND a.attname IN ('id', 'txid', 'resource_type', 'status', 'resource')) = 5
                 ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Where to cut `ty`'s ids into `parts` ranges of about equal size: the ids that end
    /// each range but the last (ascending). Empty when the table has fewer rows than
    /// parts.
    pub async fn id_cuts(&self, ty: &ResourceType, parts: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows: i64 = client
            .row(&format!("SELECT count(*) FROM {}", ty.table_sql()), &[])
            .await?
            .get(0);
        if parts < 2 || rows < parts {
            return Ok(Vec::new());
        }
        let mut cuts = Vec::new();
        for k in 1..parts {
            let offset = rows * k / parts - 1;
            let id: Option<String> = client
                .row_opt(
                    &format!(
                        "SELECT id FROM {} ORDER BY id OFFSET $1 LIMIT 1",
                        ty.table_sql()
                    ),
                    &[&offset],
                )
                .await?
                .map(|r| r.get(0));
            if let Some(id) = id {
                if cuts.last() != Some(&id) {
                    cuts.push(id);
                }
            }
        }
        Ok(cuts)
    }

    /// Rows of `ty` (0 when it has no table).
    pub async fn row_count(&self, ty: &ResourceType) -> Result<i64> {
        self.count(ty).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claims_progress_column_follows_the_task_columns() {
        assert_eq!(TASK_COLUMNS.split(", ").count(), TASK_COLUMN_COUNT);
    }

    #[test]
    fn cuts_make_consecutive_ranges_that_miss_no_id() {
        let ty = ResourceType::parse("Patient").unwrap();
        let ranges: Vec<(i32, Option<String>, Option<String>)> =
            NewTask::ranges(&ty, &["g".into(), "p".into()])
                .into_iter()
                .map(|t| (t.part, t.range_from, t.range_to))
                .collect();
        assert_eq!(
            ranges,
            vec![
                (1, None, Some("g".into())),
                (2, Some("g".into()), Some("p".into())),
                (3, Some("p".into()), None),
            ]
        );
        let one = NewTask::ranges(&ty, &[]);
        assert_eq!(
            (
                one.len(),
                one[0].range_from.clone(),
                one[0].range_to.clone()
            ),
            (1, None, None)
        );
    }
}
