//! Running one export task: rows of one type (or id range), in id order, out of
//! `COPY ... TO STDOUT` into files in S3, checkpointed after every uploaded part.
//!
//! Exactly-once effect: the checkpoint (last id written, files finished, the open upload
//! and its parts) is committed only after the part it describes is stored, and only by
//! the lease holder; a worker that dies (or hands over before its deadline) is followed
//! by one that reads the rows after the checkpoint again into the same part numbers. A
//! task delivered twice finds the first worker's lease and backs off. Cancellation is
//! seen at every checkpoint: the open upload is aborted and the task's files deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::bucket;
use super::rows::{self, Output, Reading, Rows};
use super::spec::ExportSpec;
use crate::error::{Error, Result};
use crate::fhir;
use crate::formats::{Chosen, Encoded};
use crate::lease::{self, Claim, Heartbeat, Leases};
use crate::model::export::{
    Export, ExportStatus, ExportTask, TaskCheckpoint, TaskKind, TaskStatus,
};
use crate::resource_type::ResourceType;
use crate::sinks::parquet::{self, ParquetFile};
use crate::sinks::writer::{FileWriter, WriteOptions};
use crate::sinks::{ObjectMeta, ObjectSink};
use crate::storage::dumps;
use crate::storage::exports::TaskCommit;
use crate::storage::leases::TaskLeases;
use crate::storage::read::{self, Blocks, Compartment, Patients, Projection, Slice};
use crate::storage::Db;

/// Tunables of a task run.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    /// How long a claim lasts unless renewed (default 30 s).
    pub lease: Duration,
    /// How often a live worker renews it (default 10 s).
    pub heartbeat: Duration,
    /// Bytes (as stored) per uploaded part (default 8 MiB; S3 needs 5 MiB or more).
    pub part_bytes: usize,
    /// A file is closed after this many resources (default 1,000,000)...
    pub file_max_resources: u64,
    /// ...or this many bytes, uncompressed (default 1 GiB).
    pub file_max_bytes: u64,
    /// Stop this long before the deadline at the latest (default 30 s).
    pub deadline_margin: Duration,
    /// Parquet row groups are closed at about this many encoded bytes (default 8 MiB):
    /// what a Parquet file holds in memory before its bytes go out as parts.
    pub row_group_bytes: usize,
}

impl TaskOptions {
    /// `SIPHON_LEASE_SECONDS` (30), `SIPHON_HEARTBEAT_SECONDS` (10),
    /// `SIPHON_EXPORT_PART_MB` (8, at least 5), `SIPHON_EXPORT_FILE_MAX_RESOURCES`
    /// (1,000,000), `SIPHON_EXPORT_FILE_MAX_MB` (1024), `SIPHON_EXPORT_ROW_GROUP_MB` (8).
    pub fn from_env(
        env: &crate::config::Env,
    ) -> std::result::Result<Self, crate::config::ConfigError> {
        Ok(TaskOptions {
            lease: env.seconds("SIPHON_LEASE_SECONDS", 30.0)?,
            heartbeat: env.seconds("SIPHON_HEARTBEAT_SECONDS", 10.0)?,
            part_bytes: (env.number("SIPHON_EXPORT_PART_MB", 8, 5, 512)? << 20) as usize,
            file_max_resources: env.number(
                "SIPHON_EXPORT_FILE_MAX_RESOURCES",
                1_000_000,
                1,
                u64::MAX,
            )?,
            file_max_bytes: env.number("SIPHON_EXPORT_FILE_MAX_MB", 1024, 1, 1 << 20)? << 20,
            deadline_margin: Duration::from_secs(30),
            row_group_bytes: (env.number("SIPHON_EXPORT_ROW_GROUP_MB", 8, 1, 512)? << 20) as usize,
        })
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            part_bytes: 8 << 20,
            file_max_resources: 1_000_000,
            file_max_bytes: 1 << 30,
            deadline_margin: Duration::from_secs(30),
            row_group_bytes: parquet::ROW_GROUP_BYTES,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The task's files are written (`count` rows, `bytes` uncompressed bytes; 0 for a
    /// planning task, which writes no file).
    Done { count: i64, bytes: u64 },
    /// The deadline came first: the work is committed; run it again (a new invocation).
    Continue,
    /// Another worker holds the task.
    Busy,
    /// Nothing to do: the task had ended already.
    Ended(TaskStatus),
    /// The export was cancelled: the task's files are removed.
    Cancelled,
}

/// A task this worker holds: its lease renewed until this is dropped.
pub struct Claimed {
    pub task: ExportTask,
    pub export: Export,
    pub owner: String,
    _heartbeat: Heartbeat,
}

/// The message a run serves.
#[derive(Clone, Copy, Debug)]
pub struct Served<'a> {
    /// Its SQS receipt handle (kept with the lease, for the sweep).
    pub receipt: Option<&'a str>,
    /// How many times it has been received (`ApproximateReceiveCount`).
    pub receives: u32,
}

