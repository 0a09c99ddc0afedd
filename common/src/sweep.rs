//! The sweep: finds work whose worker died and gets it going again within about a
//! minute, whatever the queue's visibility timeout (SPEC section 9).
//!
//! A live worker renews its lease every few seconds (`LoadOptions::heartbeat`); a dead
//! one stops, and its lease runs out. For each file whose lease ran out, the sweep
//! - makes the very message the dead worker held visible again (its SQS receipt handle
//!   is kept with the lease), so the file is delivered anew with its original message,
//!   credentials included;
//! - or, when that message is gone, queues a new one built from the LoaderFile (possible
//!   unless the file needs `account` credentials, which only ever travel in messages);
//! - and records what it did on the file (`recovery`);
//! - unless `give_up_after` workers in a row died on it without moving its checkpoint on
//!   and it has not moved for `give_up_stuck` (a line that crashes every worker): the
//!   file then ends in `error`, saying so, and its session settles, instead of being
//!   tried forever. Export tasks alike (their export ends in `error`). Both conditions,
//!   because workers that share a process (`make serve`) die together: a file killed by
//!   its neighbour's crashes, again and again before its first commit, is not poison,
//!   and a restart storm must not end files that would load.
//!
//! Duplicate deliveries this may cause are harmless: claims are atomic and every batch
//! commit is fenced by the lease. In AWS an EventBridge schedule runs the sweep function
//! every minute; `make serve` runs the same pass in a loop.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::exporting::ExportMessage;
use crate::model::{LoaderFile, Stuck};
use crate::queue::{self, LoadMessage, MessageQueue, StoreSpec};
use crate::storage::Db;

/// How the sweep judges a lease dead.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// A lease must have run out at least this long ago (clock skew, slow commits).
    pub grace: Duration,
    /// After acting on a file, wait this long before acting on it again (the redelivered
    /// message may still be waiting for a free worker).
    pub again: Duration,
    /// Files handled per pass.
    pub limit: i64,
    /// Workers in a row dead without progress on a file before the sweep ends it in
    /// `error` (`SIPHON_SWEEP_GIVE_UP_AFTER`, default 5: the load queue's
    /// maxReceiveCount),
    pub give_up_after: u32,
    /// provided its checkpoint has not moved for this long either
    /// (`SIPHON_SWEEP_GIVE_UP_STUCK_SECONDS`, default 900).
    pub give_up_stuck: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            grace: Duration::from_secs(5),
            again: Duration::from_secs(120),
            limit: 500,
            give_up_after: 5,
            give_up_stuck: Duration::from_secs(900),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Stalled files whose message was made visible again.
    pub redelivered: u32,
    /// Stalled files for which a new message was queued.
    pub requeued: u32,
    /// Stalled files that must wait for their own message (credentials).
    pub waiting: u32,
    /// Stalled files ended in `error`: too many workers in a row died on them without
    /// progress.
    pub given_up: u32,
    /// Tables in bulk mode whose files had all ended (the last one's worker died before
    /// rebuilding them): rebuilt now.
    pub rebuilt: u32,
    /// Loads with references still to resolve (`validation.checks: refs|all`) that had
    /// ended (their last file's worker died before resolving them): resolved now.
    pub refs_resolved: u32,
    /// Export tasks whose worker died, delivered again.
    pub export_tasks: u32,
    /// Export tasks ended in `error`: too many workers in a row died on them without
    /// progress (their export ends in `error` too).
    pub export_tasks_given_up: u32,
}

impl SweepReport {
    /// The pass's metrics: work picked up again (`Recovered`) and work ended because
    /// workers kept dying on it (`GaveUp`, the figure worth an alarm).
    fn record(&self) {
        use crate::metrics::count;
        let recovered = self.redelivered + self.requeued + self.export_tasks;
        let gave_up = self.given_up + self.export_tasks_given_up;
        crate::metrics::record(
            "sweep",
            None,
            &[
                count("Recovered", recovered as u64),
                count("GaveUp", gave_up as u64),
                count("Rebuilt", (self.rebuilt + self.refs_resolved) as u64),
            ],
        );
    }
}

/// Runs sweep passes.
pub struct Sweeper {
    db: Db,
    load_queue: Arc<dyn MessageQueue>,
    export_queue: Option<Arc<dyn MessageQueue>>,
    options: SweepOptions,
}

impl Sweeper {
    pub fn new(db: Db, load_queue: Arc<dyn MessageQueue>, options: SweepOptions) -> Self {
        Sweeper {
            db,
            load_queue,
            export_queue: None,
            options,
        }
    }

