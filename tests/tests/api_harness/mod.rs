//! The API and loader worker in process, against LocalStack S3/SQS and a fresh database:
//! requests go through `siphon_api::handle` exactly as the Lambda adapter sends them, and
//! the load queue is drained by the project's poller (standing in for Lambda's SQS event
//! source mapping).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use lambda_http::{Body, Request};
use serde_json::Value;
use siphon::loading::LoadOptions;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_tests::{fresh_bucket, fresh_db, s3, sqs, var};

pub struct Env {
    pub db: Db,
    pub app: siphon_api::App,
    pub queue: Arc<SqsQueue>,
    /// The export queue and a worker on it (the export bucket is local.env's).
    pub export_queue: Arc<SqsQueue>,
    pub exporter: Arc<siphon::workers::ExportWorker>,
    pub worker: Arc<siphon::workers::LoadWorker>,
    pub bucket: String,
    pub s3: aws_sdk_s3::Client,
}

/// A fresh database, bucket and queue; the worker loads with `options`.
pub async fn setup(options: LoadOptions) -> Env {
    setup_with(options, |e| e).await
}

/// [`setup`], with settings changed by `settings` (over local.env's).
pub async fn setup_with(
    options: LoadOptions,
    settings: impl FnOnce(siphon::config::Env) -> siphon::config::Env,
) -> Env {
    siphon_tests::use_local_aws();
    for k in [
        "SIPHON_ADMIN_CLIENT_ID",
        "SIPHON_ADMIN_CLIENT_SECRET",
        "SIPHON_URL_ALLOWLIST",
    ] {
        unsafe { std::env::set_var(k, var(k)) };
    }
    let sqs = sqs().await;
    let url = siphon_tests::fresh_queue(&sqs).await;
    let export_url = siphon_tests::fresh_queue(&sqs).await;
    let queue = Arc::new(SqsQueue::new(sqs.clone(), url));
    let export_queue = Arc::new(SqsQueue::new(sqs, export_url));
    let db = fresh_db().await;
    let s3 = s3().await;
    let bucket = fresh_bucket(&s3).await;
    let env = settings(siphon_tests::config_env().with("SIPHON_EXPORT_MIN_POLL_MS", "0"));
    let loader = siphon_loader::Config::from_env(&env).unwrap();
    let worker = Arc::new(siphon_loader::worker(
        &loader,
        db.clone(),
        queue.clone(),
        s3.clone(),
        options,
    ));
    let config = siphon_api::Config::from_env(&env).unwrap();
    let export_config = siphon_export::Config::from_env(&env).unwrap();
    let exporter = Arc::new(
        siphon_export::worker(&export_config, db.clone(), export_queue.clone(), s3.clone())
            .with_load_queue(queue.clone()),
    );
    Env {
        app: siphon_api::App::new(
            &config,
            db.clone(),
            queue.clone(),
            Some(export_queue.clone()),
            s3.clone(),
        ),
        export_queue,
        exporter,
        db,
        queue,
        worker,
        bucket,
        s3,
    }
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub fn admin() -> String {
    basic(
        &var("SIPHON_ADMIN_CLIENT_ID"),
        &var("SIPHON_ADMIN_CLIENT_SECRET"),
    )
}

/// One request as the admin; returns status, body (JSON, or the text as a string) and headers.
pub async fn call(
    env: &Env,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, lambda_http::http::HeaderMap) {
    call_as(env, method, path, Some(&admin()), body).await
}

/// One request with the given `authorization` header (none when `None`).
pub async fn call_as(
    env: &Env,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, lambda_http::http::HeaderMap) {
    call_with(env, method, path, auth, &[], body).await
}

/// The headers of a Bulk Data kick-off.
pub const FHIR_KICK_OFF: &[(&str, &str)] = &[
    ("accept", "application/fhir+json"),
    ("prefer", "respond-async"),
];

/// [`call_as`] with more headers.
pub async fn call_with(
    env: &Env,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value, lambda_http::http::HeaderMap) {
    let mut req = lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req: Request = req
        .body(
            body.map(|b| Body::Text(b.to_string()))
                .unwrap_or(Body::Empty),
        )
        .unwrap();
    let resp = siphon_api::handle(&env.app, req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

/// Polls the load queue until it stays empty (bounded: 120 s).
pub async fn drain(worker: &siphon::workers::LoadWorker, queue: &SqsQueue) {
    let start = Instant::now();
    let mut idle = 0;
    while idle < 2 && start.elapsed() < Duration::from_secs(120) {
        if siphon_local::poll_load_queue(worker, queue.client(), queue.url(), 10, 1).await == 0 {
            idle += 1;
        } else {
            idle = 0;
        }
    }
}

/// Runs export tasks until the export queue stays empty (bounded: 120 s).
pub async fn drain_exports(env: &Env) {
    let start = Instant::now();
    let mut idle = 0;
    while idle < 2 && start.elapsed() < Duration::from_secs(120) {
        let n = siphon_local::poll_export_queue(
            &env.exporter,
            env.export_queue.client(),
            env.export_queue.url(),
            1,
            Duration::from_secs(900),
        )
        .await;
        idle = if n == 0 { idle + 1 } else { 0 };
    }
}

/// Rows in a table (0 when it does not exist yet).
pub async fn count(db: &Db, table: &str) -> i64 {
    let client = siphon_tests::connect(db).await;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return 0;
    }
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Distinct ids in a table.
pub async fn distinct_ids(db: &Db, table: &str) -> i64 {
    siphon_tests::connect(db)
        .await
        .query_one(&format!("SELECT count(DISTINCT id) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// What `$dump` returns for a type, one line per resource, in its order.
pub async fn dump_lines(env: &Env, ty: &str) -> Vec<String> {
    use futures::StreamExt;
    let ty = siphon::ResourceType::parse(ty).unwrap();
    let mut stream = siphon::dumping::dump_type(&env.db, &ty, None)
        .await
        .unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
