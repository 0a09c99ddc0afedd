//! The load worker: what a consumer of the load queue does with each message (one
//! message = one file). Each record is loaded until done or the deadline; the answer
//! uses partial batch failures so one bad file never re-delivers its neighbours.
//!
//! | loader outcome | what happens to the message |
//! |---|---|
//! | done, failed (file in `error`), nothing to do | deleted (success) |
//! | halted: its `$import` session paused or aborted | deleted (resume re-queues) |
//! | deadline reached (`Continue`) | a new message is queued for the rest; this one deleted |
//! | busy (another loader) / throttled (thread-num) | re-queued with a delay; this one deleted |
//! | transient error | batch item failure: SQS redelivers; after the last receive the LoaderFile says why and the message goes to the DLQ |
//! | unreadable message | batch item failure (ends in the DLQ) |
//!
//! The batch itself runs on [`super::runtime`].

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};
use tokio::sync::Mutex;

use super::runtime::{Delivery, Disposition, Job, Next, Runtime};
use crate::auth::remote::{RemoteAccess, RemoteCredentials};
use crate::error::{Error, Result};
use crate::loading::{LoadOptions, Loader, Outcome};
use crate::queue::{LoadMessage, MessageQueue};
use crate::sessions;
use crate::sources::http::{HttpSource, UrlPolicy};
use crate::sources::s3::S3Source;
use crate::sources::{Routed, Source};
use crate::storage::Db;

/// Shared across invocations of one sandbox.
pub struct LoadWorker {
    pub db: Db,
    /// The load queue (the rest of a long file is queued here again).
    pub queue: Arc<dyn MessageQueue>,
    pub options: LoadOptions,
    /// Receives after which a failing message is given up (the queue's maxReceiveCount).
    pub max_receives: u32,
    default_source: Arc<S3Source>,
    sources: Mutex<HashMap<String, Arc<S3Source>>>,
    /// Reads `https://` inputs of `$import` sessions (URL guard from `SIPHON_URL_ALLOWLIST`).
    pub http: Arc<dyn Source>,
    /// What the stores of messages must pass, at every connection.
    policy: UrlPolicy,
    /// siphon's SMART client key and the guarded client for its token requests (files
    /// of pull imports that authenticate with it).
    remote: RemoteAccess,
}

impl LoadWorker {
    /// `default_s3` reads files with the function's role; `policy` guards `https://`
    /// inputs; `max_receives` is the queue's maxReceiveCount.
    pub fn new(
        db: Db,
        queue: Arc<dyn MessageQueue>,
        default_s3: S3Source,
        policy: UrlPolicy,
        options: LoadOptions,
        max_receives: u32,
    ) -> Self {
        // One client (one TLS configuration) for files and token requests: a clone
        // shares it.
        let http = HttpSource::new(policy.clone());
        LoadWorker {
            db,
            queue,
            options,
            max_receives,
            default_source: Arc::new(default_s3),
            sources: Mutex::new(HashMap::new()),
            http: Arc::new(http.clone()),
            remote: RemoteAccess {
                credentials: Default::default(),
                http,
            },
            policy,
        }
    }

    /// Files of pull imports with `auth` type `smart` get their tokens with this key.
    pub fn with_remote_credentials(mut self, credentials: Arc<RemoteCredentials>) -> Self {
        self.remote.credentials = credentials;
        self
    }

    /// The source of a message's store; an endpoint the URL guard refuses (checked here,
    /// in the worker, whatever the API saw) is [`SourceError::Refused`].
    async fn source_for(
        &self,
        message: &LoadMessage,
    ) -> std::result::Result<Arc<S3Source>, crate::sources::SourceError> {
        if message.store.is_default() {
            return Ok(self.default_source.clone());
        }
        // One client per distinct store, kept for warm invocations (keyed without secrets
        // in clear: the key id and endpoint are enough to tell stores apart).
        let key = format!(
            "{:?}|{:?}|{:?}",
            message.store.endpoint_url, message.store.region, message.store.access_key_id
        );
        let mut cache = self.sources.lock().await;
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(S3Source::new(
            crate::sources::s3::client(&message.store.s3_options(&self.policy)).await?,
        ));
        cache.insert(key, s.clone());
        Ok(s)
    }

    /// Handles a batch; `deadline_ms` is the invocation deadline (ms since the epoch).
    pub async fn handle(&self, records: Vec<SqsMessage>, deadline_ms: u64) -> SqsBatchResponse {
        let (lease, beat) = (self.options.lease, self.options.heartbeat);
        Runtime::new(self.queue.clone(), lease, beat, self.max_receives)
            .handle(self, records, deadline_ms)
            .await
    }

