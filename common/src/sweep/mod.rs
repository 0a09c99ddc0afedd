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
use crate::queue::MessageQueue;
use crate::storage::Db;

pub mod recovery;
pub mod stalled;

use recovery::Recovery;
use stalled::PgStalled;

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
    recovery: Recovery,
}

impl Sweeper {
    pub fn new(db: Db, load_queue: Arc<dyn MessageQueue>, options: SweepOptions) -> Self {
        let work = Arc::new(PgStalled {
            db: db.clone(),
            load_queue: load_queue.clone(),
        });
        Sweeper {
            db,
            recovery: Recovery {
                work,
                load_queue,
                export_queue: None,
                options,
            },
        }
    }

    /// Also sweeps export tasks, re-delivering them on `queue`.
    pub fn with_export_queue(mut self, queue: Arc<dyn MessageQueue>) -> Self {
        self.recovery.export_queue = Some(queue);
        self
    }

    /// One pass over everything stalled.
    ///
    /// Each stage, and each file or task within one, stands alone: one that fails (a
    /// damaged row, a queue refusing one message) is logged, naming it, and the rest of
    /// the pass goes on; the pass fails only when the stalled files cannot be listed.
    pub async fn pass(&self) -> Result<SweepReport> {
        let rebuilt = self
            .rebuild_finished_loads()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "sweep: rebuilding tables failed"))
            .unwrap_or(0);
        let refs_resolved = self
            .resolve_finished_refs()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "sweep: resolving references failed"))
            .unwrap_or(0);
        let tasks = self
            .recovery
            .tasks()
            .await
            .inspect_err(|e| tracing::error!(error = %e, "sweep: listing export tasks failed"))
            .unwrap_or_default();
        let files = self.recovery.files().await?;
        let report = SweepReport {
            redelivered: files.redelivered,
            requeued: files.requeued,
            waiting: files.waiting,
            given_up: files.given_up,
            rebuilt,
            refs_resolved,
            export_tasks: tasks.delivered,
            export_tasks_given_up: tasks.given_up,
        };
        report.record();
        Ok(report)
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
}
