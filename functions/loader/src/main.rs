//! siphon-loader: the SQS-triggered Lambda that loads one file per message.

#![recursion_limit = "256"]

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use siphon::storage::Db;
use siphon_loader::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = siphon::boot::config(Config::from_env)?;
    let worker = Arc::new(siphon_loader::boot(&config, Db::new(config.db.clone())).await?);
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
