//! Stalled work delivered anew: for each loader file or export task whose worker
//! stopped renewing its lease, the very message it held made visible again, or a new
//! one, or (a file that needs the request's credentials) nothing until its own message
//! comes back; or, when workers in a row keep dying on it without progress, the end of
//! it in `error`. Decided here over the [`StalledWork`] port, so the decisions are unit
//! tested in memory.

use std::sync::Arc;

use super::stalled::{StalledWork, TaskDelivery};
use super::SweepOptions;
use crate::error::Result;
use crate::exporting::ExportMessage;
use crate::model::export::ExportTask;
use crate::model::{LoaderFile, Stuck};
use crate::queue::{self, LoadMessage, MessageQueue, StoreSpec};

/// What the recovery of stalled files did in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesRecovered {
    pub redelivered: u32,
    pub requeued: u32,
    pub waiting: u32,
    pub given_up: u32,
}

/// What the recovery of stalled export tasks did in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TasksRecovered {
    /// Delivered again (their message made visible again, or a new one).
    pub delivered: u32,
    pub given_up: u32,
}

/// Delivers stalled work anew.
pub struct Recovery {
    pub work: Arc<dyn StalledWork>,
    pub load_queue: Arc<dyn MessageQueue>,
    pub export_queue: Option<Arc<dyn MessageQueue>>,
    pub options: SweepOptions,
}

