//! The built bootstraps as Lambda runs them: each binary under the official runtime
//! interface emulator (shipped in the aws-sam-cli package, installed by
//! `infra/sam-venv.sh`), invoked with an event in AWS's shape.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use siphon_tests::{env, repo_root};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Emulated {
    child: Child,
    port: u16,
}

impl Drop for Emulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &str) -> Emulated {
    start_with(binary, &[])
}

fn start_with(binary: &str, extra_env: &[(&str, String)]) -> Emulated {
    let rie = repo_root().join(
        "infra/.venv-sam/lib/python3.11/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64",
    );
    assert!(
        rie.exists(),
        "{} is missing: run infra/sam-venv.sh (make test does)",
        rie.display()
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug").join(binary);
    assert!(
        bin.exists(),
        "{} is missing: cargo build --workspace --bins (make test does)",
        bin.display()
    );
    let (port, api_port) = (free_port(), free_port());
    let child = Command::new(rie)
        .arg("--runtime-interface-emulator-address")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--runtime-api-address")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg(bin)
        .envs(env().iter())
        .envs(extra_env.iter().map(|(k, v)| (*k, v.clone())))
        .env("AWS_LAMBDA_FUNCTION_NAME", binary)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the emulator");
    Emulated { child, port }
}

async fn invoke(e: &Emulated, event: &Value) -> Value {
    let url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
        e.port
    );
    let start = Instant::now();
    loop {
        match post(&url, event).await {
            Ok(v) => return v,
            Err(err) if start.elapsed() < Duration::from_secs(10) => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("invoke failed: {err}"),
        }
    }
}

/// A minimal HTTP/1.1 POST over loopback (no client library needed for one call);
/// returns the response body.
async fn post_raw(url: &str, body: &Value) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    let req = format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response")?;
    Ok(out[at + 4..].to_vec())
}

async fn post(url: &str, body: &Value) -> Result<Value, String> {
    let payload = post_raw(url, body).await?;
    serde_json::from_slice(&payload)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&payload)))
}

/// An event from `infra/events/`, with `Basic CHANGE_ME` replaced by real credentials.
fn event(name: &str, authorized: bool) -> Value {
    let text = std::fs::read_to_string(repo_root().join("infra/events").join(name)).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!(
            "{}:{}",
            siphon_tests::var("SIPHON_ADMIN_CLIENT_ID"),
            siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET")
        ),
    );
    let text = if authorized {
        text.replace("Basic CHANGE_ME", &format!("Basic {auth}"))
    } else {
        text
    };
    serde_json::from_str(&text).unwrap()
}

/// A fresh database and load queue for one emulated function.
async fn isolated() -> (siphon::storage::Db, Vec<(&'static str, String)>, String) {
    let db = siphon_tests::fresh_db().await;
    let sqs = siphon_tests::sqs().await;
    let name = format!(
        "siphon-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let env = vec![
        ("DATABASE_URL", siphon_tests::fresh_db_url_of(&db)),
        ("SIPHON_LOAD_QUEUE_URL", queue.clone()),
    ];
    (db, env, queue)
}

#[tokio::test]
async fn api_answers_401_without_credentials() {
    let api = start("siphon-api");
    let out = invoke(&api, &event("api-unauthorized.json", false)).await;
    assert_eq!(out["statusCode"], 401, "{out}");
    assert_eq!(out["headers"]["www-authenticate"], "Basic realm=\"siphon\"");
    assert!(out["body"].as_str().unwrap().contains("credentials"));
}

#[tokio::test]
async fn api_rpc_in_yaml_answers_in_yaml() {
    let (_db, env, _) = isolated().await;
    let api = start_with("siphon-api", &env);
    let out = invoke(&api, &event("api-rpc-yaml.json", true)).await;
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(out["headers"]["content-type"], "text/yaml");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .starts_with("result:\n  files:"),
        "{out}"
    );
}

#[tokio::test]
async fn s3_ingest_ignores_a_test_event_delivered_through_sqs() {
    let f = start("siphon-s3-ingest");
    assert_eq!(
        invoke(&f, &event("sqs-s3-test-event.json", false)).await,
        json!({"batchItemFailures": []})
    );
}

#[tokio::test]
async fn s3_ingest_decodes_the_key_and_queues_the_file() {
    let (db, env, queue) = isolated().await;
    let f = start_with("siphon-s3-ingest", &env);
    assert_eq!(
        invoke(&f, &event("s3-object-created-urlencoded.json", false)).await,
        json!({"status": "ok"})
    );
    let id = siphon::loading::loader_file::file_id(&siphon::sources::ObjectLocation::new(
        "siphon-samples",
        "my dir/Patient+1.ndjson.gz",
    ));
    let file = db
        .loader_file(&id)
        .await
        .unwrap()
        .expect("a LoaderFile for the decoded key");
    assert_eq!(
        (file.file.as_str(), file.resource_type.as_deref()),
        ("my dir/Patient+1.ndjson.gz", Some("Patient"))
    );
    let got = siphon_tests::sqs()
        .await
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let body: Value =
        serde_json::from_str(got.messages.unwrap()[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["loader_file_id"], json!(id));
}

#[tokio::test]
async fn loader_reports_only_the_unreadable_message_as_a_batch_item_failure() {
    let (_db, env, _) = isolated().await;
    let f = start_with("siphon-loader", &env);
    // The first message names a LoaderFile this database does not have: dropped, not retried.
    assert_eq!(
        invoke(&f, &event("sqs-loader-batch.json", false)).await,
        json!({"batchItemFailures": [{"itemIdentifier": "loader-msg-unreadable"}]})
    );
}

#[tokio::test]
async fn dump_streams_ndjson_through_the_emulator() {
    let (db, env, _) = isolated().await;
    for i in 0..3 {
        db.upsert(
            &siphon::ResourceType::parse("Patient").unwrap(),
            &format!("p{i}"),
            &json!({"active": true}),
        )
        .await
        .unwrap();
    }
    let f = start_with("siphon-dump", &env);
    let invoke_url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
        f.port
    );
    let ev = event("function-url-dump.json", true);
    let mut raw = Vec::new();
    for _ in 0..100 {
        match post_raw(&invoke_url, &ev).await {
            Ok(r) => {
                raw = r;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // A streamed Lambda response: JSON prelude (status, headers), 8 NUL bytes, the body.
    let split = raw
        .windows(8)
        .position(|w| w == [0u8; 8])
        .expect("streaming prelude");
    let prelude: Value = serde_json::from_slice(&raw[..split]).unwrap();
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "application/ndjson");
    let body = String::from_utf8(raw[split + 8..].to_vec()).unwrap();
    let mut ids: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["p0", "p1", "p2"]);
}