    /// Loads the file of one message until it ends or the deadline.
    async fn load(&self, message: &LoadMessage, delivery: Delivery<'_>) -> Disposition {
        let file_id = message.loader_file_id.as_str();
        let s3 = match self.source_for(message).await {
            Ok(s3) => s3,
            Err(e) => {
                // A store the guard refuses will not be allowed on a retry: the file ends.
                let why = format!("the file's store cannot be used: {e}");
                tracing::warn!(file_id, error = %why, "store refused");
                return match self.give_up(file_id, &why).await {
                    Ok(()) | Err(Error::NotFound(_)) => Disposition::Done,
                    Err(e) => {
                        tracing::error!(file_id, error = %e, "cannot mark the file failed");
                        Disposition::Redeliver
                    }
                };
            }
        };
        let source = Arc::new(Routed {
            s3,
            http: self.http.clone(),
        });
        let loader = Loader::new(self.db.clone(), source, self.options.clone())
            .with_receipt(delivery.receipt.map(str::to_string))
            .with_receives(delivery.receives)
            .with_remote_access(Some(self.remote.clone()));
        let started = std::time::Instant::now();
        let outcome = loader.load(file_id, Some(delivery.deadline)).await;
        record_load(&outcome, started.elapsed());
        if let Ok(Outcome::Done { .. } | Outcome::Failed { .. }) = &outcome {
            if let Err(e) = self.settle(file_id, &message.store).await {
                // The file is finished; only its session's summary is behind. Redeliver:
                // the file answers NotLoadable and the session is settled then.
                tracing::error!(file_id, error = %e, "cannot settle the file's import session");
                return Disposition::Redeliver;
            }
        }
        self.disposition(file_id, message, outcome).await
    }

    /// What the queue does with the message of a load that ended with `outcome`.
    async fn disposition(
        &self,
        file_id: &str,
        message: &LoadMessage,
        outcome: Result<Outcome>,
    ) -> Disposition {
        match next(file_id, outcome, chrono::Utc::now()) {
            Next::Dispose(d) => d,
            // A delivery after a crash between the file's end and its session's
            // settling: settle now (idempotent).
            Next::SettleFirst => match self.settle(file_id, &message.store).await {
                Ok(()) => Disposition::Done,
                Err(_) => Disposition::Redeliver,
            },
        }
    }

    async fn settle(&self, file_id: &str, store: &crate::queue::StoreSpec) -> Result<()> {
        sessions::ended::file_ended(&self.db, &*self.queue, file_id, store).await
    }

    /// Ends a file in `error` from outside a load (the queue gives up on it after
    /// repeated failures) and settles its `$import` session, if any.
    pub async fn give_up(&self, file_id: &str, why: &str) -> Result<()> {
        self.db.fail_loader_file(file_id, None, why).await?;
        self.settle(file_id, &Default::default()).await
    }
}

/// The metrics of one run of a file: its time, and when it ended, its counts.
fn record_load(outcome: &Result<Outcome>, took: std::time::Duration) {
    use crate::metrics::{count, seconds};
    let mut figures = vec![seconds("LoadSeconds", took)];
    match outcome {
        Ok(Outcome::Done { loaded, failed }) => figures.extend([
            count("FilesDone", 1),
            count("ResourcesLoaded", *loaded),
            count("InvalidLines", *failed),
        ]),
        Ok(Outcome::Failed { .. }) => figures.push(count("FilesFailed", 1)),
        Ok(Outcome::Continue { .. }) | Err(_) => {}
        // Nothing was loaded by this run.
        Ok(_) => return,
    }
    crate::metrics::record("load", None, &figures);
}

