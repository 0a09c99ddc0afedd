//! siphon-export: the SQS-triggered Lambda that runs export tasks (`$export` and
//! dump-to-bucket): table -> S3 multipart uploads, resumable across invocations. What a
//! message leads to is `siphon::workers::export`; this crate reads the configuration.

mod config;

use std::sync::Arc;

use siphon::queue::MessageQueue;
use siphon::sinks::s3::S3Sink;
use siphon::storage::Db;
pub use siphon::workers::ExportWorker;

pub use config::Config;

/// Everything the export worker needs, from its configuration: the function's S3
/// client, the export queue, and the load queue (inventory imports queue their files
/// there) when configured. What `main` and `make serve` both call; no network call.
pub async fn boot(config: &Config, db: Db) -> siphon::Result<ExportWorker> {
    let s3 = siphon::sources::s3::client(&config.s3).await?;
    let queue = siphon::boot::queue(&config.export_queue_url).await?;
    let mut worker = worker(config, db, queue, s3);
    if let Some(load) = siphon::boot::optional_queue(config.load_queue_url.as_deref()).await? {
        worker = worker.with_load_queue(load);
    }
    Ok(worker)
}

/// The worker a sandbox keeps across invocations.
pub fn worker(
    config: &Config,
    db: Db,
    queue: Arc<dyn MessageQueue>,
    s3: aws_sdk_s3::Client,
) -> ExportWorker {
    ExportWorker::new(
        db,
        queue,
        Arc::new(S3Sink::new(s3.clone(), &config.export_bucket)),
        config.task.clone(),
        config.max_receives,
    )
    .with_own_client(siphon::sources::s3::S3Source::new(s3))
    .with_policy(config.s3.policy.clone())
    .with_remote_credentials(Arc::new(siphon::auth::remote::RemoteCredentials::new(
        config.client_key.clone(),
    )))
}
