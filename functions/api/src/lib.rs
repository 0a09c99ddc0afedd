//! siphon-api: maps HTTP API requests to `siphon` calls and results to responses.
//! Errors become status codes in one place ([`error_response`]).

use std::sync::Arc;

use lambda_http::http::{HeaderMap, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use siphon::auth::{self, Authenticator};
use siphon::ingestion::bucket::{self, LoadFromBucket};
use siphon::ingestion::queue::LoadQueue;
use siphon::sessions::{ImportConfig, Imports, Loaded};
use siphon::sources::http::{HttpSource, UrlPolicy};
use siphon::sources::s3::S3Source;
use siphon::sources::Routed;
use siphon::storage::Db;
use siphon::{Error, ResourceType, Result};

/// What every request shares; built once per cold start, without network calls.
pub struct App {
    pub db: Db,
    pub auth: Authenticator,
    pub queue: Arc<dyn LoadQueue>,
    /// `$import` sessions and `$load`.
    pub imports: Imports,
}

impl App {
    /// `s3` is the function's own client (its role): `$load` reads `s3://` sources with it.
    /// URL inputs go through the guard configured by `SIPHON_URL_ALLOWLIST`.
    pub fn new(db: Db, queue: Arc<dyn LoadQueue>, s3: aws_sdk_s3::Client) -> Self {
        let http = Arc::new(HttpSource::new(UrlPolicy::from_env()));
        let sync_budget = std::env::var("SIPHON_LOAD_SYNC_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20.0);
        App {
            auth: Authenticator::new(db.clone()),
            imports: Imports {
                db: db.clone(),
                queue: queue.clone(),
                source: Arc::new(Routed {
                    s3: Arc::new(S3Source::new(s3)),
                    http: http.clone(),
                }),
                guard: http,
                config: ImportConfig::from_env(),
                sync_budget: std::time::Duration::from_secs_f64(sync_budget),
            },
            db,
            queue,
        }
    }
}

/// A successful answer.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl From<(StatusCode, Value)> for Reply {
    fn from((status, body): (StatusCode, Value)) -> Self {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }
}

/// Body formats the API speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

fn wants_yaml(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"))
}

fn parse_body(request: &Request) -> Result<Value> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::BadRequest("the request body is empty".into()));
    }
    if wants_yaml(request.headers(), "content-type") {
        serde_norway::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("the body is not valid YAML: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))
    }
}

fn respond(status: StatusCode, body: &Value, format: Format) -> Response<Body> {
    let (content_type, text) = match format {
        Format::Json => ("application/json", body.to_string()),
        Format::Yaml => (
            "text/yaml",
            serde_norway::to_string(body).unwrap_or_default(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::Text(text))
        .expect("valid response")
}

/// The one place errors become HTTP: status from the error, `message` in the body
/// (RPC errors as `{error: {message}}`), `WWW-Authenticate` on 401.
pub fn error_response(err: &Error, format: Format, rpc: bool) -> Response<Body> {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        format!("internal error: {err}")
    } else {
        err.to_string()
    };
    let body = if rpc {
        json!({"error": {"message": message}})
    } else {
        json!({"message": message})
    };
    let mut response = respond(status, &body, format);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            "Basic realm=\"siphon\"".parse().unwrap(),
        );
    }
    response
}