impl Default for Served<'_> {
    /// A first delivery without a receipt (a run by hand, a benchmark).
    fn default() -> Self {
        Served {
            receipt: None,
            receives: 1,
        }
    }
}

/// Claims task `task_id` for a new owner and starts renewing its lease; `Err` is what to
/// answer when it cannot be had, or [`TaskOutcome::Continue`] when `served` is a
/// redelivery of a task a dead worker had moved on (see
/// [`lease::continue_on_fresh_message`]): the lease goes back and a fresh message takes
/// over, so that crashes which each got further never add up to `maxReceiveCount`.
pub async fn claim(
    db: &Db,
    options: &TaskOptions,
    task_id: &str,
    served: Served<'_>,
) -> Result<std::result::Result<Claimed, TaskOutcome>> {
    let owner = uuid::Uuid::new_v4().to_string();
    let leases = Arc::new(TaskLeases::tasks(db.clone()));
    let (task, export) = match leases
        .claim(task_id, &owner, options.lease, served.receipt)
        .await?
    {
        Claim::Held { progressed, .. }
            if lease::continue_on_fresh_message(progressed, served.receives) =>
        {
            leases.release(task_id, &owner).await?;
            tracing::info!(
                task = task_id,
                receives = served.receives,
                "redelivered after a worker that got somewhere died: continuing on a fresh message"
            );
            return Ok(Err(TaskOutcome::Continue));
        }
        Claim::Held { work, progressed } => {
            if progressed {
                tracing::info!(
                    task = task_id,
                    "taken over from a worker that had moved it on and stopped renewing"
                );
            }
            *work
        }
        // Tasks are never throttled; another worker holds it.
        Claim::Busy { .. } | Claim::Throttled => return Ok(Err(TaskOutcome::Busy)),
        Claim::Ended(s) => return Ok(Err(TaskOutcome::Ended(s))),
        Claim::Missing => return Ok(Err(TaskOutcome::Ended(TaskStatus::Cancelled))),
    };
    let heartbeat = lease::hold(
        leases,
        "export task",
        &task.id,
        &owner,
        options.lease,
        options.heartbeat,
    );
    Ok(Ok(Claimed {
        task,
        export,
        owner,
        _heartbeat: heartbeat,
    }))
}

/// Gives `owner`'s lease on task `task_id` back without ending the task (a hand-over
/// before the deadline): the next claim takes it at once.
pub async fn release(db: &Db, task_id: &str, owner: &str) -> Result<bool> {
    TaskLeases::tasks(db.clone()).release(task_id, owner).await
}

/// Ends task `task_id` in `error` from outside a run (the queue gives up on its message,
/// or the sweep on a task whose workers keep dying) and settles its export. `false` when
/// it could not be had (a live worker holds it, or it has ended).
pub async fn give_up(db: &Db, task_id: &str, why: &str) -> Result<bool> {
    let owner = format!("give-up-{}", uuid::Uuid::new_v4());
    let Claim::Held { work, .. } = db.claim_export_task(task_id, &owner, 60.0, None).await? else {
        return Ok(false);
    };
    let (t, e) = *work;
    db.end_export_task(
        &t.id,
        &owner,
        TaskStatus::Error,
        &t.checkpoint,
        t.count,
        Some(why),
    )
    .await?;
    if db.settle_export(&e.id).await? != Some(ExportStatus::Active) {
        db.drop_materialized(&e.id).await?;
    }
    Ok(true)
}

/// Runs export tasks into one sink.
pub struct TaskRunner {
    pub db: Db,
    pub sink: Arc<dyn ObjectSink>,
    pub options: TaskOptions,
}

/// Where a run stands.
struct Run<'a> {
    task: &'a ExportTask,
    spec: &'a ExportSpec,
    owner: String,
    checkpoint: TaskCheckpoint,
    count: i64,
}

