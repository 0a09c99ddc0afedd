//! siphon-sweep: scheduled by EventBridge; re-delivers work whose worker died.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::config::Env;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_sweep::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::from_process();
    siphon::telemetry::init(&env);
    siphon::memory::tune();
    let config = Arc::new(
        Config::from_env(&env).inspect_err(|e| tracing::error!(error = %e, "cold start failed"))?,
    );
    let db = Db::new(config.db.clone());
    let queue = Arc::new(SqsQueue::connect(&config.load_queue_url).await?);
    let export_queue: Option<Arc<dyn siphon::queue::MessageQueue>> = match &config.export_queue_url
    {
        Some(url) => Some(Arc::new(SqsQueue::connect(url).await?)),
        None => None,
    };
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let (config, db, queue, export_queue) = (
            config.clone(),
            db.clone(),
            queue.clone(),
            export_queue.clone(),
        );
        async move { Ok::<Value, Error>(siphon_sweep::run(&config, db, queue, export_queue).await) }
    }))
    .await
}
