//! The export worker: what a consumer of the export queue does with each message (one
//! message = one export task), with partial batch failures like the load worker.
//!
//! | task outcome | what happens to the message |
//! |---|---|
//! | done, cancelled, ended already | deleted |
//! | deadline reached (`Continue`) | a new message for the rest; this one deleted |
//! | busy (another worker holds it) | re-queued with a delay; this one deleted |
//! | transient error (database, store) | batch item failure: redelivered; after the last receive the task fails and says why |
//! | unreadable message | batch item failure (ends in the dead-letter queue) |
//!
//! The batch itself runs on [`super::runtime`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use tokio::sync::Mutex;

use super::runtime::{Delivery, Disposition, Job, Next, Runtime};
use crate::exporting::task::{Served, TaskOptions, TaskOutcome, TaskRunner};
use crate::exporting::ExportMessage;
use crate::model::export::ExportKind;
use crate::pulling::task::PullOutcome;
use crate::queue::MessageQueue;
use crate::sinks::s3::S3Sink;
use crate::sinks::ObjectSink;
use crate::storage::Db;

/// The message a delivery carries, as the task runners see it.
fn served<'a>(delivery: &Delivery<'a>) -> Served<'a> {
    Served {
        receipt: delivery.receipt,
        receives: delivery.receives,
    }
}

/// Shared across invocations of one sandbox.
pub struct ExportWorker {
    pub db: Db,
    /// The export queue (the rest of a long task is queued here again).
    pub queue: Arc<dyn MessageQueue>,
    pub options: TaskOptions,
    /// Receives after which a failing task is given up (the queue's maxReceiveCount).
    pub max_receives: u32,
    /// The export bucket, written with the function's own credentials.
    pub sink: Arc<dyn ObjectSink>,
    /// The function's own S3 client, for dump-to-bucket targets other than the export
    /// bucket (see [`ExportWorker::with_own_client`]).
    own: Option<crate::sources::s3::S3Source>,
    /// Sinks of dump-to-bucket targets, by bucket and store.
    others: Mutex<HashMap<String, Arc<dyn ObjectSink>>>,
    /// The load queue, where inventory imports queue their files (see
    /// [`ExportWorker::with_load_queue`]).
    load_queue: Option<Arc<dyn MessageQueue>>,
    /// What dump-to-bucket and inventory stores must pass, at every connection.
    policy: crate::sources::http::UrlPolicy,
    /// siphon's SMART client key, for pull imports that authenticate with it.
    remote_credentials: Arc<crate::auth::remote::RemoteCredentials>,
}

impl ExportWorker {
    pub fn new(
        db: Db,
        queue: Arc<dyn MessageQueue>,
        sink: Arc<dyn ObjectSink>,
        options: TaskOptions,
        max_receives: u32,
    ) -> Self {
        ExportWorker {
            db,
            queue,
            options,
            max_receives,
            sink,
            own: None,
            others: Mutex::new(HashMap::new()),
            load_queue: None,
            policy: crate::sources::http::UrlPolicy::deny_all_private(),
            remote_credentials: Default::default(),
        }
    }

    /// Pull imports with `auth` type `smart` sign their assertions with this key.
    pub fn with_remote_credentials(
        mut self,
        credentials: Arc<crate::auth::remote::RemoteCredentials>,
    ) -> Self {
        self.remote_credentials = credentials;
        self
    }