impl TaskRunner {
    /// Runs task `task_id` until it ends or `deadline` nears, serving message `served`.
    pub async fn run(
        &self,
        task_id: &str,
        served: Served<'_>,
        deadline: Option<Instant>,
    ) -> Result<TaskOutcome> {
        let Claimed {
            task,
            export,
            owner,
            _heartbeat,
        } = match claim(&self.db, &self.options, task_id, served).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(outcome),
        };
        let spec: ExportSpec = serde_json::from_value(export.request.clone())
            .map_err(|e| Error::Internal(format!("unreadable export {}: {e}", export.id)))?;
        let mut run = Run {
            task: &task,
            spec: &spec,
            owner,
            checkpoint: task.checkpoint.clone(),
            count: task.count,
        };
        if export.status != ExportStatus::Active {
            self.clean_up(&mut run).await?;
            self.ended(&export.id, Some(export.status)).await?;
            return Ok(TaskOutcome::Cancelled);
        }
        tracing::info!(
            task = task.id,
            after = run.checkpoint.after.as_deref(),
            "export task running"
        );
        match self.write(&export, &mut run, deadline).await {
            Ok(outcome) => {
                if matches!(outcome, TaskOutcome::Done { .. }) {
                    let status = self.db.settle_export(&export.id).await?;
                    self.ended(&export.id, status).await?;
                }
                Ok(outcome)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                // Permanent: the task fails and with it the export, saying why.
                let why = e.to_string();
                tracing::error!(task = task.id, error = why, "export task failed");
                self.db
                    .end_export_task(
                        &task.id,
                        &run.owner,
                        TaskStatus::Error,
                        &run.checkpoint,
                        run.count,
                        Some(&why),
                    )
                    .await?;
                let status = self.db.settle_export(&export.id).await?;
                self.ended(&export.id, status).await?;
                Ok(TaskOutcome::Done {
                    count: run.count,
                    bytes: written(&run.checkpoint),
                })
            }
        }
    }

    /// What follows the end of an export (`status` as settled): a dump-to-bucket that
    /// is done gets its completion marker, written after every file; a cancelled export
    /// loses the files its finished tasks wrote (running tasks remove their own); an
    /// ended one drops the table its query was materialized into. All idempotent, so a
    /// worker that dies here is replaced by the redelivered message doing it again.
    pub async fn ended(&self, export_id: &str, status: Option<ExportStatus>) -> Result<()> {
        match status {
            None | Some(ExportStatus::Active) => return Ok(()),
            Some(ExportStatus::Done) => {
                if let Some(key) = bucket::write_marker(&self.db, &*self.sink, export_id).await? {
                    tracing::info!(
                        export = export_id,
                        marker = key,
                        "dump complete: marker written"
                    );
                }
            }
            Some(ExportStatus::Cancelled) => {
                let mut removed = 0;
                for task in self.db.export_tasks(export_id).await? {
                    if task.status == TaskStatus::Done {
                        for file in &task.checkpoint.files {
                            self.sink.delete(&file.key).await?;
                            removed += 1;
                        }
                    }
                }
                if removed > 0 {
                    tracing::info!(
                        export = export_id,
                        removed,
                        "export cancelled: finished files removed"
                    );
                }
            }
            Some(ExportStatus::Error) => {}
        }
        self.db.drop_materialized(export_id).await
    }

    /// Where the task's rows come from, after the checkpoint.
    async fn reading(&self, export: &Export, run: &Run<'_>) -> Result<Reading> {
        let window = window(&export.id, run.spec)?;
        match run.task.kind {
            TaskKind::Resources => resources_reading(export, run, window),
            TaskKind::Blocks => blocks_reading(export, run, window),
            TaskKind::Query => self.query_reading(export, run).await,
            TaskKind::Inventory | TaskKind::Pull => Err(Error::Internal(
                "a planning task (inventory, pull) reached the export task runner".into(),
            )),
            TaskKind::Deleted => deleted_reading(export, run, window),
        }
    }

    /// The rows of a dump-to-bucket query, materialized once for all its runs, after the
    /// checkpoint's row number.
    async fn query_reading(&self, export: &Export, run: &Run<'_>) -> Result<Reading> {
        let query = run.spec.query.as_deref().unwrap_or_default();
        let timeout = run.spec.timeout_ms.unwrap_or(60_000);
        let columns = self
            .db
            .materialize_query(&export.id, query, timeout)
            .await?;
        let after: i64 = match &run.checkpoint.after {
            Some(a) => a
                .parse()
                .map_err(|_| Error::Internal(format!("bad query checkpoint {a:?}")))?,
            None => 0,
        };
        rows::dump_reading(
            run.spec,
            None,
            Some((&dumps::table_of(&export.id), &columns, after)),
        )
    }

    fn key(&self, run: &Run<'_>, n: u32) -> String {
        match run.task.kind {
            TaskKind::Resources => run.spec.file_key(&run.task.resource_type, run.task.part, n),
            TaskKind::Blocks => run.spec.file_key("Patient-blocks", run.task.part, n),
            TaskKind::Query => run.spec.file_key("query", run.task.part, n),
            TaskKind::Deleted | TaskKind::Inventory | TaskKind::Pull => run.spec.deleted_key(n),
        }
    }

    fn write_options(&self, run: &Run<'_>) -> Result<WriteOptions> {
        let spec = run.spec;
        // Deleted resources are ndjson Bundles, whatever the format of the others.
        let format = match run.task.kind {
            TaskKind::Deleted => Chosen::parse(spec.exporter(), Some("ndjson"))?,
            _ => spec.file_format()?,
        };
        Ok(WriteOptions {
            meta: ObjectMeta {
                content_type: format.content_type().into(),
                content_encoding: spec.gzip.then(|| "gzip".to_string()),
            },
            gzip: spec.gzip,
            part_bytes: self.options.part_bytes,
        })
    }

    /// Commits the checkpoint; `Err(outcome)` when the run must stop.
    async fn commit(
        &self,
        export: &Export,
        run: &mut Run<'_>,
    ) -> Result<std::result::Result<(), TaskOutcome>> {
        match self
            .db
            .commit_export_task(
                &run.task.id,
                &export.id,
                &run.owner,
                &run.checkpoint,
                run.count,
                self.options.lease.as_secs_f64(),
            )
            .await?
        {
            TaskCommit::Committed => Ok(Ok(())),
            TaskCommit::LeaseLost => {
                tracing::warn!(task = run.task.id, "lease lost to another worker; stopping");
                Ok(Err(TaskOutcome::Busy))
            }
            TaskCommit::Cancelled => {
                self.clean_up(run).await?;
                self.ended(&export.id, Some(ExportStatus::Cancelled))
                    .await?;
                Ok(Err(TaskOutcome::Cancelled))
            }
        }
    }

    /// True when the deadline is nearer than the margin (or three slow steps).
    fn near(&self, deadline: Option<Instant>, slowest: Duration) -> bool {
        deadline
            .is_some_and(|d| Instant::now() + self.options.deadline_margin.max(slowest * 3) >= d)
    }

    /// Ends the task as done.
    async fn done(&self, run: &mut Run<'_>) -> Result<TaskOutcome> {
        if !self
            .db
            .end_export_task(
                &run.task.id,
                &run.owner,
                TaskStatus::Done,
                &run.checkpoint,
                run.count,
                None,
            )
            .await?
        {
            return Ok(TaskOutcome::Busy);
        }
        tracing::info!(
            task = run.task.id,
            count = run.count,
            files = run.checkpoint.files.len(),
            "export task done"
        );
        Ok(TaskOutcome::Done {
            count: run.count,
            bytes: written(&run.checkpoint),
        })
    }

    /// Hands over at the checkpoint: the lease goes back, the caller queues the rest.
    async fn hand_over(&self, run: &Run<'_>) -> Result<TaskOutcome> {
        release(&self.db, &run.task.id, &run.owner).await?;
        tracing::info!(
            task = run.task.id,
            after = run.checkpoint.after.as_deref(),
            "deadline near: handing over at the checkpoint"
        );
        Ok(TaskOutcome::Continue)
    }

    async fn write(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        deadline: Option<Instant>,
    ) -> Result<TaskOutcome> {
        let reading = self.reading(export, run).await?;
        if run.checkpoint.next == 0 {
            run.checkpoint.next = 1;
        }
        match &reading.output {
            Output::Typed(_, columns) => {
                let columns = columns.clone();
                let rows = Rows::open(&self.db, reading).await?;
                self.write_parquet(export, run, deadline, rows, &columns)
                    .await
            }
            Output::Json | Output::Lines(_) => {
                let header = match &reading.output {
                    Output::Lines(encoder) => encoder.header(),
                    _ => None,
                };
                let rows = Rows::open(&self.db, reading).await?;
                self.write_lines(export, run, deadline, rows, header).await
            }
        }
    }

    /// Text files: resumable mid-file, a checkpoint after every part. Files of Patient
    /// blocks are closed only between blocks (a block never spans two files), each block
    /// opened by its `Parameters` header.
    async fn write_lines(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        deadline: Option<Instant>,
        mut rows: Rows,
        header: Option<Vec<u8>>,
    ) -> Result<TaskOutcome> {
        let options = self.write_options(run)?;
        let mut blocks = BlockCursor::resumed(run);
        let mut writer = run
            .checkpoint
            .file
            .clone()
            .map(|state| FileWriter::resume(self.sink.clone(), state, options.clone()));
        let mut last: Option<Bytes> = None;
        let mut slowest = Duration::ZERO;
        while let Some(batch) = rows.next().await? {
            for row in batch {
                let Encoded::Line(line) = row.data else {
                    return Err(Error::Internal("a typed row in a text file".into()));
                };
                if blocks.repeated(&last, &row.key) {
                    continue;
                }
                let opens = blocks.opens(&row.key)?;
                // A full file of blocks is closed where the next block begins.
                if opens.is_some() && writer.as_ref().is_some_and(|w| self.file_full(run, w)) {
                    let started = Instant::now();
                    self.close_file(run, &mut writer, &last).await?;
                    if let Some(stop) = self
                        .checkpointed(export, run, &mut writer, deadline, started, &mut slowest)
                        .await?
                    {
                        drop(rows);
                        return self.stopped(run, stop).await;
                    }
                }
                let w = writer.get_or_insert_with(|| self.open_file(run, &options, &header));
                if let Some(patient) = opens {
                    w.push(&block_header(&patient));
                    blocks.current = Some(patient);
                }
                w.push(&line);
                last = Some(row.key);
                let file_full = !blocks.on && self.file_full(run, w);
                if !w.part_full() && !file_full {
                    continue;
                }
                let started = Instant::now();
                if file_full {
                    self.close_file(run, &mut writer, &last).await?;
                } else {
                    w.flush_part().await?;
                    run.checkpoint.file = Some(w.state().clone());
                    run.checkpoint.after = last
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned());
                }
                run.count = committed(&run.checkpoint);
                if let Some(stop) = self
                    .checkpointed(export, run, &mut writer, deadline, started, &mut slowest)
                    .await?
                {
                    drop(rows);
                    return self.stopped(run, stop).await;
                }
            }
        }
        if let Some(w) = writer.take() {
            self.last_file(run, w, last).await?;
        }
        self.done(run).await
    }

    /// A new file of the task, its header first.
    fn open_file(
        &self,
        run: &Run<'_>,
        options: &WriteOptions,
        header: &Option<Vec<u8>>,
    ) -> FileWriter {
        let key = self.key(run, run.checkpoint.next);
        let mut w = FileWriter::new(self.sink.clone(), &key, options.clone());
        if let Some(h) = header {
            w.push_uncounted(h);
        }
        w
    }

    /// The rows ran out: the file being written is finished (dropped when it holds no
    /// line) and the checkpoint says so.
    async fn last_file(&self, run: &mut Run<'_>, w: FileWriter, last: Option<Bytes>) -> Result<()> {
        if w.count() > 0 {
            run.checkpoint.files.push(w.finish().await?);
        } else {
            w.abort().await?;
        }
        run.checkpoint.file = None;
        run.checkpoint.after = last.map(|k| String::from_utf8_lossy(&k).into_owned());
        run.count = committed(&run.checkpoint);
        Ok(())
    }

    /// True when a file has reached its size (files of one table with a single-file
    /// layout never are).
    fn file_full(&self, run: &Run<'_>, w: &FileWriter) -> bool {
        !run.spec.single_file()
            && (w.count() >= self.options.file_max_resources
                || w.bytes() >= self.options.file_max_bytes)
    }

    /// Finishes the open file, its last row `last`: the checkpoint lists it.
    async fn close_file(
        &self,
        run: &mut Run<'_>,
        writer: &mut Option<FileWriter>,
        last: &Option<Bytes>,
    ) -> Result<()> {
        let file = writer.take().expect("a writer").finish().await?;
        finished(run, file, last);
        Ok(())
    }

    /// Commits the checkpoint after a part or file went out at `started`; `Some` when the
    /// run stops there: told to (the open upload aborted if the export was cancelled), or
    /// the deadline near (`Continue`: hand over).
    async fn checkpointed(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        writer: &mut Option<FileWriter>,
        deadline: Option<Instant>,
        started: Instant,
        slowest: &mut Duration,
    ) -> Result<Option<TaskOutcome>> {
        if let Err(stop) = self.commit(export, run).await? {
            if let Some(w) = writer.take() {
                if stop == TaskOutcome::Cancelled {
                    let _ = w.abort().await;
                }
            }
            return Ok(Some(stop));
        }
        *slowest = (*slowest).max(started.elapsed());
        Ok(self
            .near(deadline, *slowest)
            .then_some(TaskOutcome::Continue))
    }

    /// Ends a run stopped at a checkpoint: `Continue` hands over, the rest are answers.
    async fn stopped(&self, run: &Run<'_>, stop: TaskOutcome) -> Result<TaskOutcome> {
        match stop {
            TaskOutcome::Continue => self.hand_over(run).await,
            other => Ok(other),
        }
    }

    /// Parquet files: a file is written within one run (its footer needs all of it), so
    /// a checkpoint follows each finished file; an upload left by a dead run is aborted.
    async fn write_parquet(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        deadline: Option<Instant>,
        mut rows: Rows,
        columns: &[crate::model::export::Column],
    ) -> Result<TaskOutcome> {
        if let Some(stale) = run.checkpoint.file.take() {
            if let Some(id) = &stale.upload_id {
                self.sink.abort_upload(&stale.key, id).await?;
            }
        }
        let mut file: Option<ParquetFile> = None;
        let mut last: Option<Bytes> = None;
        let mut slowest = Duration::ZERO;
        let mut ended = false;
        while !ended {
            let batch = rows.next().await?;
            ended = batch.is_none();
            for row in batch.unwrap_or_default() {
                let Encoded::Values(values) = row.data else {
                    return Err(Error::Internal("a text row in a Parquet file".into()));
                };
                if file.is_none() {
                    let key = self.key(run, run.checkpoint.next);
                    file = Some(ParquetFile::new(
                        self.sink.clone(),
                        &key,
                        columns,
                        self.options.row_group_bytes,
                        self.options.part_bytes,
                    )?);
                }
                let f = file.as_mut().expect("a file");
                f.push(&values)?;
                last = Some(row.key);
                let uploaded = match self.upload_ready_part(export, run, f, &mut slowest).await? {
                    Ok(uploaded) => uploaded,
                    Err(stop) => {
                        if let Some(f) = file.take() {
                            let _ = f.abort().await;
                        }
                        return Ok(stop);
                    }
                };
                let f = file.as_ref().expect("a file");
                let full = !run.spec.single_file()
                    && (f.count() >= self.options.file_max_resources
                        || f.bytes() >= self.options.file_max_bytes);
                // Like text files, the deadline is looked at when a part went out.
                let near = uploaded && self.near(deadline, slowest);
                if full || near {
                    let f = file.take().expect("a file");
                    if let Err(stop) = self.close_parquet(export, run, f, &last).await? {
                        return Ok(stop);
                    }
                    if near {
                        drop(rows);
                        return self.hand_over(run).await;
                    }
                }
            }
        }
        if let Some(f) = file.take() {
            run.checkpoint.files.push(f.finish().await?);
            run.checkpoint.file = None;
            run.checkpoint.after = last.map(|k| String::from_utf8_lossy(&k).into_owned());
            run.count = committed(&run.checkpoint);
        }
        self.done(run).await
    }

    /// Uploads the file's part when one is ready; the first part's upload is recorded in
    /// the checkpoint, so a run that dies leaves it to be aborted. Whether a part went.
    async fn upload_ready_part(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        f: &mut ParquetFile,
        slowest: &mut Duration,
    ) -> Result<std::result::Result<bool, TaskOutcome>> {
        if !f.part_ready() {
            return Ok(Ok(false));
        }
        let started = Instant::now();
        let first = f.upload_id().is_none();
        f.upload_part().await?;
        *slowest = (*slowest).max(started.elapsed());
        if first {
            run.checkpoint.file = Some(crate::model::export::FileState {
                key: self.key(run, run.checkpoint.next),
                upload_id: f.upload_id().map(str::to_string),
                ..Default::default()
            });
            if let Err(stop) = self.commit(export, run).await? {
                return Ok(Err(stop));
            }
        }
        Ok(Ok(true))
    }

    /// Finishes a Parquet file before its rows end (full, or the deadline near) and
    /// commits the checkpoint after its last row.
    async fn close_parquet(
        &self,
        export: &Export,
        run: &mut Run<'_>,
        f: ParquetFile,
        last: &Option<Bytes>,
    ) -> Result<std::result::Result<(), TaskOutcome>> {
        finished(run, f.finish().await?, last);
        self.commit(export, run).await
    }

    /// The export was cancelled: abort the open upload, delete the finished files.
    async fn clean_up(&self, run: &mut Run<'_>) -> Result<()> {
        if let Some(file) = run.checkpoint.file.take() {
            if let Some(id) = &file.upload_id {
                self.sink.abort_upload(&file.key, id).await?;
            }
        }
        for file in std::mem::take(&mut run.checkpoint.files) {
            self.sink.delete(&file.key).await?;
        }
        self.db
            .end_export_task(
                &run.task.id,
                &run.owner,
                TaskStatus::Cancelled,
                &run.checkpoint,
                0,
                None,
            )
            .await?;
        tracing::info!(
            task = run.task.id,
            "export cancelled: the task's files are removed"
        );
        Ok(())
    }
}