impl Recovery {
    /// Every stalled file, each standing alone: one that cannot be handled is logged,
    /// naming it, and the others go on. Fails only when the files cannot be listed.
    pub async fn files(&self) -> Result<FilesRecovered> {
        let o = &self.options;
        let stalled = self.work.stalled_files(o.grace, o.again, o.limit).await?;
        let mut done = FilesRecovered::default();
        for file in stalled {
            let stuck = file.stuck_after_stall();
            if self.hopeless(&stuck) {
                match self.give_up_file(&file, &stuck).await {
                    Ok(true) => done.given_up += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(file_id = file.id, error = %e, "cannot end a stalled file")
                    }
                }
                continue;
            }
            match self.recover_file(&file, &stuck).await {
                Ok(how) => {
                    match how {
                        How::Redelivered => done.redelivered += 1,
                        How::Requeued => done.requeued += 1,
                        How::Waiting => done.waiting += 1,
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
        Ok(done)
    }

    /// Every stalled export task (nothing without an export queue), as [`Self::files`].
    pub async fn tasks(&self) -> Result<TasksRecovered> {
        let Some(queue) = &self.export_queue else {
            return Ok(TasksRecovered::default());
        };
        let o = &self.options;
        let stalled = self.work.stalled_tasks(o.grace, o.again, o.limit).await?;
        let mut done = TasksRecovered::default();
        for task in stalled {
            match self.recover_task(queue, &task).await {
                Ok(Some(true)) => done.given_up += 1,
                Ok(Some(false)) => done.delivered += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(task = task.id, error = %e, "sweep: cannot recover a stalled export task")
                }
            }
        }
        Ok(done)
    }

    /// Whether to give up on a stalled file or task rather than deliver it again: both
    /// conditions, since workers that share a process die together (module docs of
    /// [`super`]).
    fn hopeless(&self, stuck: &Stuck) -> bool {
        stuck.barren >= self.options.give_up_after
            && stuck.seconds(chrono::Utc::now()) >= self.options.give_up_stuck.as_secs_f64()
    }

    /// Ends a file whose workers keep dying at the same place. `false` when a worker
    /// claimed it meanwhile.
    async fn give_up_file(&self, file: &LoaderFile, stuck: &Stuck) -> Result<bool> {
        let line = file.checkpoint.line;
        let barren = stuck.barren;
        let why = format!(
            "gave up: {barren} workers in a row died loading this file without committing \
             a line past line {line}, over {:.0} s (each stopped renewing its lease: out of \
             memory, a crash or a timeout); the lines before it are loaded, and the file \
             can be loaded again once the cause is fixed",
            stuck.seconds(chrono::Utc::now())
        );
        if !self.work.give_up_file(&file.id, &why, stuck).await? {
            return Ok(false);
        }
        tracing::error!(
            file_id = file.id,
            file = %file.origin(),
            line,
            barren,
            "gave up on a file: its workers keep dying without progress"
        );
        Ok(true)
    }

    async fn recover_file(&self, file: &LoaderFile, stuck: &Stuck) -> Result<How> {
        let receipt = file.lease.as_ref().and_then(|l| l.receipt.as_deref());
        let how = match receipt {
            Some(r) if self.load_queue.make_visible(r).await? => How::Redelivered,
            _ if file.store.credentials => How::Waiting,
            _ => {
                let message = LoadMessage::for_file(file, StoreSpec::from(&file.store));
                queue::send(&*self.load_queue, std::slice::from_ref(&message), None).await?;
                How::Requeued
            }
        };
        self.work
            .note_file_recovery(&file.id, how.as_str(), stuck)
            .await?;
        Ok(how)
    }

    /// One stalled export task: `Some(true)` given up, `Some(false)` delivered again,
    /// `None` nothing done.
    async fn recover_task(
        &self,
        queue: &Arc<dyn MessageQueue>,
        task: &ExportTask,
    ) -> Result<Option<bool>> {
        let stuck = self.work.task_stuck(&task.id).await?;
        if self.hopeless(&stuck) {
            let why = format!(
                "gave up: {} workers in a row died running this task without committing a \
                 part, over {:.0} s (each stopped renewing its lease: out of memory, a crash \
                 or a timeout)",
                stuck.barren,
                stuck.seconds(chrono::Utc::now())
            );
            if !self.work.give_up_task(&task.id, &why).await? {
                return Ok(None);
            }
            tracing::error!(
                task = task.id,
                export = task.export_id,
                barren = stuck.barren,
                "gave up on an export task: its workers keep dying without progress"
            );
            return Ok(Some(true));
        }
        let redelivered = match &task.receipt {
            Some(r) => queue.make_visible(r).await?,
            None => false,
        };
        let how = if redelivered {
            How::Redelivered
        } else {
            match self.work.task_delivery(&task.export_id).await? {
                TaskDelivery::OwnMessageOnly => How::Waiting,
                TaskDelivery::Store(store) => {
                    let message = ExportMessage {
                        task: task.id.clone(),
                        store,
                    };
                    queue::send(&**queue, std::slice::from_ref(&message), None).await?;
                    How::Requeued
                }
            }
        };
        tracing::warn!(
            task = task.id,
            stalled_since = task.lease_until.as_deref(),
            barren = stuck.barren,
            how = how.as_str(),
            "stalled export task: its worker stopped renewing the lease"
        );
        self.work
            .note_task_recovery(&task.id, how.as_str(), &stuck)
            .await?;
        Ok(Some(false))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::model::export::{TaskCheckpoint, TaskKind, TaskStatus};
    use crate::model::loader_file::{FileOptions, FileStatus, Lease};
    use crate::queue::MemoryQueue;
    use crate::sources::ObjectLocation;
    use crate::sweep::stalled::{MemoryStalled, MemoryTask};

    fn ago(secs: i64) -> String {
        (Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339()
    }

    /// A file whose worker claimed it at `line` `since_secs` ago and whose lease ran out
    /// `stalled_secs` ago.
    fn stalled_file(key: &str, line: u64, receipt: Option<&str>) -> LoaderFile {
        let mut f = LoaderFile::pending(
            &ObjectLocation::new("bucket", key),
            None,
            None,
            FileOptions::default(),
        );
        f.status = FileStatus::InProgress;
        f.checkpoint.line = line;
        f.lease = Some(Lease {
            owner: "dead-worker".into(),
            since: Some(ago(60)),
            until: ago(30),
            from: Some(line),
            receipt: receipt.map(str::to_string),
        });
        f
    }

    fn stalled_task(id: &str, receipt: Option<&str>) -> ExportTask {
        ExportTask {
            id: id.into(),
            export_id: "exp".into(),
            kind: TaskKind::Resources,
            resource_type: "Patient".into(),
            part: 0,
            range_from: None,
            range_to: None,
            status: TaskStatus::Running,
            checkpoint: TaskCheckpoint::default(),
            count: 0,
            error: None,
            lease_until: Some(ago(30)),
            receipt: receipt.map(str::to_string),
        }
    }

    struct Harness {
        work: Arc<MemoryStalled>,
        load: Arc<MemoryQueue>,
        export: Arc<MemoryQueue>,
        recovery: Recovery,
    }

    fn harness(options: SweepOptions) -> Harness {
        let work = Arc::new(MemoryStalled::default());
        let load = Arc::new(MemoryQueue::default());
        let export = Arc::new(MemoryQueue::default());
        let recovery = Recovery {
            work: work.clone(),
            load_queue: load.clone(),
            export_queue: Some(export.clone()),
            options,
        };
        Harness {
            work,
            load,
            export,
            recovery,
        }
    }

    impl Harness {
        fn add_file(&self, f: LoaderFile) {
            self.work.files.lock().unwrap().insert(f.id.clone(), f);
        }
        fn file(&self, key: &str) -> LoaderFile {
            let files = self.work.files.lock().unwrap();
            files.values().find(|f| f.file == key).unwrap().clone()
        }
        /// The file's worker claimed it again and died at once (the lease ran out).
        fn claimed_again_and_died(&self, key: &str) {
            let mut files = self.work.files.lock().unwrap();
            let f = files.values_mut().find(|f| f.file == key).unwrap();
            let lease = f.lease.as_mut().unwrap();
            lease.since = Some(Utc::now().to_rfc3339());
            lease.until = ago(10);
            lease.receipt = None;
        }
        fn add_task(&self, task: ExportTask, stuck: Stuck, delivery: TaskDelivery) {
            let t = MemoryTask {
                task,
                stuck,
                delivery,
                recovered: None,
                recoveries: 0,
            };
            self.work.tasks.lock().unwrap().insert(t.task.id.clone(), t);
        }
    }

    fn quick() -> SweepOptions {
        SweepOptions {
            grace: Duration::from_secs(5),
            again: Duration::from_secs(120),
            limit: 100,
            give_up_after: 3,
            give_up_stuck: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_dead_workers_own_message_is_made_visible_again() {
        let h = harness(quick());
        h.load.in_flight.lock().unwrap().push("receipt-1".into());
        h.add_file(stalled_file("Patient.ndjson", 0, Some("receipt-1")));
        let done = h.recovery.files().await.unwrap();
        assert_eq!(done.redelivered, 1, "{done:?}");
        assert_eq!(
            *h.load.visible.lock().unwrap(),
            vec!["receipt-1".to_string()]
        );
        assert!(h.load.take().is_empty(), "no second message");
        let r = h.file("Patient.ndjson").recovery.unwrap();
        assert_eq!((r.how.as_str(), r.count, r.barren), ("redelivered", 1, 1));
    }

    #[tokio::test]
    async fn a_gone_message_is_replaced_by_one_built_from_the_file() {
        let h = harness(quick());
        let mut f = stalled_file("Observation.ndjson.gz", 120, Some("long-gone"));
        f.store.endpoint_url = Some("http://127.0.0.1:4566".into());
        h.add_file(f.clone());
        let done = h.recovery.files().await.unwrap();
        assert_eq!(done.requeued, 1, "{done:?}");
        let sent = h.load.take();
        assert_eq!(sent.len(), 1);
        let m: LoadMessage = serde_json::from_str(&sent[0].0).unwrap();
        assert_eq!(
            (m.loader_file_id.as_str(), m.key.as_str()),
            (f.id.as_str(), "Observation.ndjson.gz")
        );
        assert_eq!(
            m.store.endpoint_url.as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert_eq!(
            h.file("Observation.ndjson.gz").recovery.unwrap().how,
            "requeued"
        );
    }

    #[tokio::test]
    async fn a_file_that_needs_credentials_waits_for_its_own_message() {
        let h = harness(quick());
        let mut f = stalled_file("Patient.ndjson", 0, None);
        f.store.credentials = true;
        h.add_file(f);
        let done = h.recovery.files().await.unwrap();
        assert_eq!(done.waiting, 1, "{done:?}");
        assert!(
            h.load.take().is_empty(),
            "credentials never rest, so no new message"
        );
    }

    #[tokio::test]
    async fn a_stall_is_acted_on_once_until_a_worker_claims_the_file_again() {
        let h = harness(quick());
        h.add_file(stalled_file("Patient.ndjson", 0, None));
        assert_eq!(h.recovery.files().await.unwrap().requeued, 1);
        let again = h.recovery.files().await.unwrap();
        assert_eq!(
            again,
            FilesRecovered::default(),
            "within `again`: left alone"
        );
        h.claimed_again_and_died("Patient.ndjson");
        assert_eq!(h.recovery.files().await.unwrap().requeued, 1, "a new stall");
        let r = h.file("Patient.ndjson").recovery.unwrap();
        assert_eq!((r.count, r.barren), (2, 2));
    }

    #[tokio::test]
    async fn a_line_that_kills_every_worker_ends_the_file_in_error() {
        let h = harness(quick());
        h.add_file(stalled_file("Patient.ndjson", 40_000, None));
        for _ in 0..2 {
            assert_eq!(h.recovery.files().await.unwrap().requeued, 1);
            h.claimed_again_and_died("Patient.ndjson");
        }
        h.load.take();
        let done = h.recovery.files().await.unwrap();
        assert_eq!(done.given_up, 1, "the third worker in a row: {done:?}");
        let f = h.file("Patient.ndjson");
        assert_eq!(f.status, FileStatus::Error);
        let why = f.error.unwrap();
        assert!(
            why.contains("3 workers in a row") && why.contains("past line 40000"),
            "{why}"
        );
        assert!(f.lease.is_none());
        assert!(h.load.take().is_empty(), "not delivered again");
    }

    #[tokio::test]
    async fn workers_dying_together_briefly_are_not_a_poison_line() {
        // give_up_stuck not reached: a restart storm in `make serve`, not a bad line.
        let h = harness(SweepOptions {
            give_up_stuck: Duration::from_secs(900),
            ..quick()
        });
        h.add_file(stalled_file("Patient.ndjson", 0, None));
        for _ in 0..5 {
            assert_eq!(h.recovery.files().await.unwrap().requeued, 1);
            h.claimed_again_and_died("Patient.ndjson");
        }
        assert_eq!(h.file("Patient.ndjson").status, FileStatus::InProgress);
    }

    #[tokio::test]
    async fn one_file_that_cannot_be_noted_does_not_stop_the_others() {
        let h = harness(quick());
        let bad = stalled_file("A.ndjson", 0, None);
        h.work.failing.lock().unwrap().push(bad.id.clone());
        h.add_file(bad);
        h.add_file(stalled_file("B.ndjson", 0, None));
        let done = h.recovery.files().await.unwrap();
        assert_eq!(done.requeued, 1, "B recovered although A failed: {done:?}");
        assert_eq!(h.file("B.ndjson").recovery.unwrap().how, "requeued");
        assert!(h.file("A.ndjson").recovery.is_none());
    }

    #[tokio::test]
    async fn stalled_export_tasks_are_redelivered_requeued_or_left_for_their_message() {
        let h = harness(quick());
        h.export.in_flight.lock().unwrap().push("r-1".into());
        h.add_task(
            stalled_task("t1", Some("r-1")),
            Stuck::default(),
            TaskDelivery::OwnMessageOnly,
        );
        let store = StoreSpec {
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let mut other = stalled_task("t2", None);
        other.export_id = "exp2".into();
        h.add_task(other, Stuck::default(), TaskDelivery::Store(store));
        let mut secret = stalled_task("t3", None);
        secret.export_id = "exp3".into();
        h.add_task(secret, Stuck::default(), TaskDelivery::OwnMessageOnly);
        let done = h.recovery.tasks().await.unwrap();
        assert_eq!(
            done,
            TasksRecovered {
                delivered: 3,
                given_up: 0
            }
        );
        assert_eq!(*h.export.visible.lock().unwrap(), vec!["r-1".to_string()]);
        let sent = h.export.take();
        assert_eq!(sent.len(), 1, "only t2 gets a new message: {sent:?}");
        let m: ExportMessage = serde_json::from_str(&sent[0].0).unwrap();
        assert_eq!(
            (m.task.as_str(), m.store.region.as_deref()),
            ("t2", Some("eu-west-1"))
        );
        let tasks = h.work.tasks.lock().unwrap();
        let how = |id: &str| tasks[id].recovered.as_ref().unwrap().1.clone();
        assert_eq!(how("t1"), "redelivered");
        assert_eq!(how("t2"), "requeued");
        assert!(how("t3").starts_with("waiting"), "{}", how("t3"));
    }

    #[tokio::test]
    async fn an_export_task_its_workers_keep_dying_on_ends_in_error() {
        let h = harness(quick());
        let stuck = Stuck {
            barren: 3,
            since: Some(ago(600)),
        };
        h.add_task(
            stalled_task("t1", None),
            stuck,
            TaskDelivery::Store(StoreSpec::default()),
        );
        let done = h.recovery.tasks().await.unwrap();
        assert_eq!(
            done,
            TasksRecovered {
                delivered: 0,
                given_up: 1
            }
        );
        let tasks = h.work.tasks.lock().unwrap();
        assert_eq!(tasks["t1"].task.status, TaskStatus::Error);
        let why = tasks["t1"].task.error.clone().unwrap();
        assert!(
            why.contains("3 workers in a row died running this task"),
            "{why}"
        );
        assert!(h.export.take().is_empty());
    }

    #[tokio::test]
    async fn without_an_export_queue_tasks_are_left_alone() {
        let mut h = harness(quick());
        h.recovery.export_queue = None;
        h.add_task(
            stalled_task("t1", None),
            Stuck::default(),
            TaskDelivery::Store(StoreSpec::default()),
        );
        assert_eq!(h.recovery.tasks().await.unwrap(), TasksRecovered::default());
        assert!(h.work.tasks.lock().unwrap()["t1"].recovered.is_none());
    }
}
