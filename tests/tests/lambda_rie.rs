//! The built bootstraps as Lambda runs them: each binary under the official runtime
//! interface emulator (shipped in the aws-sam-cli package, installed by
//! `infra/check-template.sh`), invoked with an event in AWS's shape.

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

/// The executable to run as `binary`: the dev build, or with `SIPHON_BOOTSTRAPS=sam` the
/// release artefact `sam build` made (`.aws-sam/build/<LogicalId>/bootstrap`: the bytes
/// a deployment uploads; `make test` runs this file both ways).
fn bootstrap(binary: &str) -> std::path::PathBuf {
    let bin = if std::env::var("SIPHON_BOOTSTRAPS").as_deref() == Ok("sam") {
        let logical_id = match binary {
            "siphon-api" => "ApiFunction",
            "siphon-s3-ingest" => "S3IngestFunction",
            "siphon-loader" => "LoaderFunction",
            "siphon-dump" => "DumpFunction",
            "siphon-sweep" => "SweepFunction",
            "siphon-export" => "ExportFunction",
            other => panic!("{other} is not a function of template.yaml"),
        };
        repo_root()
            .join(".aws-sam/build")
            .join(logical_id)
            .join("bootstrap")
    } else {
        std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"))
            .join("debug")
            .join(binary)
    };
    assert!(
        bin.exists(),
        "{} is missing: make test builds it (cargo build --workspace --bins; \
         infra/build-lambdas.sh for SIPHON_BOOTSTRAPS=sam)",
        bin.display()
    );
    bin
}

fn start(binary: &str) -> Emulated {
    start_with(binary, &[])
}

fn start_with(binary: &str, extra_env: &[(&str, String)]) -> Emulated {
    start_logged(binary, extra_env, None)
}

