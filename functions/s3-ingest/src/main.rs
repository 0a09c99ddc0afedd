//! siphon-s3-ingest: S3 `ObjectCreated` (direct or via SQS) -> LoaderFile + load queue.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::config::Env;
use siphon::ingestion::events::ManifestListener;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_s3_ingest::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    siphon::telemetry::init(&env);
    siphon::memory::tune();
    let config =
        Config::from_env(&env).inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?;
    let db = Db::new(config.db.clone());
    let queue = Arc::new(SqsQueue::connect(&config.load_queue_url).await?);
    let auto = match &config.export_queue_url {
        Some(url) => Some(Arc::new(siphon_s3_ingest::auto_import(
            &config,
            &db,
            Arc::new(SqsQueue::connect(url).await?),
            siphon::sources::s3::client(&config.s3).await?,
        ))),
        None => None,
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (db, queue, auto) = (db.clone(), queue.clone(), auto.clone());
        async move {
            let listener = auto.as_deref().map(|a| a as &dyn ManifestListener);
            Ok::<Value, Error>(
                siphon_s3_ingest::handle(&db, queue.as_ref(), listener, event.payload).await?,
            )
        }
    }))
    .await
}
