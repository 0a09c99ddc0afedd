//! Shared pieces of siphon's tests and benchmarks: the test data generator, the bad
//! input corpus, and access to the local stack (real Postgres, LocalStack S3 and SQS).
//!
//! The local stack is brought up by `make up` (`infra/local/up.sh`), which writes
//! `infra/local/local.env`; [`env`] reads it. Every test gets its own database
//! ([`fresh_db`]) and its own bucket ([`fresh_bucket`]) so tests run in parallel.

pub mod bench;
pub mod corpus;
pub mod gen;
pub mod inventory;
pub mod pgstat;
pub mod smart;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use siphon::storage::{Db, DbConfig};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `infra/local/local.env`, parsed, merged over the process environment (the process
/// wins). Panics with the fix when the stack was never brought up.
pub fn env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = repo_root().join("infra/local/local.env");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}): run `make up` first", path.display()));
        let mut map: HashMap<String, String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        for (k, v) in map.iter_mut() {
            if let Ok(own) = std::env::var(k) {
                *v = own;
            }
        }
        map
    })
}

/// One value of [`env`].
pub fn var(name: &str) -> String {
    env()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not set in infra/local/local.env"))
}

/// local.env as a configuration snapshot (what a function's `Config::from_env` reads),
/// the process environment winning where both set a variable.
pub fn config_env() -> siphon::config::Env {
    let mut e = siphon::config::Env::from_process();
    for (k, v) in env() {
        if std::env::var(k).is_err() {
            e = e.with(k, v);
        }
    }
    e
}

/// A load worker as siphon-loader builds it, with local.env's URL allow-list.
pub fn load_worker(
    db: Db,
    queue: std::sync::Arc<dyn siphon::queue::MessageQueue>,
    s3: aws_sdk_s3::Client,
    options: siphon::loading::LoadOptions,
) -> siphon::workers::LoadWorker {
    let config = siphon_loader_config();
    siphon::workers::LoadWorker::new(
        db,
        queue,
        siphon::sources::s3::S3Source::new(s3),
        config.0,
        options,
        config.1,
    )
}

fn siphon_loader_config() -> (siphon::sources::http::UrlPolicy, u32) {
    let env = config_env();
    (
        siphon::sources::http::UrlPolicy::from_env(&env),
        env.number("SIPHON_MAX_RECEIVES", 5, 1, 1000).unwrap() as u32,
    )
}

/// Sets the AWS variables of local.env in this process, so SDK clients built from the
/// default chain talk to LocalStack (and only to it).
pub fn use_local_aws() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "SIPHON_S3_FORCE_PATH_STYLE",
        ] {
            // SAFETY of set_var: done once, before any client is built.
            unsafe { std::env::set_var(k, var(k)) };
        }
        unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };
    });
}

