//! siphon-loader: the SQS-triggered Lambda that loads one file per message. What a
//! message leads to is `siphon::workers::load`; this crate reads the configuration and
//! hands each event to the worker.

mod config;

use std::sync::Arc;

use siphon::loading::LoadOptions;
use siphon::queue::MessageQueue;
use siphon::storage::Db;
pub use siphon::workers::LoadWorker;

pub use config::Config;

/// The worker a sandbox keeps across invocations.
pub fn worker(
    config: &Config,
    db: Db,
    queue: Arc<dyn MessageQueue>,
    s3: aws_sdk_s3::Client,
    options: LoadOptions,
) -> LoadWorker {
    LoadWorker::new(
        db,
        queue,
        s3,
        config.url_policy.clone(),
        options,
        config.max_receives,
    )
}
