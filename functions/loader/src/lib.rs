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

/// Everything the loader needs, from its configuration: the function's S3 client, the
/// load queue, the worker. What `main` and `make serve` both call; no network call.
pub async fn boot(config: &Config, db: Db) -> siphon::Result<LoadWorker> {
    let s3 = siphon::sources::s3::client(&config.s3).await?;
    let queue = siphon::boot::queue(&config.load_queue_url).await?;
    Ok(worker(config, db, queue, s3, config.load_options()))
}

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
        siphon::sources::s3::S3Source::new(s3),
        config.url_policy.clone(),
        options,
        config.max_receives,
    )
    .with_remote_credentials(Arc::new(siphon::auth::remote::RemoteCredentials::new(
        config.client_key.clone(),
    )))
}