/// A new, empty database for one test; returns its URL. Databases are named
/// `siphon_test_*` and dropped by `make test` before the tests and after a green run.
pub async fn fresh_db_url() -> String {
    let admin_url = var("DATABASE_URL");
    let name = format!("siphon_test_{}", uuid::Uuid::new_v4().simple());
    let cfg = DbConfig::from_url(&admin_url).unwrap();
    let (client, conn) = cfg
        .pg_config()
        .connect(cfg.tls().unwrap())
        .await
        .expect("connect to the local Postgres");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A [`Db`] on a fresh database, with local.env's read-only login for caller SQL.
pub async fn fresh_db() -> Db {
    Db::new(
        DbConfig::from_url(&fresh_db_url().await)
            .unwrap()
            .with_reader("siphon_reader", &var("SIPHON_READER_PASSWORD")),
    )
}

/// The `postgres://` URL of `db`'s database (for a child process).
pub fn fresh_db_url_of(db: &Db) -> String {
    let pg = db.config().pg_config();
    let mut url = url::Url::parse(&var("DATABASE_URL")).unwrap();
    url.set_path(&format!("/{}", pg.get_dbname().unwrap()));
    url.to_string()
}

/// A direct connection (no pool) to the database of `db`, for assertions.
pub async fn connect(db: &Db) -> tokio_postgres::Client {
    let (client, conn) = db
        .config()
        .pg_config()
        .connect(db.config().tls().unwrap())
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// An S3 client for LocalStack.
pub async fn s3() -> aws_sdk_s3::Client {
    use_local_aws();
    siphon::sources::s3::client(&siphon::sources::s3::S3Options {
        force_path_style: Some(true),
        policy: siphon::sources::http::UrlPolicy::from_env(&config_env()),
        ..Default::default()
    })
    .await
    .expect("LocalStack's endpoint is allow-listed in local.env")
}

/// An SQS client for LocalStack.
pub async fn sqs() -> aws_sdk_sqs::Client {
    use_local_aws();
    let policy = siphon::sources::http::UrlPolicy::from_env(&config_env());
    let conf = siphon::sources::aws::sdk_config(&Default::default(), &policy)
        .await
        .expect("LocalStack's endpoint is allow-listed in local.env");
    aws_sdk_sqs::Client::new(&conf)
}

/// A new, empty bucket for one test.
pub async fn fresh_bucket(s3: &aws_sdk_s3::Client) -> String {
    let name = format!(
        "siphon-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create a LocalStack bucket");
    name
}

/// A new, empty SQS queue for one test; returns its URL.
pub async fn fresh_queue(sqs: &aws_sdk_sqs::Client) -> String {
    let name = format!(
        "siphon-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqs.create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create a LocalStack queue")
        .queue_url
        .expect("queue URL")
}

/// A new dead-letter queue behind queue `url`: a message received `max_receives` times
/// moves there. Returns the dead-letter queue's URL.
pub async fn fresh_dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max_receives: u32,
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let dlq = fresh_queue(sqs).await;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("the dead-letter queue's ARN")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("QueueArn");
    sqs.set_queue_attributes()
        .queue_url(url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives})
                .to_string(),
        )
        .send()
        .await
        .expect("set the redrive policy");
    dlq
}

/// Puts `bytes` at `key`.
pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, bytes: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "put s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
}

/// An answer to [`http_get`].
pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// GET of a plain `http://127.0.0.1:<port>/...` URL (a presigned S3 URL of LocalStack),
/// over a fresh connection; panics on anything but loopback.
pub async fn http_get(url: &str) -> HttpAnswer {
    http("GET", url, &[], b"").await
}

/// One HTTP/1.1 request to a loopback URL over a fresh connection (`make serve`'s API,
/// LocalStack); panics on anything but loopback.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = url::Url::parse(url).expect("a URL");
    let host = parsed.host_str().unwrap_or("");
    assert!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "tests only talk to loopback, not {host}"
    );
    let port = parsed.port().unwrap_or(80);
    let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nAccept-Encoding: identity\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[at + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .expect("hex size");
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = decoded;
    }
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// The Python with the pinned test readers (pyarrow, DuckDB), installed by
/// `infra/test-env.sh` (which `make test` runs); `SIPHON_TEST_PYTHON` overrides it.
pub fn test_python() -> PathBuf {
    let path = std::env::var_os("SIPHON_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/.venv-test/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run `bash infra/test-env.sh` (make test does)",
        path.display()
    );
    path
}

/// Runs reader `script` of `tests/readers/` on `files` and parses what it prints (JSON).
pub fn read_back(script: &str, files: &[&std::path::Path]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("readers")
        .join(script);
    let out = std::process::Command::new(test_python())
        .arg(&script)
        .args(files)
        .output()
        .expect("the test reader runs");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// Runs a test scenario that is one big future (a debug build's frames for it overflow
/// a test thread's stack) on a thread with room for it, on its own runtime.
pub fn on_big_stack<F>(scenario: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(scenario())
        })
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
