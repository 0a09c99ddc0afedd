//! Which path goes where. Each handler parses what the path and body say, calls the
//! domain, and shapes the answer; nothing else.

mod console;
mod exports;
mod resources;
mod rpc;
mod sessions;

use lambda_http::Request;
use siphon::auth::Principal;
use siphon::exporting::request::Level;
use siphon::web::{self, ErrorStyle, Method, Reply};
use siphon::{Error, Result};

use crate::App;

/// RPC routes wrap errors as `{error: {message}}`, FHIR operations answer an
/// OperationOutcome, the rest `{message}`.
pub fn error_style(path: &str) -> ErrorStyle {
    if path == "/rpc" {
        ErrorStyle::Rpc
    } else if path.contains("$export") || path == "/metadata" {
        ErrorStyle::Fhir
    } else {
        ErrorStyle::Plain
    }
}

/// What anyone may read without credentials: the CapabilityStatement, as FHIR servers
/// serve it, and the console's static files (its API calls carry the user's credentials).
pub fn public(request: &Request) -> Option<Reply> {
    let path = request.uri().path();
    match *request.method() {
        Method::GET if path == "/metadata" => Some(exports::capability_statement(request)),
        Method::GET if path.starts_with("/console") => console::console(path),
        _ => None,
    }
}

pub async fn route(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let path = request.uri().path();
    let segments = web::segments(path);
    let method = request.method();
    let get_or_post = method == Method::GET || method == Method::POST;
    match (method, segments.as_slice()) {
        (_, ["$export"]) if get_or_post => {
            exports::kick_off(app, request, who, Level::System).await
        }
        (_, ["Patient", "$export"]) if get_or_post => {
            exports::kick_off(app, request, who, Level::Patient).await
        }
        (_, ["Group", id, "$export"]) if get_or_post => {
            exports::kick_off(app, request, who, Level::Group(id.to_string())).await
        }
        (&Method::GET, ["$export-status"]) => exports::list(app, request, who).await,
        (&Method::GET, ["$export-status", id]) => exports::status(app, id, who).await,
        (&Method::DELETE, ["$export-status", id]) => exports::cancel(app, id, who).await,
        (&Method::POST, ["rpc"]) => rpc::call(app, request, who).await,
        (&Method::GET, ["$dump-to-bucket", id]) => rpc::dump_view(app, id, who).await,
        (&Method::DELETE, ["$dump-to-bucket", id]) => rpc::dump_cancel(app, id, who).await,
        (&Method::POST, ["$import"]) => sessions::import(app, request).await,
        (&Method::GET, ["$import"]) => sessions::list(app, request).await,
        (&Method::GET, ["$import", id]) => sessions::view(app, id).await,
        (&Method::POST, ["$load"]) => sessions::load(app, request, None).await,
        (&Method::POST, [ty, "$load"]) => sessions::load(app, request, Some(ty)).await,
        (&Method::PUT, []) => resources::put(app, request).await,
        (&Method::GET, ["$dead-letters"]) => resources::dead_letters(app).await,
        (&Method::POST, ["$dead-letters", id, "$retry"]) => {
            resources::retry_dead_letter(app, id).await
        }
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
