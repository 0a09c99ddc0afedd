//! siphon-dump: streams `GET /{type}/$dump` and `POST /$dump-sql` responses (Lambda
//! response streaming). A failure mid-stream ends the body with an error, so the
//! client sees a cut response, never a short one that looks complete.

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Request, Response};
use serde_json::{json, Value};
use siphon::auth::Authenticator;
use siphon::dumping::{self, SqlFormat};
use siphon::storage::Db;
use siphon::{Error, ResourceType, Result};

/// The streamed response body.
pub type DumpBody =
    StreamBody<BoxStream<'static, std::result::Result<Frame<Bytes>, lambda_http::Error>>>;

/// Shared per sandbox.
pub struct App {
    pub db: Db,
    pub auth: Authenticator,
    /// `$dump-sql` statement timeout (`SIPHON_DUMP_SQL_TIMEOUT_MS`, default 60 s).
    pub sql_timeout_ms: u64,
}

impl App {
    pub fn new(db: Db) -> Self {
        let sql_timeout_ms = std::env::var("SIPHON_DUMP_SQL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000);
        App {
            auth: Authenticator::new(db.clone()),
            db,
            sql_timeout_ms,
        }
    }
}

fn body(stream: dumping::ByteStream) -> DumpBody {
    StreamBody::new(
        stream
            .map(|item| match item {
                Ok(bytes) => Ok(Frame::data(bytes)),
                Err(e) => {
                    tracing::error!(error = %e, "dump failed mid-stream; cutting the response");
                    Err(lambda_http::Error::from(format!("dump incomplete: {e}")))
                }
            })
            .boxed(),
    )
}

fn error_response(err: &Error) -> Response<DumpBody> {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %err, "dump request failed");
    }
    let text = json!({"message": err.to_string()}).to_string();
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header("www-authenticate", "Basic realm=\"siphon\"");
    }
    builder
        .body(body(
            stream::once(async move { Ok(Bytes::from(text)) }).boxed(),
        ))
        .expect("valid response")
}

fn query_param(request: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn parse_since(raw: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap().and_utc());
    }
    Err(Error::BadRequest(format!(
        "_since {raw:?} is not an instant (RFC 3339, e.g. 2024-01-01T00:00:00Z) or a date"
    )))
}

/// Handles one request.
pub async fn handle(app: &App, request: Request) -> Response<DumpBody> {
    match route(app, &request).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn route(app: &App, request: &Request) -> Result<Response<DumpBody>> {
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    app.auth.check(authorization).await?;
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (content_type, stream) = match (request.method(), segments.as_slice()) {
        (&Method::GET, [ty, "$dump"]) => {
            let ty = ResourceType::parse(ty)?;
            let since = query_param(request, "_since")
                .map(|s| parse_since(&s))
                .transpose()?;
            (
                "application/ndjson",
                dumping::dump_type(&app.db, &ty, since).await?,
            )
        }
        (&Method::POST, ["$dump-sql"]) => {
            let bytes: &[u8] = request.body().as_ref();
            let yaml = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("yaml"));
            let params: Value = if yaml {
                serde_norway::from_slice(bytes)
                    .map_err(|e| Error::BadRequest(format!("the body is not valid YAML: {e}")))?
            } else {
                serde_json::from_slice(bytes)
                    .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))?
            };
            let query = params["query"]
                .as_str()
                .ok_or_else(|| Error::BadRequest("the body needs a string `query`".into()))?;
            let format = SqlFormat::parse(params["format"].as_str())?;
            (
                format.content_type(),
                dumping::dump_sql(&app.db, query, format, app.sql_timeout_ms).await?,
            )
        }
        _ => {
            return Err(Error::NotFound(format!(
                "no route for {} {path}",
                request.method()
            )))
        }
    };
    let gzip = query_param(request, "gzip").is_some_and(|v| v == "true");
    let mut builder = Response::builder()
        .status(200)
        .header("content-type", content_type);
    let stream = if gzip {
        builder = builder.header("content-encoding", "gzip");
        dumping::gzip(stream)
    } else {
        stream
    };
    Ok(builder.body(body(stream)).expect("valid response"))
}
