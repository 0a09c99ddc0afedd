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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::loading::{LoadOptions, Loader, Outcome};
use crate::queue::{self, Holding, LoadMessage, MessageQueue};
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
        LoadWorker {
            db,
            queue,
            options,
            max_receives,
            default_source: Arc::new(default_s3),
            sources: Mutex::new(HashMap::new()),
            http: Arc::new(HttpSource::new(policy.clone())),
            policy,
        }
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
        let deadline = instant_from_epoch_ms(deadline_ms);
        // Every message of the batch is held from the start, the ones still waiting
        // their turn included (see [`Holding`]).
        let _holding = Holding::all(
            &self.queue,
            records.iter().filter_map(|r| r.receipt_handle.clone()),
            self.options.lease,
            self.options.heartbeat,
        );
        let mut response = SqsBatchResponse::default();
        for record in records {
            let id = record.message_id.clone().unwrap_or_default();
            if !self.handle_one(&record, deadline).await {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Returns false when the message must be redelivered.
    async fn handle_one(&self, record: &SqsMessage, deadline: Instant) -> bool {
        let message_id = record.message_id.as_deref().unwrap_or("");
        let receives: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let message: LoadMessage = match record.body.as_deref().map(serde_json::from_str) {
            Some(Ok(m)) => m,
            _ => {
                tracing::error!(
                    message_id,
                    "unreadable load message; it will end in the dead-letter queue"
                );
                return false;
            }
        };
        let file_id = message.loader_file_id.clone();
        let s3 = match self.source_for(&message).await {
            Ok(s3) => s3,
            Err(e) => {
                // A store the guard refuses will not be allowed on a retry: the file ends.
                let why = format!("the file's store cannot be used: {e}");
                tracing::warn!(file_id, error = %why, "store refused");
                return match self.give_up(&file_id, &why).await {
                    Ok(()) | Err(Error::NotFound(_)) => true,
                    Err(e) => {
                        tracing::error!(file_id, error = %e, "cannot mark the file failed");
                        false
                    }
                };
            }
        };
        let source = Arc::new(Routed {
            s3,
            http: self.http.clone(),
        });
        let loader = Loader::new(self.db.clone(), source, self.options.clone())
            .with_receipt(record.receipt_handle.clone())
            .with_receives(receives);
        let outcome = loader.load(&file_id, Some(deadline)).await;
        if let Ok(Outcome::Done { .. } | Outcome::Failed { .. }) = &outcome {
            if let Err(e) = self.settle(&file_id, &message.store).await {
                // The file is finished; only its session's summary is behind. Redeliver:
                // the file answers NotLoadable and the session is settled then.
                tracing::error!(file_id, error = %e, "cannot settle the file's import session");
                return false;
            }
        }
        match outcome {
            Ok(Outcome::Done { loaded, failed }) => {
                tracing::info!(file_id, loaded, failed, "done");
                true
            }
            Ok(Outcome::Failed { message: why }) => {
                tracing::warn!(file_id, error = why, "file failed");
                true
            }
            Ok(Outcome::NotLoadable { status }) => {
                tracing::info!(file_id, status = status.as_str(), "nothing to do");
                // A delivery after a crash between the file's end and its session's
                // settling: settle now (idempotent).
                self.settle(&file_id, &message.store).await.is_ok()
            }
            Ok(Outcome::Halted { status }) => {
                // The session was paused or aborted: the state lives in Postgres, and
                // resume queues the file again. Nothing to redeliver.
                tracing::info!(file_id, status = status.as_str(), "stopped by its session");
                true
            }
            Ok(Outcome::Continue { line }) => {
                self.requeue(&message, None, &format!("continue from line {line}"))
                    .await
            }
            Ok(Outcome::Busy { until }) => {
                // Try again just after the holder's lease runs out (a dead holder's file
                // is then ours), at most a minute on (a live holder renews it).
                let delay = busy_delay(&until, chrono::Utc::now());
                self.requeue(&message, Some(delay), "busy: another loader holds the file")
                    .await
            }
            Ok(Outcome::Throttled) => self.requeue(&message, Some(10), "thread-num reached").await,
            Err(Error::NotFound(e)) => {
                tracing::warn!(file_id, error = %e, "the LoaderFile was deleted; dropping the message");
                true
            }
            Err(e) => {
                tracing::error!(file_id, receives, error = %e, "load failed; the message will be redelivered");
                if receives >= self.max_receives {
                    let why = format!("gave up after {receives} attempts: {e}");
                    if let Err(e) = self.give_up(&file_id, &why).await {
                        tracing::error!(file_id, error = %e, "cannot mark the file failed");
                    }
                }
                false
            }
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

    async fn requeue(&self, message: &LoadMessage, delay: Option<i32>, why: &str) -> bool {
        match queue::send(&*self.queue, std::slice::from_ref(message), delay).await {
            Ok(()) => {
                tracing::info!(file_id = message.loader_file_id, reason = why, "re-queued");
                true
            }
            Err(e) => {
                tracing::error!(file_id = message.loader_file_id, error = %e, "cannot re-queue; leaving the message for redelivery");
                false
            }
        }
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

fn instant_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::busy_delay;

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
