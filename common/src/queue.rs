//! Queues: where work waits for a worker (SQS in AWS and locally, memory in unit tests).
//!
//! [`MessageQueue`] is the port: it sends message bodies. The load queue carries
//! [`LoadMessage`]s, one file each, with what the loader needs to reach the object
//! (bucket, key, etag, and the store's endpoint and credentials when the caller gave
//! them), so credentials never touch Postgres; the queue is encrypted at rest.

use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease::{FirstBeat, Heartbeat};
use crate::model::loader_file::StoreRef;
use crate::model::LoaderFile;
use crate::sources::s3::{S3Options, StaticCredentials};

/// How to reach the store holding the file (all optional: default = the function's role).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSpec")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field(
                "credentials",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl From<&StoreRef> for StoreSpec {
    /// How to reach a bucket as a file or a job stores it (credentials are never stored).
    fn from(store: &StoreRef) -> Self {
        StoreSpec {
            endpoint_url: store.endpoint_url.clone(),
            region: store.region.clone(),
            ..Default::default()
        }
    }
}

impl StoreSpec {
    /// True when the function's own S3 client will do.
    pub fn is_default(&self) -> bool {
        self == &StoreSpec::default()
    }

    /// How to reach this store, checked against `policy` at every connection.
    pub fn s3_options(&self, policy: &crate::sources::http::UrlPolicy) -> S3Options {
        S3Options {
            policy: policy.clone(),
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            credentials: match (&self.access_key_id, &self.secret_access_key) {
                (Some(id), Some(secret)) => Some(StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                }),
                _ => None,
            },
            force_path_style: self.endpoint_url.as_ref().map(|_| true),
        }
    }
}

/// The body of a load-queue message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadMessage {
    pub loader_file_id: String,
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "StoreSpec::is_default")]
    pub store: StoreSpec,
}

impl LoadMessage {
    /// The message that loads `file`, reading it from `store`.
    pub fn for_file(file: &LoaderFile, store: StoreSpec) -> Self {
        LoadMessage {
            loader_file_id: file.id.clone(),
            bucket: file.bucket.clone(),
            key: file.file.clone(),
            etag: file.etag.clone(),
            store,
        }
    }
}

/// Where messages go.
pub trait MessageQueue: Send + Sync {
    /// Sends message bodies, optionally delayed (seconds, at most 900).
    fn send_bodies<'a>(
        &'a self,
        bodies: Vec<String>,
        delay_seconds: Option<i32>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Makes the in-flight message with this receipt handle visible again now, so it is
    /// delivered anew (its worker died). `false` when the handle no longer names an
    /// in-flight message (deleted, or already delivered again).
    fn make_visible<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.hold(receipt, 0)
    }

    /// Keeps the in-flight message with this receipt handle invisible for `seconds` from
    /// now (0: visible now). `false` when the handle no longer names an in-flight message.
    fn hold<'a>(&'a self, receipt: &'a str, seconds: i32) -> BoxFuture<'a, Result<bool>>;
}

/// Keeps the message a worker handles invisible for one lease (+1 s) from now, renewed
/// every heartbeat while the worker lives (dropping it stops the renewals). A worker that
/// dies anywhere, before its claim on the work included, lets its message come back
/// within about a lease, whatever the queue's visibility timeout; the sweep covers the
/// rest. The extra second: the message comes back once the work's lease (renewed at the
/// same beat) has run out too, so the next worker can claim it.
pub struct Holding(#[allow(dead_code)] Heartbeat); // renews until dropped

/// How long a [`Holding`] keeps a message invisible: one lease and a second.
pub fn hold_seconds(lease: std::time::Duration) -> i32 {
    (lease.as_secs_f64().ceil() as i32 + 1).clamp(1, 43_200)
}

impl Holding {
    pub fn start(
        queue: std::sync::Arc<dyn MessageQueue>,
        receipt: String,
        lease: std::time::Duration,
        every: std::time::Duration,
    ) -> Self {
        let seconds = hold_seconds(lease);
        // Stops once the handle names nothing in flight (deleted, or delivered again).
        // The receipt handle is the id in logs' eyes only as a prefix: it is a bearer
        // capability on the message.
        let id: String = receipt.chars().take(12).collect();
        Holding(Heartbeat::start(
            "message",
            id,
            every,
            FirstBeat::Now,
            true,
            move || {
                let (queue, receipt) = (queue.clone(), receipt.clone());
                Box::pin(async move { queue.hold(&receipt, seconds).await })
            },
        ))
    }
}

impl Holding {
    /// Holds every message of a batch from the start, the ones still waiting their
    /// turn included; `receipts` are their receipt handles.
    pub fn all(
        queue: &std::sync::Arc<dyn MessageQueue>,
        receipts: impl IntoIterator<Item = String>,
        lease: std::time::Duration,
        every: std::time::Duration,
    ) -> Vec<Holding> {
        receipts
            .into_iter()
            .map(|r| Holding::start(queue.clone(), r, lease, every))
            .collect()
    }
}

/// Sends `messages` as JSON bodies.
pub async fn send<T: Serialize>(
    queue: &dyn MessageQueue,
    messages: &[T],
    delay_seconds: Option<i32>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let bodies = messages
        .iter()
        .map(serde_json::to_string)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Internal(format!("cannot encode a queue message: {e}")))?;
    queue.send_bodies(bodies, delay_seconds).await
}

