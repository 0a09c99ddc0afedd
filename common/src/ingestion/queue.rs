//! The load queue: one message = one file. The message carries what the loader needs to
//! reach the object (bucket, key, etag, and the store's endpoint and credentials when the
//! caller gave them), so credentials never touch Postgres; the queue is encrypted at rest.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loading::loader_file::LoaderFile;
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

impl StoreSpec {
    /// True when the function's own S3 client will do.
    pub fn is_default(&self) -> bool {
        self == &StoreSpec::default()
    }

    pub fn s3_options(&self) -> S3Options {
        S3Options {
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

/// Where load messages go (SQS in AWS and locally; anything in tests).
pub trait LoadQueue: Send + Sync {
    /// Sends messages, optionally delayed (seconds, at most 900).
    fn send<'a>(
        &'a self,
        messages: &'a [LoadMessage],
        delay_seconds: Option<i32>,
    ) -> BoxFuture<'a, Result<()>>;
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

    /// From `SIPHON_LOAD_QUEUE_URL` and the default AWS configuration (no network call).
    pub async fn from_env() -> Result<Self> {
        let url = std::env::var("SIPHON_LOAD_QUEUE_URL")
            .map_err(|_| Error::Internal("SIPHON_LOAD_QUEUE_URL is not set".into()))?;
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(SqsQueue::new(aws_sdk_sqs::Client::new(&conf), url))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }
}

impl LoadQueue for SqsQueue {
    fn send<'a>(
        &'a self,
        messages: &'a [LoadMessage],
        delay_seconds: Option<i32>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for group in messages.chunks(10) {
                let mut req = self.client.send_message_batch().queue_url(&self.url);
                for (i, m) in group.iter().enumerate() {
                    let body =
                        serde_json::to_string(m).map_err(|e| Error::Internal(e.to_string()))?;
                    let mut entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body);
                    if let Some(d) = delay_seconds {
                        entry = entry.delay_seconds(d.clamp(0, 900));
                    }
                    req = req.entries(entry.build().map_err(|e| Error::Internal(e.to_string()))?);
                }
                let out = req.send().await.map_err(|e| {
                    Error::Internal(format!(
                        "cannot queue files: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    ))
                })?;
                if let Some(failed) = out.failed.first() {
                    return Err(Error::Internal(format!(
                        "cannot queue files: {} {}",
                        failed.code,
                        failed.message.as_deref().unwrap_or("")
                    )));
                }
            }
            Ok(())
        })
    }
}
