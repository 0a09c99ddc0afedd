//! siphon-sweep: scheduled by EventBridge; re-delivers work whose worker died.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use siphon::storage::Db;
use siphon_sweep::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Arc::new(siphon::boot::config(Config::from_env)?);
    let sweeper = Arc::new(siphon_sweep::boot(&config, Db::new(config.db.clone())).await?);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let (config, sweeper) = (config.clone(), sweeper.clone());
        async move { Ok::<Value, Error>(siphon_sweep::run(&config, &sweeper).await) }
    }))
    .await
}