/// Handles one request.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let format = if wants_yaml(request.headers(), "accept") {
        Format::Yaml
    } else {
        Format::Json
    };
    let path = request.uri().path().to_string();
    let rpc = path == "/rpc";
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Err(e) = app.auth.check(authorization.as_deref()).await {
        return error_response(&e, format, rpc);
    }
    let result = match session_route(app, &request, &path).await {
        Some(result) => result,
        None => route(app, &request, &path).await.map(Reply::from),
    };
    match result {
        Ok(reply) => {
            let mut response = respond(reply.status, &reply.body, format);
            for (name, value) in reply.headers {
                if let Ok(value) = value.parse() {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Err(e) => error_response(&e, format, rpc),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The non-empty parts of a path: `/$import/x/` -> `["$import", "x"]`.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// `$import` and `$load`; `None` when the path is not theirs.
async fn session_route(app: &App, request: &Request, path: &str) -> Option<Result<Reply>> {
    let segments = segments(path);
    let method = request.method();
    let result = match (method, segments.as_slice()) {
        (&Method::POST, ["$import"]) => import(app, request).await,
        (&Method::GET, ["$import", id]) => app.imports.view(id).await.map(|session| {
            let running = session.status.is_running();
            Reply {
                // FHIR Bulk Data: 202 + X-Progress while the job runs, 200 when it ended.
                status: if running {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                },
                headers: if running {
                    vec![("x-progress", session.progress.clone())]
                } else {
                    Vec::new()
                },
                body: to_value(&session),
            }
        }),
        (&Method::POST, ["$load"]) => load(app, request, None).await,
        (&Method::POST, [ty, "$load"]) => match ResourceType::parse(ty) {
            Ok(ty) => load(app, request, Some(ty)).await,
            Err(e) => Err(e),
        },
        _ => return None,
    };
    Some(result)
}

async fn import(app: &App, request: &Request) -> Result<Reply> {
    let acted = app.imports.act(&parse_body(request)?).await?;
    let location = format!("/$import/{}", acted.session.id);
    Ok(Reply {
        status: if acted.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        headers: vec![("content-location", location)],
        body: to_value(&acted.session),
    })
}

async fn load(app: &App, request: &Request, ty: Option<ResourceType>) -> Result<Reply> {
    match app.imports.load(&parse_body(request)?, ty).await? {
        Loaded::Finished {
            session,
            loaded,
            failed,
        } => Ok(Reply {
            status: StatusCode::OK,
            headers: vec![("content-location", format!("/$import/{session}"))],
            body: json!({"total": loaded, "failed": failed, "session": session}),
        }),
        Loaded::Continuing(session) => Ok(Reply {
            status: StatusCode::ACCEPTED,
            headers: vec![
                ("content-location", format!("/$import/{}", session.id)),
                ("x-progress", session.progress.clone()),
            ],
            body: to_value(&session),
        }),
    }
}

fn query_param(request: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn bundle(resources: Vec<Value>) -> Value {
    let total = resources.len();
    json!({"resourceType": "Bundle", "type": "searchset", "total": total,
           "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
}

async fn route(app: &App, request: &Request, path: &str) -> Result<(StatusCode, Value)> {
    let segments = segments(path);
    let method = request.method();
    match (method, segments.as_slice()) {
        (&Method::POST, ["rpc"]) => rpc(app, parse_body(request)?)
            .await
            .map(|v| (StatusCode::OK, v)),
        (&Method::PUT, []) => put_resources(app, parse_body(request)?)
            .await
            .map(|v| (StatusCode::OK, v)),
        (&Method::GET, ["LoaderFile", id, "$errors"]) => {
            let limit = query_param(request, "_count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            let offset = query_param(request, "_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if app.db.loader_file(id).await?.is_none() {
                return Err(Error::NotFound(format!("LoaderFile {id} not found")));
            }
            let errors = app.db.loader_file_errors(id, limit, offset).await?;
            let items: Vec<Value> = errors
                .iter()
                .map(|e| json!({"line": e.line, "reason": e.reason, "excerpt": e.excerpt}))
                .collect();
            Ok((StatusCode::OK, json!({"file": id, "errors": items})))
        }
        (&Method::DELETE, ["LoaderFile", id]) => {
            if app.db.delete_loader_file(id).await? {
                Ok((
                    StatusCode::OK,
                    json!({"message": format!("LoaderFile {id} deleted")}),
                ))
            } else {
                Err(Error::NotFound(format!("LoaderFile {id} not found")))
            }
        }
        (&Method::GET, [ty]) => {
            let ty = ResourceType::parse(ty)?;
            let limit = query_param(request, "_count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .clamp(1, 10_000);
            let offset = query_param(request, "_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let rows = app.db.list(&ty, limit, offset).await?;
            Ok((
                StatusCode::OK,
                bundle(rows.into_iter().map(|r| auth::redact(r.resource)).collect()),
            ))
        }
        (&Method::GET, [ty, id]) => {
            let ty = ResourceType::parse(ty)?;
            match app.db.get(&ty, id).await? {
                Some(r) => Ok((StatusCode::OK, auth::redact(r.resource))),
                None => Err(Error::NotFound(format!("{ty}/{id} not found"))),
            }
        }
        _ => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

async fn rpc(app: &App, body: Value) -> Result<Value> {
    let method = body
        .get("method")
        .and_then(|m| m.as_str())
        .ok_or_else(|| Error::BadRequest("the RPC body needs a string `method`".into()))?;
    let params = body.get("params").cloned().unwrap_or(json!({}));
    match method {
        "aidbox.bulk/load-from-bucket" => {
            let params: LoadFromBucket = serde_json::from_value(params)
                .map_err(|e| Error::BadRequest(format!("invalid params: {e}")))?;
            let s3 = siphon::sources::s3::client(&params.store().s3_options()).await;
            let started = bucket::load_from_bucket(
                &app.db,
                app.queue.as_ref(),
                &s3,
                app.imports.guard.as_ref(),
                &params,
            )
            .await?;
            Ok(json!({"result": started}))
        }
        "aidbox.bulk/load-from-bucket-status" => {
            Ok(json!({"result": bucket::status(&app.db).await?}))
        }
        other => Err(Error::BadRequest(format!("unknown method {other:?}"))),
    }
}

async fn put_resources(app: &App, body: Value) -> Result<Value> {
    let list = body
        .as_array()
        .ok_or_else(|| Error::BadRequest("PUT / takes a list of resources".into()))?;
    let mut out = Vec::new();
    for item in list {
        let ty = item
            .get("resourceType")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::BadRequest("each resource needs a resourceType".into()))?;
        let id = item
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::BadRequest("each resource needs an id".into()))?;
        let ty = ResourceType::parse(ty)?;
        let stored = app
            .db
            .upsert(&ty, id, &auth::protect(&ty, item.clone())?)
            .await?;
        out.push(auth::redact(stored.resource));
    }
    Ok(Value::Array(out))
}
