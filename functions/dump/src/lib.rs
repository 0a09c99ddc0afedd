//! siphon-dump: streams `GET /{type}/$dump` and `POST /$dump-sql` responses (Lambda
//! response streaming). A failure mid-stream ends the body with an error, so the
//! client sees a cut response, never a short one that looks complete. Credentials,
//! bodies and error answers go through the shared edge, `siphon::web`.

mod config;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http_body_util::StreamBody;
use hyper::body::Frame;
use lambda_http::http::Method;
use lambda_http::{Request, Response};
use siphon::auth::scopes::Perm;
use siphon::auth::Authenticator;
use siphon::dumping;
use siphon::formats::{Chosen, Exporter};
use siphon::storage::Db;
use siphon::web::{self, ErrorStyle, Format};
use siphon::{Error, ResourceType, Result};

pub use config::Config;

/// The streamed response body.
pub type DumpBody =
    StreamBody<BoxStream<'static, std::result::Result<Frame<Bytes>, lambda_http::Error>>>;

/// Shared per sandbox.
pub struct App {
    pub db: Db,
    pub auth: Authenticator,
    /// `$dump-sql` statement timeout.
    pub sql_timeout_ms: u64,
    /// `SIPHON_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
}

impl App {
    pub fn new(config: &Config, db: Db) -> Self {
        App {
            auth: Authenticator::configured(Arc::new(db.clone()), config.auth.clone(), None),
            db,
            sql_timeout_ms: config.sql_timeout_ms,
            max_body_bytes: config.max_body_bytes,
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
    let (parts, bytes) =
        web::render(web::error_reply(err, ErrorStyle::Plain), Format::Json).into_parts();
    Response::from_parts(parts, body(stream::once(async move { Ok(bytes) }).boxed()))
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

/// The caller's address as the function URL saw it (`requestContext.http.sourceIp`;
/// `make serve` sets the TCP peer there), for the failure budget of authentication.
/// Never a header such as `X-Forwarded-For`, which the caller writes.
pub fn source_ip(request: &Request) -> Option<&str> {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() {
        ctx.http.source_ip.as_deref()
    } else {
        None
    }
}

/// Handles one request.
pub async fn handle(app: &App, request: Request) -> Response<DumpBody> {
    match route(app, &request).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn route(app: &App, request: &Request) -> Result<Response<DumpBody>> {
    web::check_request(
        request.method(),
        request.headers(),
        request.body().len(),
        app.max_body_bytes,
        false,
    )?;
    let who = app
        .auth
        .check(web::authorization(request.headers()), source_ip(request))
        .await?;
    let path = request.uri().path();
    let (content_type, stream) = match (request.method(), web::segments(path).as_slice()) {
        (&Method::GET, [ty, "$dump"]) => {
            let ty = ResourceType::parse(ty)?;
            // siphon's own tables (Client holds secret hashes) are never dumped.
            if ty.is_system() {
                return Err(Error::NotFound(format!("no resources of type {ty}")));
            }
            who.require(ty.as_str(), Perm::Read)?;
            let since = web::query_param(request.uri(), "_since")
                .map(|s| parse_since(&s))
                .transpose()?;
            (
                "application/ndjson",
                dumping::dump_type(&app.db, &ty, since).await?,
            )
        }
        (&Method::POST, ["$dump-sql"]) => {
            who.require_sql()?;
            let params = web::parse_body(request.headers(), request.body().as_ref())?;
            let query = params["query"]
                .as_str()
                .ok_or_else(|| Error::BadRequest("the body needs a string `query`".into()))?;
            let format = Chosen::parse(Exporter::DumpSql, params["format"].as_str())?;
            let table = params["table"].as_str();
            (
                format.content_type(),
                dumping::dump_sql(&app.db, query, format, table, app.sql_timeout_ms).await?,
            )
        }
        _ => {
            return Err(Error::NotFound(format!(
                "no route for {} {path}",
                request.method()
            )))
        }
    };
    let gzip = web::query_param(request.uri(), "gzip").is_some_and(|v| v == "true");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_instants_and_dates() {
        assert_eq!(
            parse_since("2024-01-02T03:04:05+01:00")
                .unwrap()
                .to_rfc3339(),
            "2024-01-02T02:04:05+00:00"
        );
        assert_eq!(
            parse_since("2024-01-02").unwrap().to_rfc3339(),
            "2024-01-02T00:00:00+00:00"
        );
        for bad in ["yesterday", "2024-13-01", "2024-01-02 03:04"] {
            assert!(
                matches!(parse_since(bad), Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
