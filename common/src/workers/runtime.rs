//! The one skeleton every SQS-triggered worker runs on: hold every message of the batch
//! from the start, read each, hand it to the [`Job`], and turn what the job says into
//! what happens to the message, with partial batch failures so that one bad message
//! never re-delivers its neighbours.
//!
//! | the job says | what happens to the message |
//! |---|---|
//! | [`Disposition::Done`] | deleted (success) |
//! | [`Disposition::Requeue`] | the message is sent again (with a delay, if any), then this one deleted; if the send fails, redelivered |
//! | [`Disposition::Retry`] | batch item failure: SQS redelivers; on the queue's last receive the job gives the work up, saying why |
//! | [`Disposition::Redeliver`] | batch item failure, nothing given up (the work is finished; only its bookkeeping is behind) |
//! | unreadable message | batch item failure (it ends in the dead-letter queue) |

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::queue::{self, Holding, MessageQueue};

/// What became of one message's work.
#[derive(Debug)]
pub enum Disposition {
    /// Finished with the message: done, failed for good, or nothing to do.
    Done,
    /// Queue the message again after `delay` seconds (none: at once) and delete this one:
    /// the rest of a long piece of work, or work another worker holds.
    Requeue { delay: Option<i32>, why: String },
    /// Could not tell (the database or a store is away): SQS redelivers the message;
    /// after the queue's last receive the job gives the work up with this error.
    Retry(Error),
    /// Redeliver without giving anything up: the work ended, its bookkeeping did not.
    Redeliver,
}

/// What follows a run's outcome: a disposition, or first the settling of what the work
/// belongs to (a redelivery after a worker died between the work's end and that step),
/// then [`Disposition::Done`] (or [`Disposition::Redeliver`] when settling fails).
#[derive(Debug)]
pub enum Next {
    Dispose(Disposition),
    SettleFirst,
}

/// One delivery of a message.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The SQS receipt handle (kept with the work's lease, for the sweep).
    pub receipt: Option<&'a str>,
    /// How many times the message has been received (`ApproximateReceiveCount`).
    pub receives: u32,
    /// When the invocation ends.
    pub deadline: Instant,
}

/// A kind of leased work a queue carries.
pub trait Job: Send + Sync {
    /// The message body.
    type Message: Serialize + DeserializeOwned + Send + Sync;
    /// What logs call one piece of the work (`LoaderFile`, `export task`).
    const WHAT: &'static str;
    /// The `Operation` its metrics are recorded under (`load`, `export`).
    const OPERATION: &'static str;

    /// The id of the work a message names, for logs.
    fn id(message: &Self::Message) -> &str;

    /// Runs the work of one message until it ends or the deadline.
    fn run(
        &self,
        message: &Self::Message,
        delivery: Delivery<'_>,
    ) -> impl Future<Output = Disposition> + Send;

