//! siphon-api: routes HTTP API requests to `siphon` calls. Everything else (credentials,
//! bodies, formats, error bodies and status codes) is the shared edge, `siphon::web`.

mod config;
mod routes;

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use siphon::auth::Authenticator;
use siphon::dead_letters::DeadLetters;
use siphon::exporting::Exports;
use siphon::queue::MessageQueue;
use siphon::sessions::Imports;
use siphon::sinks::s3::S3Sink;
use siphon::sources::http::HttpSource;
use siphon::sources::s3::S3Source;
use siphon::sources::Routed;
use siphon::storage::Db;
use siphon::web::{self, ErrorStyle, Format};

pub use config::Config;

/// What every request shares; built once per cold start, without network calls.
pub struct App {
    pub db: Db,
    pub auth: Arc<Authenticator>,
    /// `SIPHON_MAX_BODY_BYTES`: larger request bodies are refused (413).
    pub max_body_bytes: usize,
    /// The load queue.
    pub queue: Arc<dyn MessageQueue>,
    /// `$import` sessions and `$load`.
    pub imports: Imports,
    /// `$export` (`None` when no export bucket is configured).
    pub exports: Option<Exports>,
    /// `SIPHON_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// Dead-letter queues (set by [`App::with_dead_letters`]).
    pub dead_letters: Option<DeadLetters>,
    /// The function's own S3 client: `dump-to-bucket` writes with it when the params
    /// name no other store.
    pub s3: aws_sdk_s3::Client,
    /// `SIPHON_DUMP_SQL_TIMEOUT_MS`.
    pub dump_sql_timeout_ms: u64,
    /// `SIPHON_URL_ALLOWLIST`: what stores named in requests must pass.
    pub url_policy: siphon::sources::http::UrlPolicy,
    /// The export queue, where background tasks go (`$export`, dump-to-bucket, the
    /// planning of inventory imports).
    pub task_queue: Option<Arc<dyn MessageQueue>>,
    /// siphon's own SMART client key (pull imports; `/.well-known/jwks.json`).
    pub remote_credentials: Arc<siphon::auth::remote::RemoteCredentials>,
}

impl App {
    /// `s3` is the function's own client (its role): `$load` reads `s3://` sources with it,
    /// and `$export` writes its bucket. `export_queue` is where export tasks go.
    pub fn new(
        config: &Config,
        db: Db,
        queue: Arc<dyn MessageQueue>,
        export_queue: Option<Arc<dyn MessageQueue>>,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        let http = Arc::new(HttpSource::new(config.url_policy.clone()));
        let task_queue = export_queue.clone();
        let exports = match (&config.export, export_queue) {
            (Some(export), Some(queue)) => Some(Exports {
                db: db.clone(),
                queue,
                sink: Arc::new(S3Sink::new(s3.clone(), &export.bucket)),
                config: export.clone(),
            }),
            _ => None,
        };
        let auth = Arc::new(Authenticator::configured(
            Arc::new(db.clone()),
            config.auth.clone(),
            Some(HttpSource::new(config.url_policy.clone())),
        ));
        App {
            auth: auth.clone(),
            max_body_bytes: config.max_body_bytes,
            imports: Imports {
                db: db.clone(),
                queue: queue.clone(),
                source: Arc::new(Routed {
                    s3: Arc::new(S3Source::new(s3.clone())),
                    http: http.clone(),
                }),
                guard: http,
                config: config.import.clone(),
                sync_budget: config.load_sync_budget,
                auth,
                task_queue: task_queue.clone(),
            },
            exports,
            public_url: config.public_url.clone(),
            dead_letters: None,
            s3,
            dump_sql_timeout_ms: config.dump_sql_timeout_ms,
            url_policy: config.url_policy.clone(),
            task_queue,
            remote_credentials: Arc::new(siphon::auth::remote::RemoteCredentials::new(
                config.client_key.clone(),
            )),
            db,
            queue,
        }
    }
}