/// The load worker's state machine, from a load's outcome to what the queue does with
/// its message (pure: unit tested below). `now` dates a busy holder's lease.
fn next(file_id: &str, outcome: Result<Outcome>, now: chrono::DateTime<chrono::Utc>) -> Next {
    let dispose = Next::Dispose;
    match outcome {
        Ok(Outcome::Done { loaded, failed }) => {
            tracing::info!(file_id, loaded, failed, "done");
            dispose(Disposition::Done)
        }
        Ok(Outcome::Failed { message: why }) => {
            tracing::warn!(file_id, error = why, "file failed");
            dispose(Disposition::Done)
        }
        Ok(Outcome::NotLoadable { status }) => {
            tracing::info!(file_id, status = status.as_str(), "nothing to do");
            Next::SettleFirst
        }
        Ok(Outcome::Halted { status }) => {
            // The session was paused or aborted: the state lives in Postgres, and
            // resume queues the file again. Nothing to redeliver.
            tracing::info!(file_id, status = status.as_str(), "stopped by its session");
            dispose(Disposition::Done)
        }
        Ok(Outcome::Continue { line }) => dispose(Disposition::Requeue {
            delay: None,
            why: format!("continue from line {line}"),
        }),
        Ok(Outcome::Busy { until }) => dispose(Disposition::Requeue {
            // Try again just after the holder's lease runs out (a dead holder's file
            // is then ours), at most a minute on (a live holder renews it).
            delay: Some(busy_delay(&until, now)),
            why: "busy: another loader holds the file".into(),
        }),
        Ok(Outcome::Throttled) => dispose(Disposition::Requeue {
            delay: Some(10),
            why: "thread-num reached".into(),
        }),
        Err(Error::NotFound(e)) => {
            tracing::warn!(file_id, error = %e, "the LoaderFile was deleted; dropping the message");
            dispose(Disposition::Done)
        }
        Err(e) => dispose(Disposition::Retry(e)),
    }
}

impl Job for LoadWorker {
    type Message = LoadMessage;
    const WHAT: &'static str = "LoaderFile";
    const OPERATION: &'static str = "load";

    fn id(message: &LoadMessage) -> &str {
        &message.loader_file_id
    }

    async fn run(&self, message: &LoadMessage, delivery: Delivery<'_>) -> Disposition {
        self.load(message, delivery).await
    }

    async fn give_up(&self, message: &LoadMessage, why: &str) -> Result<()> {
        LoadWorker::give_up(self, &message.loader_file_id, why).await
    }
}

/// Seconds to delay a busy file's message: until a second after the holder's lease ends
/// (`until`, as the LoaderFile shows it), between 1 and 60.
fn busy_delay(until: &str, now: chrono::DateTime<chrono::Utc>) -> i32 {
    match chrono::DateTime::parse_from_rfc3339(until) {
        Ok(t) => {
            let left = (t.with_timezone(&chrono::Utc) - now).num_milliseconds();
            ((left.max(0) + 999) / 1000 + 1).clamp(1, 60) as i32
        }
        Err(_) => 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FileStatus;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-24T01:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn of(outcome: Result<Outcome>) -> String {
        format!("{:?}", next("f", outcome, now()))
    }

    #[test]
    fn every_outcome_has_its_disposition() {
        let done = "Dispose(Done)";
        assert_eq!(
            of(Ok(Outcome::Done {
                loaded: 3,
                failed: 1
            })),
            done
        );
        assert_eq!(
            of(Ok(Outcome::Failed {
                message: "corrupt gzip".into()
            })),
            done
        );
        assert_eq!(
            of(Ok(Outcome::Halted {
                status: FileStatus::Paused
            })),
            done
        );
        assert_eq!(
            of(Err(Error::NotFound("LoaderFile f".into()))),
            done,
            "deleted file"
        );
        assert_eq!(
            of(Ok(Outcome::NotLoadable {
                status: FileStatus::Done
            })),
            "SettleFirst",
            "a redelivery after the end settles the session"
        );
        assert_eq!(
            of(Ok(Outcome::Continue { line: 40_000 })),
            r#"Dispose(Requeue { delay: None, why: "continue from line 40000" })"#
        );
        assert_eq!(
            of(Ok(Outcome::Busy {
                until: "2026-11-24T01:00:10Z".into()
            })),
            r#"Dispose(Requeue { delay: Some(11), why: "busy: another loader holds the file" })"#
        );
        assert_eq!(
            of(Ok(Outcome::Throttled)),
            r#"Dispose(Requeue { delay: Some(10), why: "thread-num reached" })"#
        );
        assert!(
            of(Err(Error::Unavailable("database away".into()))).starts_with("Dispose(Retry("),
            "could not tell: SQS redelivers, and gives up on the last receive"
        );
    }

    #[test]
    fn a_busy_file_is_tried_again_just_after_its_lease() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T01:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(busy_delay("2026-11-24T01:00:10.2+00:00", now), 12);
        assert_eq!(busy_delay("2026-11-24T00:59:00+00:00", now), 1);
        assert_eq!(busy_delay("2026-11-24T01:30:00+00:00", now), 60);
        assert_eq!(busy_delay("not a time", now), 60);
    }
}
