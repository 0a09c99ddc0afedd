//! The planning of an inventory import, run by the export workers like any export task
//! (claimed under a lease renewed by a heartbeat, checkpointed, handed over before the
//! deadline, re-delivered by the sweep when its worker dies):
//!
//! 1. **stage**: each data file of the manifest is downloaded, checked against its MD5
//!    and staged; a checkpoint after each file (a file half staged by a dead worker is
//!    cleared and staged again).
//! 2. **queue**: the staged objects are walked in `file_id` order, a page per
//!    checkpoint: new ones get a LoaderFile, changed ones have theirs reset (both
//!    `pending`), and the first `thread-num` go on the load queue; each file that ends
//!    queues the next (`loading::feed`). A page redone after a crash finds its files
//!    already there.
//! 3. **gone**: LoaderFiles of the bucket the inventory no longer lists are marked.
//!
//! The session's state is obeyed at every page: paused, new files are created paused
//! (resume queues them); aborted, the planning stops.

use std::sync::Arc;
use std::time::Instant;

use super::{stage_part, InventoryJob, Skipped, Stage};
use crate::error::{Error, Result};
use crate::exporting::task::{self, claim, Claimed, Served, TaskOptions, TaskOutcome};
use crate::model::export::{ExportStatus, PlanCheckpoint, TaskCheckpoint, TaskStatus};
use crate::model::session::PlanProgress;
use crate::model::{FileStatus, LoaderFile, ObjectLocation, SessionStatus};
use crate::queue::{MessageQueue, StoreSpec};
use crate::sources::s3::S3Source;
use crate::storage::exports::TaskCommit;
use crate::storage::{imports, Db};

/// Staged objects looked at per queueing checkpoint (a page of new files is about 20 MB
/// in flight: 10,000 took the planning's peak from 70 to 130 MB at 1,000,000 objects).
const PAGE: i64 = 5_000;

/// Runs planning tasks.
pub struct Planner {
    pub db: Db,
    /// The load queue (the planned files' messages).
    pub load_queue: Arc<dyn MessageQueue>,
    /// Reaches the inventory bucket (with the message's store).
    pub s3: S3Source,
    /// The store of the source bucket, as the load messages carry it.
    pub store: StoreSpec,
    pub options: TaskOptions,
}

struct Run {
    task: String,
    export: String,
    owner: String,
    checkpoint: TaskCheckpoint,
}

