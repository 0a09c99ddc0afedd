//! siphon-api: the HTTP API Lambda (API Gateway HTTP API, payload v2).

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use siphon::ingestion::queue::SqsQueue;
use siphon::storage::Db;
use siphon_api::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    let s3 = siphon::sources::s3::client(&Default::default()).await;
    let app = Arc::new(App::new(
        Db::from_env()?,
        Arc::new(SqsQueue::from_env().await?),
        s3,
    ));
    lambda_http::run(service_fn(move |request: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(siphon_api::handle(&app, request).await) }
    }))
    .await
}
