//! Which path goes where, and what each needs. Each handler parses what the path and
//! body say, checks the caller's rights (see the table in `docs/authorization.md`),
//! calls the domain, and shapes the answer; nothing else.

mod console;
mod exports;
mod resources;
mod rpc;
mod sessions;
mod smart;
mod submit;

use lambda_http::Request;
use siphon::auth::Principal;
use siphon::exporting::request::Level;
use siphon::web::{self, ErrorStyle, Method, Reply};
use siphon::{Error, Result};

use crate::App;

/// RPC routes wrap errors as `{error: {message}}`, FHIR operations answer an
/// OperationOutcome, the rest `{message}`. The Bulk Data status URL answers its
/// OperationOutcome as `application/json` (what its clients ask for and parse) unless
/// `accept` names `application/fhir+json`.
pub fn error_style(path: &str, accept: Option<&str>) -> ErrorStyle {
    let fhir_json =
        accept.is_some_and(|a| a.to_ascii_lowercase().contains("application/fhir+json"));
    if path == "/rpc" {
        ErrorStyle::Rpc
    } else if path.starts_with("/$export-status/") && !fhir_json {
        ErrorStyle::FhirAsJson
    } else if path.contains("$export") || path.contains("$bulk-submit") || path == "/metadata" {
        ErrorStyle::Fhir
    } else {
        ErrorStyle::Plain
    }
}

/// The path of the SMART token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";

/// What anyone may reach without credentials: the CapabilityStatement and the SMART
/// configuration, as FHIR servers serve them, the token endpoint (it authenticates the
/// client itself), siphon's public client key (`/.well-known/jwks.json`, what remote
/// servers verify siphon's assertions with), and the console's static files (its API
/// calls carry the user's credentials).
pub async fn public(app: &App, request: &Request) -> Option<Reply> {
    let path = request.uri().path();
    match *request.method() {
        Method::GET if path == "/metadata" => Some(exports::capability_statement(app, request)),
        Method::GET if path == "/.well-known/smart-configuration" => {
            Some(smart::configuration(app, request))
        }
        Method::POST if path == TOKEN_PATH => Some(smart::token(app, request).await),
        Method::GET if path == "/.well-known/jwks.json" => Some(smart::jwks(app).await),
        Method::GET if path.starts_with("/console") => console::console(path),
        _ => None,
    }
}

/// Routes an authenticated request.
pub async fn route(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let path = request.uri().path();
    let segments = web::segments(path);
    let method = request.method();
    let get_or_post = method == Method::GET || method == Method::POST;
    match (method, segments.as_slice()) {
        (&Method::GET, ["$me"]) => Ok(smart::me(who)),
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
        (&Method::GET, ["$export-status", id]) => exports::status(app, request, id, who).await,
        (&Method::DELETE, ["$export-status", id]) => exports::cancel(app, request, id, who).await,
        (&Method::POST, ["rpc"]) => rpc::call(app, request, who).await,
        (&Method::GET, ["$dump-to-bucket", id]) => rpc::dump_view(app, id, who).await,
        (&Method::DELETE, ["$dump-to-bucket", id]) => rpc::dump_cancel(app, id, who).await,
        (&Method::POST, ["$import"]) => sessions::import(app, request, who).await,
        (&Method::POST, ["$import-pnp"]) => sessions::import_pnp(app, request, who).await,
        // Its own router, boxed: every arm here adds to the stack of every request.
        (_, [first, ..]) if first.starts_with("$bulk-submit") => {
            Box::pin(submit::route(app, request, who, &segments)).await
        }
        (&Method::GET, ["$import"]) => sessions::list(app, request, who).await,
        (&Method::GET, ["$import", id]) => sessions::view(app, id, who).await,
        (&Method::POST, ["$load"]) => sessions::load(app, request, None, who).await,
        (&Method::POST, [ty, "$load"]) => sessions::load(app, request, Some(ty), who).await,
        (&Method::PUT, []) => resources::put(app, request, who).await,
        (&Method::GET, ["$dead-letters"]) => {
            who.require_admin("GET /$dead-letters")?;
            resources::dead_letters(app).await
        }
        (&Method::POST, ["$dead-letters", id, "$retry"]) => {
            who.require_admin("retrying dead letters")?;
            resources::retry_dead_letter(app, id).await
        }
        (&Method::GET, ["LoaderFile", id, "$errors"]) => {
            resources::loader_file_errors(app, request, id, who).await
        }
        (&Method::DELETE, ["LoaderFile", id]) => {
            who.require_admin("DELETE /LoaderFile")?;
            resources::delete_loader_file(app, id).await
        }
        (&Method::GET, [ty]) => resources::list(app, request, ty, who).await,
        (&Method::GET, [ty, id]) => resources::read(app, ty, id, who).await,
        _ => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

/// The request body as a value (JSON or YAML).
fn body(request: &Request) -> Result<serde_json::Value> {
    web::parse_body(request.headers(), request.body().as_ref())
}