impl Planner {
    /// Runs planning task `task_id` until it ends or `deadline` nears.
    pub async fn run(
        &self,
        task_id: &str,
        served: Served<'_>,
        deadline: Option<Instant>,
    ) -> Result<TaskOutcome> {
        // Holds the lease (renewed) until the end of this call.
        let claimed: Claimed = match claim(&self.db, &self.options, task_id, served).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(outcome),
        };
        let (task, export, owner) = (&claimed.task, &claimed.export, claimed.owner.clone());
        let job: InventoryJob = serde_json::from_value(export.request.clone())
            .map_err(|e| Error::Internal(format!("unreadable inventory job {}: {e}", export.id)))?;
        let mut run = Run {
            task: task.id.clone(),
            export: export.id.clone(),
            owner,
            checkpoint: task.checkpoint.clone(),
        };
        if export.status != ExportStatus::Active {
            return self.stop(&job, &mut run).await;
        }
        match self.plan(&job, &mut run, deadline).await {
            Ok(outcome) => Ok(outcome),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                // Permanent (a damaged inventory file, a key listed twice): the planning
                // fails, and with it the session, saying why.
                let why = e.to_string();
                tracing::error!(
                    session = job.session,
                    error = why,
                    "inventory planning failed"
                );
                self.db
                    .end_export_task(
                        &run.task,
                        &run.owner,
                        TaskStatus::Error,
                        &run.checkpoint,
                        0,
                        Some(&why),
                    )
                    .await?;
                self.db.settle_export(&run.export).await?;
                self.db.drop_plan(&job.plan()).await?;
                let client = self.db.client().await?;
                imports::set_status(
                    &**client,
                    &job.session,
                    SessionStatus::Error,
                    Some(&format!("planning failed: {why}")),
                )
                .await?;
                Ok(TaskOutcome::Done { count: 0, bytes: 0 })
            }
        }
    }

    fn near(&self, deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| Instant::now() + self.options.deadline_margin >= d)
    }

    /// Commits the checkpoint (fenced by the lease) and shows the progress on the
    /// session; `Err(outcome)` when the run must stop.
    async fn commit(
        &self,
        job: &InventoryJob,
        run: &mut Run,
    ) -> Result<std::result::Result<(), TaskOutcome>> {
        let plan = run.checkpoint.plan.clone().unwrap_or_default();
        match self
            .db
            .commit_export_task(
                &run.task,
                &run.export,
                &run.owner,
                &run.checkpoint,
                plan.staged as i64,
                self.options.lease.as_secs_f64(),
            )
            .await?
        {
            TaskCommit::Committed => {}
            TaskCommit::LeaseLost => return Ok(Err(TaskOutcome::Busy)),
            TaskCommit::Cancelled => return Ok(Err(self.stop(job, run).await?)),
        }
        let client = self.db.client().await?;
        imports::set_plan(&**client, &job.session, &progress(&plan, false)).await?;
        Ok(Ok(()))
    }

    /// The session was aborted (or the job cancelled): the planning ends, its staged
    /// objects are dropped, and files it created but nobody loads are aborted.
    async fn stop(&self, job: &InventoryJob, run: &mut Run) -> Result<TaskOutcome> {
        self.db
            .end_export_task(
                &run.task,
                &run.owner,
                TaskStatus::Cancelled,
                &run.checkpoint,
                0,
                None,
            )
            .await?;
        self.db.cancel_export(&run.export).await?;
        self.db.drop_plan(&job.plan()).await?;
        let client = self.db.client().await?;
        imports::move_files(&**client, &job.session, &["pending", "paused"], "aborted").await?;
        tracing::info!(
            session = job.session,
            "inventory planning stopped: the session was aborted"
        );
        Ok(TaskOutcome::Cancelled)
    }

    async fn session_status(&self, session: &str) -> Result<Option<SessionStatus>> {
        let client = self.db.client().await?;
        Ok(imports::read(&**client, session, false)
            .await?
            .map(|r| r.status))
    }

    /// Plans in four resumable steps, a checkpoint after each piece: stage the listed
    /// objects, compare them with the LoaderFiles, queue the new and changed ones a page
    /// at a time, mark the gone ones. Each step answers `Some(outcome)` when the run
    /// stops there (aborted, lease lost, deadline near).
    async fn plan(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        deadline: Option<Instant>,
    ) -> Result<TaskOutcome> {
        let mut p = run.checkpoint.plan.clone().unwrap_or_default();
        if let Some(stop) = self.stage_all(job, run, &mut p, deadline).await? {
            return Ok(stop);
        }
        if let Some(stop) = self.restage_if_lost(job, run, &p).await? {
            return Ok(stop);
        }
        if let Some(stop) = self.compare(job, run, &mut p).await? {
            return Ok(stop);
        }
        if p.gone.is_none() {
            if let Some(stop) = self.queue_all(job, run, &mut p, deadline).await? {
                return Ok(stop);
            }
        }
        self.finish(job, run, &p).await
    }

    /// Step 1: stage, a data file per checkpoint.
    async fn stage_all(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &mut PlanCheckpoint,
        deadline: Option<Instant>,
    ) -> Result<Option<TaskOutcome>> {
        let plan_name = job.plan();
        let mut skipped = Skipped::default();
        while (p.staged_files as usize) < job.files.len() {
            if self.session_status(&job.session).await? == Some(SessionStatus::Aborted) {
                return self.stop(job, run).await.map(Some);
            }
            let n = stage_part(
                Stage::Plan(&self.db),
                &self.s3,
                job,
                &plan_name,
                p.staged_files as usize,
                &mut skipped,
            )
            .await?;
            p.staged_files += 1;
            p.staged += n;
            if let Some(stop) = self.checkpoint(job, run, p).await? {
                return Ok(Some(stop));
            }
            if self.near(deadline) {
                return self.hand_over(run).await.map(Some);
            }
        }
        Ok(None)
    }

    /// The staging table is unlogged: after a database crash it is empty. Stage again.
    async fn restage_if_lost(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &PlanCheckpoint,
    ) -> Result<Option<TaskOutcome>> {
        if p.after.is_some()
            || p.gone.is_some()
            || self.db.plan_count(&job.plan()).await? as u64 == p.staged
        {
            return Ok(None);
        }
        tracing::warn!(
            session = job.session,
            "staged objects lost (database restart?): staging again"
        );
        if let Some(stop) = self
            .checkpoint(job, run, &PlanCheckpoint::default())
            .await?
        {
            return Ok(Some(stop));
        }
        self.hand_over(run).await.map(Some)
    }

    /// Step 2: compare with the LoaderFiles, all at once.
    async fn compare(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &mut PlanCheckpoint,
    ) -> Result<Option<TaskOutcome>> {
        if p.compared {
            return Ok(None);
        }
        let t = Instant::now();
        let existing = self.db.compare_plan(&job.plan()).await?;
        p.compared = true;
        if let Some(stop) = self.checkpoint(job, run, p).await? {
            return Ok(Some(stop));
        }
        tracing::debug!(
            session = job.session,
            existing,
            ms = t.elapsed().as_millis() as u64,
            "compared the staged objects with the LoaderFiles"
        );
        Ok(None)
    }

    /// Steps 3 and 4: queue, a page per checkpoint; then mark what the inventory no
    /// longer lists as gone.
    async fn queue_all(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &mut PlanCheckpoint,
        deadline: Option<Instant>,
    ) -> Result<Option<TaskOutcome>> {
        let plan_name = job.plan();
        loop {
            let status = self.session_status(&job.session).await?;
            if status == Some(SessionStatus::Aborted) {
                return self.stop(job, run).await.map(Some);
            }
            let t = Instant::now();
            let page = self
                .db
                .plan_page(&plan_name, p.after.as_deref(), PAGE)
                .await?;
            let Some(last) = page.last().map(|o| o.object.file_id.clone()) else {
                break;
            };
            let read = t.elapsed();
            self.queue_page(job, &page, status == Some(SessionStatus::Paused), p)
                .await?;
            let queued = t.elapsed() - read;
            p.after = Some(last);
            if let Some(stop) = self.checkpoint(job, run, p).await? {
                return Ok(Some(stop));
            }
            tracing::debug!(
                session = job.session,
                objects = page.len(),
                read_ms = read.as_millis() as u64,
                queue_ms = queued.as_millis() as u64,
                total_ms = t.elapsed().as_millis() as u64,
                "planned a page"
            );
            if self.near(deadline) {
                return self.hand_over(run).await.map(Some);
            }
        }
        let gone = self
            .db
            .mark_gone(&plan_name, &job.bucket, &job.prefixes, &job.manifest)
            .await?;
        p.gone = Some(gone);
        self.checkpoint(job, run, p).await
    }

    /// Stores `p` as the task's checkpoint: `Some(outcome)` when the run must stop.
    async fn checkpoint(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &PlanCheckpoint,
    ) -> Result<Option<TaskOutcome>> {
        run.checkpoint.plan = Some(p.clone());
        Ok(self.commit(job, run).await?.err())
    }

    /// Done: the planning ends, the session settles when its files have loaded.
    async fn finish(
        &self,
        job: &InventoryJob,
        run: &mut Run,
        p: &PlanCheckpoint,
    ) -> Result<TaskOutcome> {
        if !self
            .db
            .end_export_task(
                &run.task,
                &run.owner,
                TaskStatus::Done,
                &run.checkpoint,
                p.staged as i64,
                None,
            )
            .await?
        {
            return Ok(TaskOutcome::Busy);
        }
        self.db.settle_export(&run.export).await?;
        self.db.drop_plan(&job.plan()).await?;
        {
            let client = self.db.client().await?;
            imports::set_plan(&**client, &job.session, &progress(p, true)).await?;
        }
        crate::sessions::settle(&self.db, &job.session).await?;
        tracing::info!(
            session = job.session,
            manifest = job.manifest,
            staged = p.staged,
            new = p.new,
            changed = p.changed,
            unchanged = p.unchanged,
            gone = p.gone,
            "inventory planned"
        );
        Ok(TaskOutcome::Done {
            count: p.staged as i64,
            bytes: 0,
        })
    }

    /// Creates, resets and queues the files of one page.
    async fn queue_page(
        &self,
        job: &InventoryJob,
        page: &[crate::storage::plans::PlannedObject],
        paused: bool,
        p: &mut PlanCheckpoint,
    ) -> Result<()> {
        let status = if paused {
            FileStatus::Paused
        } else {
            FileStatus::Pending
        };
        let fresh = |o: &crate::storage::plans::StagedObject| {
            let location = ObjectLocation::new(&job.bucket, &o.key);
            let mut f = LoaderFile::pending(
                &location,
                o.etag.clone(),
                o.size.map(|s| s as u64),
                job.options,
            )
            .owned_by(job.owner.clone(), job.writes.clone());
            f.status = status;
            f.import = Some(job.session.clone());
            f.group = Some(job.session.clone());
            f.threads = Some(job.threads);
            f.store = job.store.clone();
            f.inventory = Some(job.manifest.clone());
            f
        };
        let mut new = Vec::new();
        let mut changed = Vec::new();
        let mut back = Vec::new();
        for o in page {
            match &o.existing {
                None => new.push(fresh(&o.object)),
                Some(e) if e.etag != o.object.etag => changed.push(fresh(&o.object)),
                // Created by this planning before a crash: counted again as new.
                Some(e) if e.import.as_deref() == Some(job.session.as_str()) => p.new += 1,
                Some(e) => {
                    p.unchanged += 1;
                    if e.gone {
                        back.push(o.object.file_id.clone());
                    }
                }
            }
        }
        self.db.insert_loader_files(&new).await?;
        self.db.reset_loader_files(&changed).await?;
        self.db.clear_gone(&back).await?;
        p.new += new.len() as u64;
        p.changed += changed.len() as u64;
        if paused {
            return Ok(());
        }
        // The files wait in Postgres; the first `thread-num` go on the load queue, and
        // each file that ends queues the next (`loading::feed`).
        crate::loading::feed::feed(
            &self.db,
            &*self.load_queue,
            &job.session,
            job.threads,
            &self.store,
        )
        .await?;
        Ok(())
    }

    async fn hand_over(&self, run: &Run) -> Result<TaskOutcome> {
        task::release(&self.db, &run.task, &run.owner).await?;
        Ok(TaskOutcome::Continue)
    }
}

/// The planning's progress as the session shows it.
fn progress(p: &PlanCheckpoint, done: bool) -> PlanProgress {
    PlanProgress {
        staged: p.staged,
        staged_files: p.staged_files.into(),
        new: p.new,
        changed: p.changed,
        unchanged: p.unchanged,
        gone: p.gone,
        done,
    }
}
