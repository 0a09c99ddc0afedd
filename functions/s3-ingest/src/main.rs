//! siphon-s3-ingest: S3 `ObjectCreated` (direct or via SQS) -> LoaderFile + load queue.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::config::Env;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_s3_ingest::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    siphon::telemetry::init(&env);
    let config =
        Config::from_env(&env).inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let db = Db::new(config.db.clone());
    let queue = Arc::new(SqsQueue::connect(&config.load_queue_url).await);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (db, queue) = (db.clone(), queue.clone());
        async move {
            Ok::<Value, Error>(siphon_s3_ingest::handle(&db, queue.as_ref(), event.payload).await?)
        }
    }))
    .await
}
