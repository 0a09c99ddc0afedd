//! siphon-api: the HTTP API Lambda (API Gateway HTTP API, payload v2).

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use siphon::storage::Db;
use siphon_api::{App, Config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = siphon::boot::config(Config::from_env)?;
    let app = Arc::new(App::boot(&config, Db::new(config.db.clone())).await?);
    lambda_http::run(service_fn(move |request: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(siphon_api::handle(&app, request).await) }
    }))
    .await
}