/// Rows in the finished files and the uploaded parts of the open one.
/// Uncompressed bytes of the task's finished files.
/// What a resources task reads: its type's rows in its id range, from the checkpoint.
fn resources_reading(
    export: &Export,
    run: &Run<'_>,
    (since, until): (Bound, Bound),
) -> Result<Reading> {
    let ty = ResourceType::parse(&run.task.resource_type)?;
    let slice = Slice {
        after: run
            .checkpoint
            .after
            .clone()
            .or_else(|| run.task.range_from.clone()),
        upto: run.task.range_to.clone(),
        since,
        until,
        compartment: compartment(&export.id, run.spec, &ty),
        projection: projection(&ty, &run.spec.elements),
        filter: type_filter(run.spec, &ty),
        resource_type: ty,
    };
    rows::dump_reading(run.spec, Some(slice), None)
}

/// What a Patient-blocks task reads: every exported type's rows in the compartment of
/// the Patients of its range, in block order, from the checkpoint.
fn blocks_reading(
    export: &Export,
    run: &Run<'_>,
    (since, until): (Bound, Bound),
) -> Result<Reading> {
    // Patient first in every block, then the other types in the export's order.
    let mut types = run
        .spec
        .types
        .iter()
        .map(|t| ResourceType::parse(t))
        .collect::<Result<Vec<_>>>()?;
    types.sort_by_key(|t| t.as_str() != "Patient");
    let slices = types
        .into_iter()
        .map(|ty| Slice {
            after: None,
            upto: None,
            since,
            until,
            compartment: Some(Compartment {
                paths: fhir::patient_compartment(ty.as_str())
                    .map(|p| p.to_vec())
                    .unwrap_or_default(),
                patients: Patients::Any,
            }),
            projection: projection(&ty, &run.spec.elements),
            filter: type_filter(run.spec, &ty),
            resource_type: ty,
        })
        .collect();
    let blocks = Blocks {
        slices,
        from: run.task.range_from.clone(),
        upto: run.task.range_to.clone(),
        patients: if run.spec.patients {
            Patients::Listed {
                export_id: export.id.clone(),
            }
        } else {
            Patients::Any
        },
        after: run.checkpoint.after.clone(),
    };
    Ok(Reading {
        select: read::blocks_sql(&blocks)?,
        output: Output::Json,
    })
}

