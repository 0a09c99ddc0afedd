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
    .with_own_client(s3)
    .with_policy(config.s3.policy.clone())
}
