//! siphon-s3-ingest: S3 `ObjectCreated` events (direct or through SQS) queue each new
//! `*.ndjson.gz` for loading. Not implemented yet (issue "Ingestion"): it fails clearly.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

async fn handler(_event: LambdaEvent<Value>) -> Result<Value, Error> {
    Err("siphon-s3-ingest is not implemented yet".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    lambda_runtime::run(service_fn(handler)).await
}