    /// Ends the work in error from outside a run (the queue gives up on its message).
    fn give_up(
        &self,
        message: &Self::Message,
        why: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// What a worker's queue is and how its leases beat.
#[derive(Clone)]
pub struct Runtime {
    /// The queue the messages came from (re-queued work goes back here).
    pub queue: Arc<dyn MessageQueue>,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often leases (and the messages' visibility) are renewed.
    pub heartbeat: Duration,
    /// Receives after which failing work is given up (the queue's `maxReceiveCount`).
    pub max_receives: u32,
}

impl Runtime {
    pub fn new(
        queue: Arc<dyn MessageQueue>,
        lease: Duration,
        heartbeat: Duration,
        max_receives: u32,
    ) -> Self {
        Runtime {
            queue,
            lease,
            heartbeat,
            max_receives,
        }
    }

    /// Handles a batch for `job`; `deadline_ms` is the invocation's deadline (ms since
    /// the epoch).
    pub async fn handle<J: Job>(
        &self,
        job: &J,
        records: Vec<SqsMessage>,
        deadline_ms: u64,
    ) -> SqsBatchResponse {
        let deadline = instant_from_epoch_ms(deadline_ms);
        // Every message of the batch is held from the start, the ones still waiting
        // their turn included (see [`Holding`]).
        let _holding = Holding::all(
            &self.queue,
            records.iter().filter_map(|r| r.receipt_handle.clone()),
            self.lease,
            self.heartbeat,
        );
        let mut response = SqsBatchResponse::default();
        for record in records {
            if !self.handle_one(job, &record, deadline).await {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// False when the message must be redelivered.
    async fn handle_one<J: Job>(&self, job: &J, record: &SqsMessage, deadline: Instant) -> bool {
        let receives = receives(record);
        let Some(message) = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<J::Message>(b).ok())
        else {
            tracing::error!(
                message_id = record.message_id.as_deref(),
                what = J::WHAT,
                "unreadable message; it will end in the dead-letter queue"
            );
            return false;
        };
        let id = J::id(&message);
        if let Some(age) = message_age(record, SystemTime::now()) {
            crate::metrics::record(
                J::OPERATION,
                None,
                &[crate::metrics::seconds("QueueMessageAge", age)],
            );
        }
        let delivery = Delivery {
            receipt: record.receipt_handle.as_deref(),
            receives,
            deadline,
        };
        // The job's future is large (a whole load or export task): on the heap, not on
        // the stack of whatever thread polls the batch.
        match Box::pin(job.run(&message, delivery)).await {
            Disposition::Done => true,
            Disposition::Redeliver => false,
            Disposition::Requeue { delay, why } => {
                match queue::send(&*self.queue, std::slice::from_ref(&message), delay).await {
                    Ok(()) => {
                        tracing::info!(what = J::WHAT, id, reason = why, "re-queued");
                        true
                    }
                    Err(e) => {
                        tracing::error!(what = J::WHAT, id, error = %e, "cannot re-queue; leaving the message for redelivery");
                        false
                    }
                }
            }
            Disposition::Retry(e) => {
                tracing::error!(what = J::WHAT, id, receives, error = %e, "failed; the message will be redelivered");
                if receives >= self.max_receives {
                    crate::metrics::record(
                        J::OPERATION,
                        None,
                        &[crate::metrics::count("GaveUp", 1)],
                    );
                    let why = format!("gave up after {receives} attempts: {e}");
                    if let Err(e) = job.give_up(&message, &why).await {
                        tracing::error!(what = J::WHAT, id, error = %e, "cannot mark it failed");
                    }
                }
                false
            }
        }
    }
}

/// `ApproximateReceiveCount` of a record (1 when absent).
fn receives(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// How long ago the message was first sent (`SentTimestamp`, ms since the epoch), when
/// the record says.
fn message_age(record: &SqsMessage, now: SystemTime) -> Option<Duration> {
    let sent: u64 = record.attributes.get("SentTimestamp")?.parse().ok()?;
    now.duration_since(UNIX_EPOCH + Duration::from_millis(sent))
        .ok()
}

/// The instant of a deadline given in ms since the epoch.
pub fn instant_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MemoryQueue;
    use std::sync::Mutex;

    #[derive(Serialize, serde::Deserialize)]
    struct Msg {
        id: String,
    }

    /// Answers each message with the disposition its id names; records give-ups.
    #[derive(Default)]
    struct Scripted {
        given_up: Mutex<Vec<(String, String)>>,
    }

    impl Job for Scripted {
        type Message = Msg;
        const WHAT: &'static str = "test";
        const OPERATION: &'static str = "test";

        fn id(message: &Msg) -> &str {
            &message.id
        }

        async fn run(&self, message: &Msg, _: Delivery<'_>) -> Disposition {
            match message.id.as_str() {
                "done" => Disposition::Done,
                "again" => Disposition::Requeue {
                    delay: Some(5),
                    why: "more to do".into(),
                },
                "redeliver" => Disposition::Redeliver,
                _ => Disposition::Retry(Error::Unavailable("database away".into())),
            }
        }

        async fn give_up(&self, message: &Msg, why: &str) -> Result<()> {
            let mut g = self.given_up.lock().unwrap();
            g.push((message.id.clone(), why.to_string()));
            Ok(())
        }
    }

    fn record(n: u32, body: &str, receives: u32) -> SqsMessage {
        let mut r = SqsMessage::default();
        r.message_id = Some(format!("m{n}"));
        r.body = Some(body.to_string());
        r.attributes
            .insert("ApproximateReceiveCount".into(), receives.to_string());
        r
    }

    #[tokio::test]
    async fn each_disposition_decides_its_message_alone() {
        let queue = Arc::new(MemoryQueue::default());
        let runtime = Runtime {
            queue: queue.clone(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            max_receives: 3,
        };
        let job = Scripted::default();
        let records = vec![
            record(1, r#"{"id":"done"}"#, 1),
            record(2, r#"{"id":"again"}"#, 1),
            record(3, r#"{"id":"redeliver"}"#, 3),
            record(4, r#"{"id":"fail"}"#, 2),
            record(5, r#"{"id":"fail"}"#, 3),
            record(6, "not json", 1),
        ];
        let far = (SystemTime::now() + Duration::from_secs(60))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let response = runtime.handle(&job, records, far).await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m3", "m4", "m5", "m6"]);
        let sent = queue.take();
        assert_eq!(sent.len(), 1, "only the requeued message is sent again");
        assert_eq!(sent[0].0, r#"{"id":"again"}"#);
        assert_eq!(sent[0].1, Some(5));
        let given_up = job.given_up.lock().unwrap();
        assert_eq!(given_up.len(), 1, "given up on the last receive only");
        assert_eq!(given_up[0].0, "fail");
        assert!(
            given_up[0].1.starts_with("gave up after 3 attempts: "),
            "{}",
            given_up[0].1
        );
    }
}