/// What a `deleted[]` task reads: the deletions of the exported types in the window.
fn deleted_reading(
    export: &Export,
    run: &Run<'_>,
    (since, until): (Bound, Bound),
) -> Result<Reading> {
    let types = run
        .spec
        .types
        .iter()
        .map(|t| {
            let ty = ResourceType::parse(t)?;
            let c = compartment(&export.id, run.spec, &ty);
            Ok((ty, c))
        })
        .collect::<Result<Vec<_>>>()?;
    let since = since.ok_or_else(|| Error::Internal("deleted[] without _since".into()))?;
    Ok(Reading {
        select: read::deleted_sql(&types, since, until, run.checkpoint.after.as_deref())?,
        output: Output::Json,
    })
}

/// Where a Patient-blocks task stands among its blocks (off for other tasks).
struct BlockCursor {
    on: bool,
    /// The Patient of the block the last row written belongs to (from the checkpoint
    /// after a resume).
    current: Option<String>,
}

impl BlockCursor {
    fn resumed(run: &Run<'_>) -> Self {
        let on = run.task.kind == TaskKind::Blocks;
        let current = run
            .checkpoint
            .after
            .as_deref()
            .filter(|_| on)
            .and_then(read::block_key)
            .map(|(patient, _, _)| patient.to_string());
        BlockCursor { on, current }
    }