fn start_logged(
    binary: &str,
    extra_env: &[(&str, String)],
    log: Option<&std::path::Path>,
) -> Emulated {
    let rie = repo_root().join(
        "infra/.venv-sam/lib/python3.11/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64",
    );
    assert!(
        rie.exists(),
        "{} is missing: run infra/check-template.sh (make test does)",
        rie.display()
    );
    let bin = bootstrap(binary);
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
        .stdout(
            log.map(|p| Stdio::from(std::fs::File::create(p).unwrap()))
                .unwrap_or(Stdio::null()),
        )
        .stderr(
            log.map(|p| Stdio::from(std::fs::File::options().append(true).open(p).unwrap()))
                .unwrap_or(Stdio::null()),
        )
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
    let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
    let mut body = &out[at + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    // Chunked (a streamed response): size line, data, CRLF, ... until size 0.
    let mut decoded = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(decoded);
        }
        decoded.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
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
    let queue = siphon_tests::fresh_queue(&sqs).await;
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
async fn api_starts_an_import_session_and_queues_each_input() {
    let (db, mut env, queue) = isolated().await;
    env.push(("SIPHON_IMPORT_BUCKET", "siphon-samples".into()));
    env.push(("SIPHON_IMPORT_PREFIX", "imports".into()));
    let api = start_with("siphon-api", &env);
    let out = invoke(&api, &event("api-import-start.json", true)).await;
    assert_eq!(out["statusCode"], 201, "{out}");
    assert_eq!(
        out["headers"]["content-location"],
        "/$import/imp-siphon-samples-1"
    );
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(
        (
            body["inputs"][0]["url"].as_str(),
            body["inputs"][1]["url"].as_str()
        ),
        (
            Some("s3://siphon-samples/Patient.ndjson.gz"),
            Some("s3://siphon-samples/imports/Encounter.ndjson.gz")
        ),
        "{body}"
    );
    assert!(
        !out["body"].as_str().unwrap().contains("CHANGE_ME"),
        "the secret never comes back"
    );
    // Both inputs are LoaderFiles of the session, each with its message on the queue.
    let files: i64 = siphon_tests::connect(&db)
        .await
        .query_one(
            "SELECT count(*) FROM loaderfile WHERE resource->>'import' = 'imp-siphon-samples-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(files, 2);
    let sqs = siphon_tests::sqs().await;
    let mut got = 0;
    for _ in 0..5 {
        got += receive(&sqs, &queue).await.len();
        if got >= 2 {
            break;
        }
    }
    assert_eq!(got, 2);
    // The same event again: the id exists.
    let again = invoke(&api, &event("api-import-start.json", true)).await;
    assert_eq!(again["statusCode"], 409, "{again}");
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
    let id = siphon::model::loader_file::file_id(&siphon::sources::ObjectLocation::new(
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

/// Receives what is on a queue (up to 10 messages).
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

/// What Lambda's SQS event source mapping does: invoke with the batch, delete the
/// messages not reported as failed. Returns how many were received.
async fn event_source_mapping(sqs: &aws_sdk_sqs::Client, url: &str, f: &Emulated) -> usize {
    let messages = receive(sqs, url).await;
    if messages.is_empty() {
        return 0;
    }
    let event = json!({"Records": siphon_local::to_records(&messages)});
    let out = invoke(f, &event).await;
    let failed: Vec<String> = out["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    for m in &messages {
        if !failed.contains(m.message_id.as_ref().unwrap()) {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    messages.len()
}

/// The cold start as the emulator logs it: `INIT REPORT(durationMs: ..)` (the whole init
/// phase), else the `Init Duration` of the first REPORT line.
fn init_duration_ms(log: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    for marker in ["INIT REPORT(durationMs: ", "Init Duration: "] {
        if let Some(at) = text.find(marker) {
            let rest = &text[at + marker.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            return rest[..end].parse().ok();
        }
    }
    None
}

#[tokio::test]
async fn end_to_end_upload_notification_queue_loader_and_dump_through_the_emulator() {
    let (db, mut env, load_queue) = isolated().await;
    let s3 = siphon_tests::s3().await;
    let sqs = siphon_tests::sqs().await;
    // Its own bucket and events queue, wired like the template wires them.
    let bucket = siphon_tests::fresh_bucket(&s3).await;
    let events_name = format!(
        "siphon-test-ev-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let events = sqs
        .create_queue()
        .queue_name(&events_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let events_arn = sqs
        .get_queue_attributes()
        .queue_url(&events)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    use aws_sdk_s3::types::*;
    let rule = FilterRule::builder()
        .name(FilterRuleName::Suffix)
        .value(".ndjson.gz")
        .build();
    let config = QueueConfiguration::builder()
        .queue_arn(events_arn)
        .events(Event::S3ObjectCreated)
        .filter(
            NotificationConfigurationFilter::builder()
                .key(S3KeyFilter::builder().filter_rules(rule).build())
                .build(),
        )
        .build()
        .unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(config)
                .build(),
        )
        .send()
        .await
        .unwrap();
    env.push(("SIPHON_EVENTS_QUEUE_URL", events.clone()));
    let dir = std::env::temp_dir().join(format!("siphon-rie-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ingest = start_logged("siphon-s3-ingest", &env, Some(&dir.join("ingest.log")));
    let loader = start_logged("siphon-loader", &env, Some(&dir.join("loader.log")));
    let dump = start_logged("siphon-dump", &env, Some(&dir.join("dump.log")));
    let api = start_logged("siphon-api", &env, Some(&dir.join("api.log")));
    // Upload -> S3 notification -> events queue -> s3-ingest -> load queue -> loader.
    let lines = siphon_tests::gen::ndjson("Encounter", 700, 8);
    siphon_tests::put(
        &s3,
        &bucket,
        "incoming/Encounter-2026.ndjson.gz",
        siphon_tests::gen::gzip(&lines),
    )
    .await;
    let start = Instant::now();
    let id = siphon::model::loader_file::file_id(&siphon::sources::ObjectLocation::new(
        &bucket,
        "incoming/Encounter-2026.ndjson.gz",
    ));
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not loaded in time"
        );
        event_source_mapping(&sqs, &events, &ingest).await;
        event_source_mapping(&sqs, &load_queue, &loader).await;
        if db
            .loader_file(&id)
            .await
            .unwrap()
            .is_some_and(|f| f.status == siphon::model::loader_file::FileStatus::Done)
        {
            break;
        }
    }
    let file = db.loader_file(&id).await.unwrap().unwrap();
    assert_eq!((file.loaded, file.failed), (700, 0));
    // The API function reports it (load-from-bucket-status, in YAML).
    let status = invoke(&api, &event("api-rpc-yaml.json", true)).await;
    assert_eq!(status["statusCode"], 200, "{status}");
    let body = status["body"].as_str().unwrap();
    assert!(
        body.contains("done: 1") && body.contains("loaded: 700"),
        "{body}"
    );
    // Dump through the dump function: the same resources come back.
    let mut ev = event("function-url-dump.json", true);
    ev["rawPath"] = json!("/Encounter/$dump");
    ev["rawQueryString"] = json!("");
    ev["requestContext"]["http"]["path"] = json!("/Encounter/$dump");
    let raw = post_raw(
        &format!(
            "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
            dump.port
        ),
        &ev,
    )
    .await
    .unwrap();
    let split = raw.windows(8).position(|w| w == [0u8; 8]).unwrap();
    let mut got: Vec<Value> = std::str::from_utf8(&raw[split + 8..])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut want: Vec<Value> = std::str::from_utf8(&lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = |v: &Value| v["id"].as_str().unwrap().to_string();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    // The figures each function recorded, as CloudWatch would read them from its log:
    // EMF documents in namespace siphon, dimensions Function and Operation.
    let loaded = emf_values(&dir.join("loader.log"), "load", "ResourcesLoaded").await;
    assert_eq!(loaded, vec![700.0], "one file's end, its totals once");
    // (recorded when the stream is dropped, which may come just after the last byte)
    let rows = emf_values(&dir.join("dump.log"), "dump", "Rows").await;
    assert_eq!(rows, vec![700.0]);
    // Cold starts, as the emulator reports them (printed, not asserted: timings are noisy).
    for (name, log) in [
        ("siphon-s3-ingest", "ingest.log"),
        ("siphon-loader", "loader.log"),
        ("siphon-dump", "dump.log"),
        ("siphon-api", "api.log"),
    ] {
        let init = init_duration_ms(&dir.join(log));
        assert!(
            init.is_some(),
            "{name}: the emulator reported no Init Duration"
        );
        println!("init_duration_ms {name}={:.2}", init.unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sweep_requeues_a_stalled_file_through_the_emulator() {
    let (db, mut env, queue) = isolated().await;
    env.push(("SIPHON_SWEEP_PASSES", "1".into()));
    // A file whose worker died: in progress, its lease over, no message to redeliver.
    let loc = siphon::model::ObjectLocation::new("siphon-samples", "Patient.ndjson.gz");
    let (file, _) = db
        .create_loader_file(&siphon::model::LoaderFile::pending(
            &loc,
            None,
            None,
            Default::default(),
        ))
        .await
        .unwrap();
    siphon_tests::connect(&db)
        .await
        .execute(
            "UPDATE loaderfile SET resource = resource || jsonb_build_object('status', 'in-progress',
                'lease', jsonb_build_object('owner', 'dead', 'until', now() - interval '1 minute'))
             WHERE id = $1",
            &[&file.id],
        )
        .await
        .unwrap();
    let sweep = start_with("siphon-sweep", &env);
    let out = invoke(&sweep, &event("scheduled-sweep.json", false)).await;
    assert_eq!(out["passes"][0]["requeued"], 1, "{out}");
    let sqs = siphon_tests::sqs().await;
    let got = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let body = got.messages()[0].body().unwrap();
    assert!(body.contains(&file.id), "{body}");
    let f = db.loader_file(&file.id).await.unwrap().unwrap();
    assert_eq!(f.recovery.unwrap().how, "requeued");
}

#[tokio::test]
async fn export_runs_a_task_through_the_emulator() {
    let (db, mut env, _) = isolated().await;
    let sqs = siphon_tests::sqs().await;
    let export_queue = siphon_tests::fresh_queue(&sqs).await;
    env.push(("SIPHON_EXPORT_QUEUE_URL", export_queue.clone()));
    let patient = siphon::ResourceType::parse("Patient").unwrap();
    for n in 0..25 {
        db.upsert(
            &patient,
            &format!("p-{n}"),
            &serde_json::json!({"gender": "other"}),
        )
        .await
        .unwrap();
    }
    // Kick off as the API would, keeping the task message instead of sending it.
    let bucket = siphon_tests::var("SIPHON_EXPORT_BUCKET");
    let queue = std::sync::Arc::new(siphon::queue::MemoryQueue::default());
    let exports = siphon::exporting::Exports {
        db: db.clone(),
        queue: queue.clone(),
        sink: std::sync::Arc::new(siphon::sinks::s3::S3Sink::new(
            siphon_tests::s3().await,
            &bucket,
        )),
        config: siphon::exporting::ExportConfig {
            bucket: bucket.clone(),
            ..Default::default()
        },
    };
    let request = siphon::exporting::request::parse(siphon::exporting::request::KickOff {
        post: false,
        level: siphon::exporting::request::Level::System,
        // What a Bulk Data client sends (the kick-off requires both).
        accept: Some("application/fhir+json"),
        prefer: vec!["respond-async"],
        query: vec![("_type".into(), "Patient".into())],
        body: None,
        now: chrono::Utc::now(),
    })
    .unwrap();
    let export = exports
        .kick_off(
            request,
            &siphon::auth::Principal::admin("admin"),
            "http://127.0.0.1:8080/$export?_type=Patient",
        )
        .await
        .unwrap();
    let (body, _) = queue.take().remove(0);
    let event = json!({"Records": [{"messageId": "m-1", "receiptHandle": "r-1", "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:siphon-export",
        "awsRegion": "us-east-1", "md5OfBody": ""}]});
    let worker = start_with("siphon-export", &env);
    let out = invoke(&worker, &event).await;
    assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    let stored = db.export(&export.id).await.unwrap().unwrap();
    assert_eq!(stored.status, siphon::model::export::ExportStatus::Done);
    let tasks = db.export_tasks(&export.id).await.unwrap();
    let file = &tasks[0].checkpoint.files[0];
    assert_eq!(file.count, 25);
    let head = siphon_tests::s3()
        .await
        .head_object()
        .bucket(&bucket)
        .key(&file.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/fhir+ndjson"));
}

/// The values of metric `name` in the EMF documents of `operation` a function printed
/// to its log; each document is checked as CloudWatch reads it (the directive names the
/// metric and its dimensions, and each is a member of the document). Waits (up to 10 s)
/// for the first.
async fn emf_values(log: &std::path::Path, operation: &str, name: &str) -> Vec<f64> {
    let start = Instant::now();
    loop {
        let values = emf_values_now(log, operation, name);
        if !values.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return values;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn emf_values_now(log: &std::path::Path, operation: &str, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut values = Vec::new();
    for line in text.lines() {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(directive) = doc["_aws"]["CloudWatchMetrics"].get(0) else {
            continue;
        };
        assert_eq!(directive["Namespace"], "siphon", "{line}");
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some(), "{line}");
        for dims in directive["Dimensions"].as_array().unwrap() {
            for d in dims.as_array().unwrap() {
                assert!(doc[d.as_str().unwrap()].is_string(), "{d} in {line}");
            }
        }
        let named = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == name);
        if doc["Operation"] == operation && named {
            values.push(doc[name].as_f64().unwrap());
        }
    }
    values
}

/// Waits (up to 10 s) until the emulator listens: what is timed after it is the function.
async fn until_listening(e: &Emulated) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", e.port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the emulator did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The streamed answer of a response-streaming function: its prelude and body.
async fn invoke_streamed(e: &Emulated, event: &Value) -> (Value, String) {
    let url = format!(
        "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
        e.port
    );
    let raw = post_raw(&url, event).await.expect("invoke");
    let split = raw
        .windows(8)
        .position(|w| w == [0u8; 8])
        .expect("streaming prelude");
    let prelude: Value = serde_json::from_slice(&raw[..split]).unwrap();
    (
        prelude,
        String::from_utf8_lossy(&raw[split + 8..]).into_owned(),
    )
}

/// An invocation: a plain answer, or a response-streaming function's (as
/// `{"statusCode", "body"}`).
enum Call {
    Plain(Value),
    Streamed(Value),
}

impl Call {
    async fn on(&self, f: &Emulated) -> Value {
        match self {
            Call::Plain(ev) => invoke(f, ev).await,
            Call::Streamed(ev) => {
                let (prelude, body) = invoke_streamed(f, ev).await;
                json!({"statusCode": prelude["statusCode"], "body": body})
            }
        }
    }
}

/// What a function's answer must be.
type Check = Box<dyn Fn(&Value)>;

/// One function's first invocation after the emulator listens (the emulator starts the
/// bootstrap on it: process start, init, the handler, its first database connection
/// and AWS clients), then a second one (warm); each answer checked by `check`.
async fn first_and_warm(
    name: &str,
    env: &[(&str, String)],
    call: Call,
    check: impl Fn(&Value),
) -> (f64, f64) {
    let f = start_with(name, env);
    until_listening(&f).await;
    let cold = Instant::now();
    let first = call.on(&f).await;
    let cold = cold.elapsed().as_secs_f64() * 1000.0;
    check(&first);
    let warm = Instant::now();
    let second = call.on(&f).await;
    let warm = warm.elapsed().as_secs_f64() * 1000.0;
    check(&second);
    (cold, warm)
}

#[tokio::test]
async fn every_function_answers_its_first_invocation() {
    let (db, mut env, _) = isolated().await;
    env.push(("SIPHON_SWEEP_PASSES", "1".into()));
    let sqs = siphon_tests::sqs().await;
    env.push((
        "SIPHON_EXPORT_QUEUE_URL",
        siphon_tests::fresh_queue(&sqs).await,
    ));
    db.upsert(
        &siphon::ResourceType::parse("Patient").unwrap(),
        "p0",
        &json!({"active": true}),
    )
    .await
    .unwrap();
    // A task message of an export this database does not have: dropped, not retried.
    let export_event = json!({"Records": [{"messageId": "m-1", "receiptHandle": "r-1",
        "body": json!({"task": "no-such-export/0"}).to_string(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:siphon-export",
        "awsRegion": "us-east-1", "md5OfBody": ""}]});
    let plain = |name: &str, authorized: bool| Call::Plain(event(name, authorized));
    let mut figures = Vec::new();
    let cases: Vec<(&str, Call, Check)> = vec![
        (
            "siphon-api",
            plain("api-rpc-yaml.json", true),
            Box::new(|out| assert_eq!(out["statusCode"], 200, "{out}")),
        ),
        (
            "siphon-s3-ingest",
            plain("s3-object-created-urlencoded.json", false),
            Box::new(|out| assert_eq!(out, &json!({"status": "ok"}))),
        ),
        (
            "siphon-loader",
            plain("sqs-loader-batch.json", false),
            Box::new(|out| {
                assert_eq!(
                    out["batchItemFailures"][0]["itemIdentifier"], "loader-msg-unreadable",
                    "{out}"
                )
            }),
        ),
        (
            "siphon-export",
            Call::Plain(export_event),
            Box::new(|out| assert_eq!(out["batchItemFailures"], json!([]), "{out}")),
        ),
        (
            "siphon-sweep",
            plain("scheduled-sweep.json", false),
            Box::new(|out| assert_eq!(out["passes"][0]["requeued"], 0, "{out}")),
        ),
        (
            "siphon-dump",
            Call::Streamed(event("function-url-dump.json", true)),
            Box::new(|out| {
                assert_eq!(out["statusCode"], 200, "{out}");
                assert!(out["body"].as_str().unwrap().contains("\"p0\""), "{out}");
            }),
        ),
    ];
    for (name, call, check) in cases {
        figures.push((name, first_and_warm(name, &env, call, check).await));
    }
    // Printed, not asserted: timings are noisy (docs/performance.md has the figures).
    for (name, (cold, warm)) in figures {
        println!("first_invocation_ms {name}={cold:.1} warm_ms={warm:.1}");
    }
}
