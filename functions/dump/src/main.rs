//! siphon-dump: the response-streaming Lambda behind a function URL.

#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_http::{service_fn, Error, Request};
use siphon::storage::Db;
use siphon_dump::{App, Config};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = siphon::boot::config(Config::from_env)?;
    let app = Arc::new(App::new(&config, Db::new(config.db.clone())));
    lambda_http::run_with_streaming_response(service_fn(move |request: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(siphon_dump::handle(&app, request).await) }
    }))
    .await
}