    /// A resource naming its Patient through two paths comes twice in a row.
    fn repeated(&self, last: &Option<Bytes>, key: &Bytes) -> bool {
        self.on && last.as_ref() == Some(key)
    }

    /// The Patient whose block the row with `key` opens, if it opens one.
    fn opens(&self, key: &[u8]) -> Result<Option<String>> {
        if !self.on {
            return Ok(None);
        }
        let patient = read::block_key(&String::from_utf8_lossy(key))
            .map(|(p, _, _)| p.to_string())
            .ok_or_else(|| Error::Internal("a block row without its key".into()))?;
        Ok((self.current.as_ref() != Some(&patient)).then_some(patient))
    }
}

fn written(c: &TaskCheckpoint) -> u64 {
    c.files.iter().map(|f| f.bytes).sum()
}

fn committed(c: &TaskCheckpoint) -> i64 {
    (c.files.iter().map(|f| f.count).sum::<u64>() + c.file.as_ref().map_or(0, |f| f.count)) as i64
}

/// `_elements` for `ty`: the elements asked for it (or for every type), plus the
/// elements FHIR requires of it; `None` without `_elements`.
fn projection(ty: &ResourceType, elements: &[(Option<String>, String)]) -> Option<Projection> {
    if elements.is_empty() {
        return None;
    }
    let mut names: Vec<String> = elements
        .iter()
        .filter(|(t, _)| t.as_deref().is_none_or(|t| t == ty.as_str()))
        .map(|(_, n)| n.clone())
        .collect();
    let mut choices = Vec::new();
    for required in fhir::required_elements(ty.as_str()) {
        match required.strip_suffix("[x]") {
            Some(prefix) => choices.push(prefix.to_string()),
            None => names.push(required),
        }
    }
    // A choice asked for by its base name keeps every variant (`value` -> `valueQuantity`).
    for (_, n) in elements {
        if fhir::is_choice(ty.as_str(), n) {
            choices.push(n.clone());
        }
    }
    names.sort();
    names.dedup();
    Some(Projection { names, choices })
}