impl App {
    /// Everything siphon-api needs, built from its configuration: the function's S3
    /// client, the load and export queues, the dead-letter queues, on `db`. What the
    /// Lambda's `main` and `make serve` both call. No network call is made.
    pub async fn boot(config: &Config, db: Db) -> siphon::Result<App> {
        let s3 = siphon::sources::s3::client(&config.s3).await?;
        let queue: Arc<dyn MessageQueue> =
            Arc::new(siphon::queue::SqsQueue::connect(&config.load_queue_url).await?);
        let export_queue: Option<Arc<dyn MessageQueue>> = match &config.export_queue_url {
            Some(url) => Some(Arc::new(siphon::queue::SqsQueue::connect(url).await?)),
            None => None,
        };
        let dead = dead_letters(config, &db, queue.clone(), export_queue.clone()).await?;
        Ok(App::new(config, db, queue, export_queue, s3).with_dead_letters(dead))
    }

    /// Lists and retries dead letters of these (queue, dead-letter queue) pairs.
    pub fn with_dead_letters(mut self, dead_letters: DeadLetters) -> Self {
        self.dead_letters = Some(dead_letters);
        self
    }
}

/// Handles one request: check its size and content type, authenticate, route, render.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let format = Format::of_answer(request.headers());
    let accept = request
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok());
    let style = routes::error_style(request.uri().path(), accept);
    let mut reply = respond(app, &request)
        .await
        .unwrap_or_else(|e| web::error_reply(&e, style));
    if request.headers().contains_key("x-siphon-console") {
        // The console signs in with its own form: no browser password dialog on a 401.
        reply.headers.retain(|(name, _)| name != "www-authenticate");
    }
    let (parts, bytes) = web::render(reply, format).into_parts();
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Response::from_parts(parts, body)
}

async fn respond(app: &App, request: &Request) -> siphon::Result<web::Reply> {
    web::check_size(request.body().len(), app.max_body_bytes)?;
    // The token endpoint answers a wrong content type itself, as an OAuth error.
    if request.uri().path() != routes::TOKEN_PATH {
        web::check_content_type(request.method(), request.headers(), false)?;
    }
    if let Some(public) = routes::public(app, request).await {
        return Ok(public);
    }
    let principal = app
        .auth
        .check(web::authorization(request.headers()), source_ip(request))
        .await?;
    routes::route(app, request, &principal).await
}

/// The caller's address as API Gateway saw it (`requestContext.http.sourceIp`; `make
/// serve` sets the TCP peer there): what the failure budget of authentication is kept
/// per. Never a header such as `X-Forwarded-For`, which the caller writes.
pub fn source_ip(request: &Request) -> Option<&str> {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref() {
        ctx.http.source_ip.as_deref()
    } else {
        None
    }
}

/// The error body style of a path and `Accept` header, for callers that answer before
/// routing.
pub fn error_style(path: &str, accept: Option<&str>) -> ErrorStyle {
    routes::error_style(path, accept)
}

/// The dead-letter queues the configuration names, with their main queues.
pub async fn dead_letters(
    config: &Config,
    db: &Db,
    load_queue: Arc<dyn MessageQueue>,
    export_queue: Option<Arc<dyn MessageQueue>>,
) -> siphon::Result<DeadLetters> {
    let mut pairs = Vec::new();
    if let Some(url) = &config.load_dlq_url {
        pairs.push(siphon::dead_letters::Pair {
            name: "load",
            queue: load_queue,
            dead: Arc::new(siphon::queue::SqsQueue::connect(url).await?),
        });
    }
    if let (Some(url), Some(queue)) = (&config.export_dlq_url, export_queue) {
        pairs.push(siphon::dead_letters::Pair {
            name: "export",
            queue,
            dead: Arc::new(siphon::queue::SqsQueue::connect(url).await?),
        });
    }
    Ok(DeadLetters {
        db: db.clone(),
        pairs,
    })
}