    /// Checks the stores messages name against `policy` (`SIPHON_URL_ALLOWLIST`); without
    /// it only public `https` endpoints are reached.
    pub fn with_policy(mut self, policy: crate::sources::http::UrlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Lets the worker plan inventory imports, queueing their files on `queue`.
    pub fn with_load_queue(mut self, queue: Arc<dyn MessageQueue>) -> Self {
        self.load_queue = Some(queue);
        self
    }

    /// Writes dump-to-bucket targets that name no store of their own with `s3` (the
    /// function's role); without it, with a client from the SDK's default chain.
    pub fn with_own_client(mut self, s3: crate::sources::s3::S3Source) -> Self {
        self.own = Some(s3);
        self
    }

    /// Where a task writes: the export bucket for `$export`, the job's bucket (reached
    /// with the message's store, or the function's own client) for dump-to-bucket.
    async fn sink_for(
        &self,
        message: &ExportMessage,
        target: Option<&str>,
    ) -> std::result::Result<Arc<dyn ObjectSink>, crate::sources::SourceError> {
        let Some(bucket) = target else {
            return Ok(self.sink.clone());
        };
        let store = &message.store;
        let key = format!(
            "{bucket}|{:?}|{:?}|{:?}",
            store.endpoint_url, store.region, store.access_key_id
        );
        let mut cache = self.others.lock().await;
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let client = match (&self.own, store.is_default()) {
            (Some(own), true) => own.client().clone(),
            _ => crate::sources::s3::client(&store.s3_options(&self.policy)).await?,
        };
        let sink: Arc<dyn ObjectSink> = Arc::new(S3Sink::new(client, bucket));
        cache.insert(key, sink.clone());
        Ok(sink)
    }

    /// Handles a batch; `deadline_ms` is the invocation deadline (ms since the epoch).
    pub async fn handle(&self, records: Vec<SqsMessage>, deadline_ms: u64) -> SqsBatchResponse {
        let (lease, beat) = (self.options.lease, self.options.heartbeat);
        Runtime::new(self.queue.clone(), lease, beat, self.max_receives)
            .handle(self, records, deadline_ms)
            .await
    }

    /// Runs the task of one message until it ends or the deadline.
    async fn work(&self, message: &ExportMessage, delivery: Delivery<'_>) -> Disposition {
        let task = message.task.as_str();
        let export = match self.db.export(task.split('/').next().unwrap_or("")).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(task, error = %e, "cannot read the export; the message will be redelivered");
                return Disposition::Redeliver;
            }
        };
        let kind = export.as_ref().map(|e| e.kind);
        // A dump-to-bucket writes its own bucket; `$export` the export bucket.
        let target = export
            .as_ref()
            .filter(|e| e.kind == ExportKind::Bucket)
            .and_then(|e| e.request["bucket"].as_str().map(str::to_string));
        let sink = match self.sink_for(message, target.as_deref()).await {
            Ok(sink) => sink,
            Err(e) => {
                // A store the guard refuses will not be allowed on a retry: the task ends.
                let why = format!("the target store cannot be used: {e}");
                tracing::warn!(task, error = %why, "store refused");
                if let Err(e) = self.give_up(task, &why).await {
                    tracing::error!(task, error = %e, "cannot mark the task failed");
                    return Disposition::Redeliver;
                }
                return Disposition::Done;
            }
        };
        let runner = TaskRunner {
            db: self.db.clone(),
            sink,
            options: self.options.clone(),
        };
        if kind == Some(ExportKind::Pull) {
            return self.pull(message, delivery).await;
        }
        // A missing export is the runner's to report (its task ends).
        let started = std::time::Instant::now();
        let outcome = match kind {
            Some(ExportKind::Inventory) => {
                self.plan(message, served(&delivery), delivery.deadline)
                    .await
            }
            Some(ExportKind::Fhir | ExportKind::Bucket | ExportKind::Pull) | None => {
                runner
                    .run(task, served(&delivery), Some(delivery.deadline))
                    .await
            }
        };
        let done = match &outcome {
            Ok(TaskOutcome::Done { count, bytes }) => Some((*count, *bytes)),
            _ => None,
        };
        record_task(kind, done, started.elapsed());
        self.disposition(task, outcome, &runner).await
    }

    /// What the queue does with the message of a task run that ended with `outcome`.
    async fn disposition(
        &self,
        task: &str,
        outcome: crate::error::Result<TaskOutcome>,
        runner: &TaskRunner,
    ) -> Disposition {
        match next(task, outcome) {
            Next::Dispose(d) => d,
            Next::SettleFirst => {
                // A redelivered message of an ended task: whoever ended it may have died
                // before finishing the export's end (the dump's marker), so it is done
                // again here; it is idempotent.
                let export = task.split('/').next().unwrap_or("");
                let settled = match self.db.settle_export(export).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(task, error = %e, "cannot settle the export; the message will be redelivered");
                        return Disposition::Redeliver;
                    }
                };
                if let Err(e) = runner.ended(export, settled).await {
                    tracing::error!(task, error = %e, "cannot finish the export; the message will be redelivered");
                    return Disposition::Redeliver;
                }
                Disposition::Done
            }
        }
    }

    /// Runs a pull import's planning task: a wait the remote asks for becomes the
    /// message's delay.
    async fn pull(&self, message: &ExportMessage, delivery: Delivery<'_>) -> Disposition {
        let Some(load_queue) = self.load_queue.clone() else {
            return Disposition::Retry(crate::error::Error::Internal(
                "pull imports need the load queue: set SIPHON_LOAD_QUEUE_URL for the export function".into(),
            ));
        };
        let puller = crate::pulling::task::Puller {
            db: self.db.clone(),
            load_queue,
            http: crate::sources::http::HttpSource::new(self.policy.clone()),
            credentials: self.remote_credentials.clone(),
            options: self.options.clone(),
        };
        let started = std::time::Instant::now();
        let outcome = puller
            .run(&message.task, served(&delivery), Some(delivery.deadline))
            .await;
        let done = match &outcome {
            Ok(PullOutcome::Task(TaskOutcome::Done { count, bytes })) => Some((*count, *bytes)),
            _ => None,
        };
        record_task(Some(ExportKind::Pull), done, started.elapsed());
        match outcome {
            Ok(PullOutcome::Wait(wait)) => Disposition::Requeue {
                delay: Some(wait.as_secs().clamp(1, 900) as i32),
                why: "the remote export is not ready".into(),
            },
            Ok(PullOutcome::Task(TaskOutcome::Continue)) => Disposition::Requeue {
                delay: None,
                why: "continue with the next manifest page".into(),
            },
            Ok(PullOutcome::Task(TaskOutcome::Busy)) => Disposition::Requeue {
                delay: Some(60),
                why: "busy: another worker holds the task".into(),
            },
            Ok(PullOutcome::Task(_)) => Disposition::Done,
            Err(e) => Disposition::Retry(e),
        }
    }

    /// Runs an inventory import's planning task.
    async fn plan(
        &self,
        message: &ExportMessage,
        served: Served<'_>,
        deadline: Instant,
    ) -> crate::error::Result<TaskOutcome> {
        let load_queue = self.load_queue.clone().ok_or_else(|| {
            crate::error::Error::Internal(
                "inventory imports need the load queue: set SIPHON_LOAD_QUEUE_URL for the export function".into(),
            )
        })?;
        let s3 = match (&self.own, message.store.is_default()) {
            (Some(own), true) => own.clone(),
            _ => match crate::sources::s3::client(&message.store.s3_options(&self.policy)).await {
                Ok(s3) => crate::sources::s3::S3Source::new(s3),
                Err(e) => {
                    // Refused by the guard: no retry will be allowed either.
                    let why = format!("the inventory's store cannot be used: {e}");
                    tracing::warn!(task = message.task, error = %why, "store refused");
                    self.give_up(&message.task, &why).await?;
                    return Ok(TaskOutcome::Ended(crate::model::export::TaskStatus::Error));
                }
            },
        };
        let planner = crate::inventory::plan::Planner {
            db: self.db.clone(),
            load_queue,
            s3,
            store: message.store.clone(),
            options: self.options.clone(),
        };
        planner.run(&message.task, served, Some(deadline)).await
    }

    /// Fails a task from outside a run (the queue gives up on it) and settles its export.
    /// A pull import's session ends in error with its task.
    pub async fn give_up(&self, task: &str, why: &str) -> crate::error::Result<()> {
        if crate::exporting::task::give_up(&self.db, task, why).await? {
            let export = task.split('/').next().unwrap_or("");
            if let Some(e) = self.db.export(export).await? {
                if e.kind == ExportKind::Pull {
                    let client = self.db.client().await?;
                    crate::storage::imports::set_status(
                        &**client,
                        export,
                        crate::model::SessionStatus::Error,
                        Some(&format!("pull failed: {why}")),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// The metrics of one run of an export task: its time, and when it ended `done`, what it
/// made (rows written and their uncompressed bytes; for an inventory import or a pull,
/// files queued).
fn record_task(kind: Option<ExportKind>, done: Option<(i64, u64)>, took: std::time::Duration) {
    use crate::metrics::{bytes, count, seconds};
    let operation = match kind {
        Some(ExportKind::Fhir) | None => "export",
        Some(ExportKind::Bucket) => "dump-to-bucket",
        Some(ExportKind::Inventory) => "inventory",
        Some(ExportKind::Pull) => "pull",
    };
    let mut figures = vec![seconds("TaskSeconds", took)];
    if let Some((n, written)) = done {
        figures.extend([count("TasksDone", 1), count("Rows", n.max(0) as u64)]);
        if written > 0 {
            figures.push(bytes("BytesWritten", written));
        }
    }
    crate::metrics::record(operation, None, &figures);
}

/// The export worker's state machine, from a task run's outcome to what the queue does
/// with its message (pure: unit tested below).
fn next(task: &str, outcome: crate::error::Result<TaskOutcome>) -> Next {
    let dispose = Next::Dispose;
    match outcome {
        Ok(TaskOutcome::Done { count, .. }) => {
            tracing::info!(task, count, "export task done");
            dispose(Disposition::Done)
        }
        Ok(TaskOutcome::Cancelled) => dispose(Disposition::Done),
        Ok(TaskOutcome::Ended(status)) => {
            tracing::info!(task, ?status, "the task had ended: settling its export");
            Next::SettleFirst
        }
        Ok(TaskOutcome::Continue) => dispose(Disposition::Requeue {
            delay: None,
            why: "continue after the checkpoint".into(),
        }),
        Ok(TaskOutcome::Busy) => dispose(Disposition::Requeue {
            delay: Some(60),
            why: "busy: another worker holds the task".into(),
        }),
        Err(e) => dispose(Disposition::Retry(e)),
    }
}

impl Job for ExportWorker {
    type Message = ExportMessage;
    const WHAT: &'static str = "export task";
    const OPERATION: &'static str = "export";

    fn id(message: &ExportMessage) -> &str {
        &message.task
    }

    async fn run(&self, message: &ExportMessage, delivery: Delivery<'_>) -> Disposition {
        self.work(message, delivery).await
    }

    async fn give_up(&self, message: &ExportMessage, why: &str) -> crate::error::Result<()> {
        ExportWorker::give_up(self, &message.task, why).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::export::TaskStatus;

    fn of(outcome: crate::error::Result<TaskOutcome>) -> String {
        format!("{:?}", next("exp/Patient/1", outcome))
    }

    #[test]
    fn every_task_outcome_has_its_disposition() {
        assert_eq!(
            of(Ok(TaskOutcome::Done {
                count: 5,
                bytes: 900
            })),
            "Dispose(Done)"
        );
        assert_eq!(of(Ok(TaskOutcome::Cancelled)), "Dispose(Done)");
        assert_eq!(
            of(Ok(TaskOutcome::Ended(TaskStatus::Done))),
            "SettleFirst",
            "a redelivery after the task's end finishes its export again"
        );
        assert_eq!(
            of(Ok(TaskOutcome::Continue)),
            r#"Dispose(Requeue { delay: None, why: "continue after the checkpoint" })"#
        );
        assert_eq!(
            of(Ok(TaskOutcome::Busy)),
            r#"Dispose(Requeue { delay: Some(60), why: "busy: another worker holds the task" })"#
        );
        assert!(of(Err(crate::error::Error::Unavailable(
            "database away".into()
        )))
        .starts_with("Dispose(Retry("));
    }
}
