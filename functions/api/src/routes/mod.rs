//! Which path goes where. Each handler parses what the path and body say, calls the
//! domain, and shapes the answer; nothing else.

mod resources;
mod rpc;
mod sessions;

use lambda_http::Request;
use siphon::web::{self, ErrorStyle, Method, Reply};
use siphon::{Error, Result};

use crate::App;

/// RPC routes wrap errors as `{error: {message}}`; the rest answer `{message}`.
pub fn error_style(path: &str) -> ErrorStyle {
    if path == "/rpc" {
        ErrorStyle::Rpc
    } else {
        ErrorStyle::Plain
    }
}

pub async fn route(app: &App, request: &Request) -> Result<Reply> {
    let path = request.uri().path();
    let segments = web::segments(path);
    let method = request.method();
    match (method, segments.as_slice()) {
        (&Method::POST, ["rpc"]) => rpc::call(app, request).await,
        (&Method::POST, ["$import"]) => sessions::import(app, request).await,
        (&Method::GET, ["$import", id]) => sessions::view(app, id).await,
        (&Method::POST, ["$load"]) => sessions::load(app, request, None).await,
        (&Method::POST, [ty, "$load"]) => sessions::load(app, request, Some(ty)).await,
        (&Method::PUT, []) => resources::put(app, request).await,
        (&Method::GET, ["LoaderFile", id, "$errors"]) => {
            resources::loader_file_errors(app, request, id).await
        }
        (&Method::DELETE, ["LoaderFile", id]) => resources::delete_loader_file(app, id).await,
        (&Method::GET, [ty]) => resources::list(app, request, ty).await,
        (&Method::GET, [ty, id]) => resources::read(app, ty, id).await,
        _ => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

/// The request body as a value (JSON or YAML).
fn body(request: &Request) -> Result<serde_json::Value> {
    web::parse_body(request.headers(), request.body().as_ref())
}
