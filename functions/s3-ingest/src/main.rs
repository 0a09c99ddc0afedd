//! siphon-s3-ingest: S3 `ObjectCreated` (direct or via SQS) -> LoaderFile + load queue.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::ingestion::queue::SqsQueue;
use siphon::storage::Db;

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    let db = Db::from_env()?;
    let queue = Arc::new(SqsQueue::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (db, queue) = (db.clone(), queue.clone());
        async move {
            Ok::<Value, Error>(siphon_s3_ingest::handle(&db, queue.as_ref(), event.payload).await?)
        }
    }))
    .await
}
