//! siphon-api: routes HTTP API requests to `siphon` calls. Everything else (credentials,
//! bodies, formats, error bodies and status codes) is the shared edge, `siphon::web`.

mod config;
mod routes;

use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use siphon::auth::Authenticator;
use siphon::queue::MessageQueue;
use siphon::sessions::Imports;
use siphon::sources::http::HttpSource;
use siphon::sources::s3::S3Source;
use siphon::sources::Routed;
use siphon::storage::Db;
use siphon::web::{self, ErrorStyle, Format};

pub use config::Config;

/// What every request shares; built once per cold start, without network calls.
pub struct App {
    pub db: Db,
    pub auth: Authenticator,
    /// The load queue.
    pub queue: Arc<dyn MessageQueue>,
    /// `$import` sessions and `$load`.
    pub imports: Imports,
}

impl App {
    /// `s3` is the function's own client (its role): `$load` reads `s3://` sources with it.
    pub fn new(
        config: &Config,
        db: Db,
        queue: Arc<dyn MessageQueue>,
        s3: aws_sdk_s3::Client,
    ) -> Self {
        let http = Arc::new(HttpSource::new(config.url_policy.clone()));
        App {
            auth: Authenticator::new(Arc::new(db.clone()), config.admin.clone()),
            imports: Imports {
                db: db.clone(),
                queue: queue.clone(),
                source: Arc::new(Routed {
                    s3: Arc::new(S3Source::new(s3)),
                    http: http.clone(),
                }),
                guard: http,
                config: config.import.clone(),
                sync_budget: config.load_sync_budget,
            },
            db,
            queue,
        }
    }
}

/// Handles one request: authenticate, route, render.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let format = Format::of_answer(request.headers());
    let style = routes::error_style(request.uri().path());
    let reply = match app.auth.check(web::authorization(request.headers())).await {
        Ok(_) => routes::route(app, &request)
            .await
            .unwrap_or_else(|e| web::error_reply(&e, style)),
        Err(e) => web::error_reply(&e, style),
    };
    let (parts, bytes) = web::render(reply, format).into_parts();
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Response::from_parts(parts, body)
}

/// The error body style of a path, for callers that answer before routing.
pub fn error_style(path: &str) -> ErrorStyle {
    routes::error_style(path)
}
