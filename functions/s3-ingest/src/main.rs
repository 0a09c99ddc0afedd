//! siphon-s3-ingest: S3 `ObjectCreated` (direct or via SQS) -> LoaderFile + load queue.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::storage::Db;
use siphon_s3_ingest::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = siphon::boot::config(Config::from_env)?;
    let ingest = Arc::new(siphon_s3_ingest::boot(&config, Db::new(config.db.clone())).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let ingest = ingest.clone();
        async move { Ok::<Value, Error>(ingest.handle(event.payload).await?) }
    }))
    .await
}