/// One end of an export's window (none: open).
type Bound = Option<chrono::DateTime<chrono::Utc>>;

/// `_since` and `_until` of an export, as stored.
fn window(export_id: &str, spec: &ExportSpec) -> Result<(Bound, Bound)> {
    let instant = |value: Option<&str>, what: &str| {
        value
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| Error::Internal(format!("bad {what} in export {export_id}: {e}")))
            })
            .transpose()
    };
    Ok((
        instant(spec.since.as_deref(), "since")?,
        instant(spec.until.as_deref(), "until")?,
    ))
}

/// Records `file` as finished in the checkpoint, `last` the key of its last row: the
/// next file gets the next number.
fn finished(run: &mut Run<'_>, file: crate::model::export::WrittenFile, last: &Option<Bytes>) {
    run.checkpoint.files.push(file);
    run.checkpoint.file = None;
    run.checkpoint.next += 1;
    run.checkpoint.after = last
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    run.count = committed(&run.checkpoint);
}

/// The `Parameters` line that opens the resource block of Patient `patient` (STU3).
fn block_header(patient: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "header", "valueReference": {"reference": format!("Patient/{patient}")}}]
    }))
    .expect("JSON")
}

/// The `_typeFilter` of `ty`, if the export has one.
fn type_filter(
    spec: &ExportSpec,
    ty: &ResourceType,
) -> Option<crate::fhir::search::filter::TypeFilter> {
    spec.type_filters
        .iter()
        .find(|f| f.resource_type == ty.as_str())
        .cloned()
}

/// The Patient compartments a Patient- or Group-level export's rows of `ty` lie in.
fn compartment(export_id: &str, spec: &ExportSpec, ty: &ResourceType) -> Option<Compartment> {
    spec.compartment_level().then(|| Compartment {
        paths: fhir::patient_compartment(ty.as_str())
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        patients: if spec.patients {
            Patients::Listed {
                export_id: export_id.to_string(),
            }
        } else {
            Patients::Any
        },
    })
}
