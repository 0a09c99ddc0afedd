//! siphon-dump: streams `$dump` and `$dump-sql` responses. Not implemented yet (issue
//! "Dumps"): every request answers 501 with a message.

#![recursion_limit = "256"]

use lambda_http::{service_fn, Body, Error, Request, Response};

async fn handler(request: Request) -> Result<Response<Body>, Error> {
    let body = serde_json::json!({"message": format!("not implemented yet: {} {}", request.method(), request.uri().path())});
    Ok(Response::builder()
        .status(501)
        .header("content-type", "application/json")
        .body(body.to_string().into())?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    lambda_http::run(service_fn(handler)).await
}