    /// Also sweeps export tasks, re-delivering them on `queue`.
    pub fn with_export_queue(mut self, queue: Arc<dyn MessageQueue>) -> Self {
        self.export_queue = Some(queue);
        self
    }

    /// One pass over everything stalled.
    ///
    /// Each stage, and each file or task within one, stands alone: one that fails (a
    /// damaged row, a queue refusing one message) is logged, naming it, and the rest of
    /// the pass goes on; the pass fails only when the stalled files cannot be listed.
    pub async fn pass(&self) -> Result<SweepReport> {
        let mut report = SweepReport {
            rebuilt: self
                .rebuild_finished_loads()
                .await
                .inspect_err(|e| tracing::error!(error = %e, "sweep: rebuilding tables failed"))
                .unwrap_or(0),
            ..SweepReport::default()
        };
        report.refs_resolved = self
            .resolve_finished_refs()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "sweep: resolving references failed"))
            .unwrap_or(0);
        (report.export_tasks, report.export_tasks_given_up) = self
            .export_tasks()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "sweep: listing export tasks failed"))
            .unwrap_or((0, 0));
        let stalled = self
            .db
            .stalled_loader_files(
                self.options.grace.as_secs_f64(),
                self.options.again.as_secs_f64(),
                self.options.limit,
            )
            .await?;
        for file in stalled {
            let stuck = file.stuck_after_stall();
            if self.hopeless(&stuck) {
                match self.give_up(&file, &stuck).await {
                    Ok(true) => report.given_up += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(file_id = file.id, error = %e, "cannot end a stalled file")
                    }
                }
                continue;
            }
            match self.recover(&file, &stuck).await {
                Ok(how) => {
                    match how {
                        How::Redelivered => report.redelivered += 1,
                        How::Requeued => report.requeued += 1,
                        How::Waiting => report.waiting += 1,
                    }
                    tracing::warn!(
                        file_id = file.id,
                        file = %file.origin(),
                        stalled_since = file.lease.as_ref().map(|l| l.until.as_str()),
                        line = file.checkpoint.line,
                        barren = stuck.barren,
                        how = how.as_str(),
                        "stalled file: its worker stopped renewing the lease"
                    );
                }
                Err(e) => {
                    tracing::error!(file_id = file.id, error = %e, "cannot recover a stalled file")
                }
            }
        }
        report.record();
        Ok(report)
    }

    /// Export tasks whose lease ran out: their message made visible again, or a new one,
    /// or (after `give_up_after` workers in a row died without progress) ended in
    /// `error`. Returns (delivered again, given up).
    async fn export_tasks(&self) -> Result<(u32, u32)> {
        let Some(queue) = &self.export_queue else {
            return Ok((0, 0));
        };
        let stalled = self
            .db
            .stalled_export_tasks(
                self.options.grace.as_secs_f64(),
                self.options.again.as_secs_f64(),
                self.options.limit,
            )
            .await?;
        let (mut n, mut given_up) = (0, 0);
        for task in stalled {
            match self.export_task(queue, &task).await {
                Ok(Some(true)) => given_up += 1,
                Ok(Some(false)) => n += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(task = task.id, error = %e, "sweep: cannot recover a stalled export task")
                }
            }
        }
        Ok((n, given_up))
    }

    /// One stalled export task: `Some(true)` given up, `Some(false)` delivered again,
    /// `None` nothing done.
    async fn export_task(
        &self,
        queue: &Arc<dyn MessageQueue>,
        task: &crate::model::export::ExportTask,
    ) -> Result<Option<bool>> {
        {
            let stuck = self.db.export_task_stuck(&task.id).await?;
            if self.hopeless(&stuck) {
                let why = format!(
                    "gave up: {} workers in a row died running this task without \
                     committing a part, over {:.0} s (each stopped renewing its lease: out \
                     of memory, a crash or a timeout)",
                    stuck.barren,
                    stuck.seconds(chrono::Utc::now())
                );
                if crate::exporting::task::give_up(&self.db, &task.id, &why).await? {
                    tracing::error!(
                        task = task.id,
                        export = task.export_id,
                        barren = stuck.barren,
                        "gave up on an export task: its workers keep dying without progress"
                    );
                    return Ok(Some(true));
                }
                return Ok(None);
            }
            let redelivered = match &task.receipt {
                Some(r) => queue.make_visible(r).await?,
                None => false,
            };
            let how = if redelivered {
                How::Redelivered
            } else {
                let export = self.db.export(&task.export_id).await?;
                let credentials = export
                    .as_ref()
                    .is_some_and(|e| e.request["store"]["credentials"] == true);
                if credentials {
                    How::Waiting
                } else {
                    let store = export
                        .map(|e| StoreSpec {
                            endpoint_url: e.request["store"]["endpoint_url"]
                                .as_str()
                                .map(str::to_string),
                            region: e.request["store"]["region"].as_str().map(str::to_string),
                            ..Default::default()
                        })
                        .unwrap_or_default();
                    let message = ExportMessage {
                        task: task.id.clone(),
                        store,
                    };
                    queue::send(&**queue, std::slice::from_ref(&message), None).await?;
                    How::Requeued
                }
            };
            tracing::warn!(
                task = task.id,
                stalled_since = task.lease_until.as_deref(),
                barren = stuck.barren,
                how = how.as_str(),
                "stalled export task: its worker stopped renewing the lease"
            );
            self.db
                .note_export_task_recovery(&task.id, how.as_str(), &stuck)
                .await?;
            Ok(Some(false))
        }
    }

    /// Tables still in bulk mode although their load has ended (its last file's worker
    /// died between the end and the rebuild).
    async fn rebuild_finished_loads(&self) -> Result<u32> {
        let mut owners: Vec<String> = self
            .db
            .bulk_tables()
            .await?
            .into_iter()
            .map(|t| t.owner)
            .collect();
        owners.dedup();
        let mut rebuilt = 0;
        for owner in owners {
            let n = match crate::loading::bulk::finish(&self.db, &owner).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(owner, error = %e, "sweep: cannot rebuild a load's tables");
                    continue;
                }
            };
            if n > 0 {
                tracing::warn!(
                    owner,
                    tables = n,
                    "rebuilt tables left in bulk mode after their files had ended"
                );
                rebuilt += n as u32;
            }
        }
        Ok(rebuilt)
    }

    /// References of ended loads still unresolved (the worker that ended the load's last
    /// file died before resolving them). Loads still running are left alone.
    async fn resolve_finished_refs(&self) -> Result<u32> {
        let mut resolved = 0;
        for scope in self.db.ref_scopes().await? {
            match crate::validation::resolve::finish(&self.db, &scope).await {
                Ok(true) => {
                    tracing::warn!(scope, "resolved the references of an ended load");
                    resolved += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(scope, error = %e, "sweep: cannot resolve an ended load's references")
                }
            }
        }
        Ok(resolved)
    }

    /// Ends a file whose workers keep dying at the same place in `error`, then does what
    /// follows a file's end (its session, its load's tables). `false` when a worker
    /// claimed it meanwhile.
    async fn give_up(&self, file: &LoaderFile, stuck: &Stuck) -> Result<bool> {
        let line = file.checkpoint.line;
        let barren = stuck.barren;
        let why = format!(
            "gave up: {barren} workers in a row died loading this file without committing \
             a line past line {line}, over {:.0} s (each stopped renewing its lease: out of \
             memory, a crash or a timeout); the lines before it are loaded, and the file \
             can be loaded again once the cause is fixed",
            stuck.seconds(chrono::Utc::now())
        );
        if !self.db.abandon_loader_file(&file.id, &why, stuck).await? {
            return Ok(false);
        }
        tracing::error!(
            file_id = file.id,
            file = %file.origin(),
            line,
            barren,
            "gave up on a file: its workers keep dying without progress"
        );
        crate::sessions::ended::file_ended(
            &self.db,
            &*self.load_queue,
            &file.id,
            &StoreSpec::default(),
        )
        .await?;
        Ok(true)
    }

    /// Whether to give up on a stalled file or task rather than deliver it again.
    fn hopeless(&self, stuck: &Stuck) -> bool {
        stuck.barren >= self.options.give_up_after
            && stuck.seconds(chrono::Utc::now()) >= self.options.give_up_stuck.as_secs_f64()
    }

    async fn recover(&self, file: &LoaderFile, stuck: &Stuck) -> Result<How> {
        let receipt = file.lease.as_ref().and_then(|l| l.receipt.as_deref());
        let how = match receipt {
            Some(r) if self.load_queue.make_visible(r).await? => How::Redelivered,
            _ if file.store.credentials => How::Waiting,
            _ => {
                let store = StoreSpec {
                    endpoint_url: file.store.endpoint_url.clone(),
                    region: file.store.region.clone(),
                    ..Default::default()
                };
                let message = LoadMessage::for_file(file, store);
                queue::send(&*self.load_queue, std::slice::from_ref(&message), None).await?;
                How::Requeued
            }
        };
        self.db.note_recovery(&file.id, how.as_str(), stuck).await?;
        Ok(how)
    }
}

#[derive(Clone, Copy, Debug)]
enum How {
    Redelivered,
    Requeued,
    Waiting,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Redelivered => "redelivered",
            How::Requeued => "requeued",
            How::Waiting => "waiting for its own message (it needs the request's credentials)",
        }
    }
}