/// An SQS queue.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// The queue at `url`, with the function's own AWS configuration (no network call;
    /// see `crate::sources::aws`: a refused `AWS_ENDPOINT_URL` stops here).
    pub async fn connect(url: &str) -> crate::error::Result<Self> {
        let conf = crate::sources::aws::own_config()
            .await
            .map_err(|e| crate::error::Error::Internal(format!("SQS client: {e}")))?;
        Ok(SqsQueue::new(aws_sdk_sqs::Client::new(&conf), url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }
}

impl MessageQueue for SqsQueue {
    fn hold<'a>(&'a self, receipt: &'a str, seconds: i32) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self
                .client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .visibility_timeout(seconds.clamp(0, 43_200))
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => {
                    use aws_sdk_sqs::error::ProvideErrorMetadata;
                    let code = e.code().unwrap_or("").to_string();
                    // The handle is stale: the message was deleted or received again.
                    if code.contains("ReceiptHandleIsInvalid")
                        || code.contains("MessageNotInflight")
                        || code.contains("InvalidParameterValue")
                    {
                        Ok(false)
                    } else {
                        Err(Error::Internal(format!(
                            "cannot change a message's visibility: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )))
                    }
                }
            }
        })
    }

    fn send_bodies<'a>(
        &'a self,
        bodies: Vec<String>,
        delay_seconds: Option<i32>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Batches of 10 (SQS's maximum), 8 in flight at once: a planning that queues
            // half a million files is bound by round trips, not by SQS.
            let mut requests = Vec::new();
            for group in bodies.chunks(10) {
                let mut req = self.client.send_message_batch().queue_url(&self.url);
                for (i, body) in group.iter().enumerate() {
                    let mut entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body);
                    if let Some(d) = delay_seconds {
                        entry = entry.delay_seconds(d.clamp(0, 900));
                    }
                    req = req.entries(entry.build().map_err(|e| Error::Internal(e.to_string()))?);
                }
                requests.push(req);
            }
            let mut requests = requests.into_iter();
            loop {
                // Each request is a task of its own: the SDK's call is polled from the
                // scheduler, not at the bottom of whatever deep worker future sends.
                let wave: Vec<_> = requests
                    .by_ref()
                    .take(8)
                    .map(|r| tokio::spawn(r.send()))
                    .collect();
                if wave.is_empty() {
                    return Ok(());
                }
                let mut outs = Vec::with_capacity(wave.len());
                for sent in futures::future::join_all(wave).await {
                    let sent = sent.map_err(|e| {
                        Error::Internal(format!("cannot queue messages: the send stopped: {e}"))
                    })?;
                    outs.push(sent.map_err(|e| {
                        Error::Internal(format!(
                            "cannot queue messages: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        ))
                    })?);
                }
                if let Some(failed) = outs.iter().find_map(|o| o.failed.first()) {
                    return Err(Error::Internal(format!(
                        "cannot queue messages: {} {}",
                        failed.code,
                        failed.message.as_deref().unwrap_or("")
                    )));
                }
            }
        })
    }
}

/// A queue in memory: bodies are kept in order (unit tests of the domain).
#[derive(Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<(String, Option<i32>)>>,
    /// Receipt handles of in-flight messages; `make_visible` moves them to `visible`.
    pub in_flight: Mutex<Vec<String>>,
    pub visible: Mutex<Vec<String>>,
    /// Fail every send with this message (a queue that is down).
    pub failing: Option<String>,
}

