//! siphon-export: the SQS-triggered Lambda that runs one export task per message.

#![recursion_limit = "256"]

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use siphon::config::Env;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_export::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    siphon::telemetry::init(&env);
    siphon::memory::tune();
    let config =
        Config::from_env(&env).inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let s3 = siphon::sources::s3::client(&config.s3).await?;
    let queue = Arc::new(SqsQueue::connect(&config.export_queue_url).await?);
    let mut worker = siphon_export::worker(&config, Db::new(config.db.clone()), queue, s3);
    if let Some(url) = &config.load_queue_url {
        worker = worker.with_load_queue(Arc::new(SqsQueue::connect(url).await?));
    }
    let worker = Arc::new(worker);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move {
            Ok::<SqsBatchResponse, Error>(
                worker
                    .handle(event.payload.records, event.context.deadline)
                    .await,
            )
        }
    }))
    .await
}
