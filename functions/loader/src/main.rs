//! siphon-loader: the SQS-triggered Lambda that loads one file per message.

#![recursion_limit = "256"]

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use siphon::ingestion::queue::SqsQueue;
use siphon::loading::LoadOptions;
use siphon::storage::Db;
use siphon_loader::Worker;

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    let s3 = siphon::sources::s3::client(&Default::default()).await;
    let worker = Arc::new(Worker::new(
        Db::from_env()?,
        Arc::new(SqsQueue::from_env().await?),
        s3,
        LoadOptions::default(),
    ));
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