impl MemoryQueue {
    /// Every body sent so far with its delay, oldest first, removing them.
    pub fn take(&self) -> Vec<(String, Option<i32>)> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl MessageQueue for MemoryQueue {
    fn hold<'a>(&'a self, receipt: &'a str, seconds: i32) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut in_flight = self.in_flight.lock().unwrap();
            match in_flight.iter().position(|r| r == receipt) {
                Some(_) if seconds > 0 => Ok(true),
                Some(at) => {
                    in_flight.remove(at);
                    self.visible.lock().unwrap().push(receipt.to_string());
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn send_bodies<'a>(
        &'a self,
        bodies: Vec<String>,
        delay_seconds: Option<i32>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(why) = &self.failing {
                return Err(Error::Internal(format!("cannot queue messages: {why}")));
            }
            let mut sent = self.sent.lock().unwrap();
            sent.extend(bodies.into_iter().map(|b| (b, delay_seconds)));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_never_print_credentials() {
        let spec = StoreSpec {
            endpoint_url: Some("http://127.0.0.1:4566".into()),
            region: None,
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("very-secret".into()),
        };
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
        assert!(spec.s3_options(&Default::default()).force_path_style == Some(true));
        assert!(StoreSpec::default().is_default());
    }

    #[tokio::test]
    async fn messages_go_out_as_json_in_order() {
        let q = MemoryQueue::default();
        let m = LoadMessage {
            loader_file_id: "f".into(),
            bucket: "b".into(),
            key: "k".into(),
            etag: None,
            store: StoreSpec::default(),
        };
        send(&q, &[m.clone(), m.clone()], Some(5)).await.unwrap();
        let sent = q.take();
        assert_eq!(sent.len(), 2);
        assert_eq!(serde_json::from_str::<LoadMessage>(&sent[0].0).unwrap(), m);
        assert_eq!(sent[0].1, Some(5));
        assert!(
            !sent[0].0.contains("store"),
            "a default store is left out: {}",
            sent[0].0
        );
        let down = MemoryQueue {
            failing: Some("down".into()),
            ..Default::default()
        };
        assert!(send(&down, &[m], None).await.is_err());
    }
}

/// A message looked at in a dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peeked {
    pub id: String,
    pub body: String,
    /// How many times it was received before (it moved here after the last).
    pub receives: u32,
    /// When it was first sent, RFC 3339.
    pub sent: Option<String>,
}

/// A dead-letter queue: messages the workers gave up on, to look at and to retry.
pub trait DeadLetterQueue: Send + Sync {
    /// Up to `max` messages, without taking them (they stay in the queue).
    fn peek<'a>(&'a self, max: usize) -> BoxFuture<'a, Result<Vec<Peeked>>>;
    /// Removes message `id` and returns its body (`None`: not found now).
    fn take<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
}

impl SqsQueue {
    async fn receive_all(
        &self,
        visibility: i32,
        max: usize,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>> {
        let mut seen: Vec<aws_sdk_sqs::types::Message> = Vec::new();
        // A few receives: SQS answers at most 10 at a time, from a sample of its hosts.
        for _ in 0..(max / 10 + 3) {
            let got = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(visibility)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| {
                    Error::Internal(format!(
                        "cannot read the dead-letter queue: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ))
                })?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                if !seen.iter().any(|s| s.message_id == m.message_id) {
                    seen.push(m);
                }
            }
            if seen.len() >= max {
                break;
            }
        }
        seen.truncate(max);
        Ok(seen)
    }
}

impl DeadLetterQueue for SqsQueue {
    fn peek<'a>(&'a self, max: usize) -> BoxFuture<'a, Result<Vec<Peeked>>> {
        Box::pin(async move {
            use aws_sdk_sqs::types::MessageSystemAttributeName as A;
            let messages = self.receive_all(0, max).await?;
            Ok(messages
                .into_iter()
                .map(|m| {
                    let attr = |a: A| m.attributes.as_ref().and_then(|x| x.get(&a)).cloned();
                    Peeked {
                        id: m.message_id.clone().unwrap_or_default(),
                        body: m.body.clone().unwrap_or_default(),
                        receives: attr(A::ApproximateReceiveCount)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        sent: attr(A::SentTimestamp)
                            .and_then(|v| v.parse::<i64>().ok())
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .map(|t| t.to_rfc3339()),
                    }
                })
                .collect())
        })
    }

    fn take<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            // Hidden for a minute while it is moved; others become visible again.
            for m in self.receive_all(60, 1000).await? {
                let handle = m.receipt_handle.clone().unwrap_or_default();
                if m.message_id.as_deref() == Some(id) {
                    self.client
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .map_err(|e| {
                            Error::Internal(format!(
                                "cannot remove the message: {}",
                                aws_sdk_sqs::error::DisplayErrorContext(e)
                            ))
                        })?;
                    return Ok(m.body);
                }
                let _ = self
                    .client
                    .change_message_visibility()
                    .queue_url(&self.url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
            Ok(None)
        })
    }
}
