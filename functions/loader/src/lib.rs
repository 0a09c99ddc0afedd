//! siphon-loader: one SQS message = one file. Each record is loaded until done or the
//! deadline; the answer uses partial batch failures so one bad file never re-delivers
//! its neighbours.
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
use siphon::ingestion::queue::{LoadMessage, LoadQueue};
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::sources::http::{HttpSource, UrlPolicy};
use siphon::sources::s3::S3Source;
use siphon::sources::{Routed, Source};
use siphon::storage::Db;
use tokio::sync::Mutex;

/// Shared across invocations of one sandbox.
pub struct Worker {
    pub db: Db,
    pub queue: Arc<dyn LoadQueue>,
    pub options: LoadOptions,
    /// Receives after which a failing message is given up (the queue's maxReceiveCount).
    pub max_receives: u32,
    default_source: Arc<S3Source>,
    sources: Mutex<HashMap<String, Arc<S3Source>>>,
    /// Reads `https://` inputs of `$import` sessions (URL guard from `SIPHON_URL_ALLOWLIST`).
    pub http: Arc<dyn Source>,
}

impl Worker {
    pub fn new(
        db: Db,
        queue: Arc<dyn LoadQueue>,
        default_s3: aws_sdk_s3::Client,
        options: LoadOptions,
    ) -> Self {
        let max_receives = std::env::var("SIPHON_MAX_RECEIVES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        Worker {
            db,
            queue,
            options,
            max_receives,
            default_source: Arc::new(S3Source::new(default_s3)),
            sources: Mutex::new(HashMap::new()),
            http: Arc::new(HttpSource::new(UrlPolicy::from_env())),
        }
    }

    async fn source_for(&self, message: &LoadMessage) -> Arc<S3Source> {
        if message.store.is_default() {
            return self.default_source.clone();
        }
        // One client per distinct store, kept for warm invocations (keyed without secrets
        // in clear: the key id and endpoint are enough to tell stores apart).
        let key = format!(
            "{:?}|{:?}|{:?}",
            message.store.endpoint_url, message.store.region, message.store.access_key_id
        );
        let mut cache = self.sources.lock().await;
        if let Some(s) = cache.get(&key) {
            return s.clone();
        }
        let s = Arc::new(S3Source::new(
            siphon::sources::s3::client(&message.store.s3_options()).await,
        ));
        cache.insert(key, s.clone());
        s
    }

    /// Handles a batch; `deadline_ms` is the invocation deadline (ms since the epoch).
    pub async fn handle(&self, records: Vec<SqsMessage>, deadline_ms: u64) -> SqsBatchResponse {
        let deadline = instant_from_epoch_ms(deadline_ms);
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
        let source = Arc::new(Routed {
            s3: self.source_for(&message).await,
            http: self.http.clone(),
        });
        let loader = Loader::new(self.db.clone(), source, self.options.clone());
        match loader.load(&file_id, Some(deadline)).await {
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
                true
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
            Ok(Outcome::Busy { .. }) => {
                self.requeue(&message, Some(60), "busy: another loader holds the file")
                    .await
            }
            Ok(Outcome::Throttled) => self.requeue(&message, Some(10), "thread-num reached").await,
            Err(e) if e.http_status() == 404 => {
                tracing::warn!(file_id, error = %e, "the LoaderFile was deleted; dropping the message");
                true
            }
            Err(e) => {
                tracing::error!(file_id, receives, error = %e, "load failed; the message will be redelivered");
                if receives >= self.max_receives {
                    let why = format!("gave up after {receives} attempts: {e}");
                    if let Err(e) = siphon::loading::give_up(&self.db, &file_id, &why).await {
                        tracing::error!(file_id, error = %e, "cannot mark the file failed");
                    }
                }
                false
            }
        }
    }

    async fn requeue(&self, message: &LoadMessage, delay: Option<i32>, why: &str) -> bool {
        match self.queue.send(std::slice::from_ref(message), delay).await {
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

fn instant_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
