//! Secrets never leak: the flows that carry secrets, run in process against the real
//! local stack (Postgres, LocalStack S3 and SQS) with distinctive secret values, every
//! log line of every thread captured (JSON: every crate from debug up, siphon's from
//! trace). Fails if any secret (or the Basic header that carries it) appears in a
//! log line, an answer, any row of the database (LoaderFiles, sessions, exports, clients)
//! or an object siphon wrote (export files, the dump's completion marker).
//!
//! The secrets: the admin client's secret, a Client's secret, a wrong password tried
//! against both, the `account` secret keys of load-from-bucket and dump-to-bucket, an
//! `$import` session secret and a wrong one, and the database password (local.env's,
//! random, in every connection the functions open). They are expected in exactly one
//! place each: the request that carries them (and, for `account` keys, the queue message
//! that takes them to the worker, by design).

mod api_harness;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_harness::{basic, drain, drain_exports, setup_with, Env};
use base64::Engine;
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;
use siphon_tests::{connect, gen, put, var};

const ADMIN_SECRET: &str = "adm1n-Secret-7f3c9e2a41b8";
const CLIENT_SECRET: &str = "cl1ent-Secret-5d8e2b7c90a4";
const WRONG_PASSWORD: &str = "wr0ng-Guess-3a9f1c6e2d7b";
const LOAD_ACCOUNT_SECRET: &str = "l0adAccountSecretKey-8c2e4f6a1b3d";
const DUMP_ACCOUNT_SECRET: &str = "dumpAccountSecretKey-6b1d9e3f7a2c";
const SESSION_SECRET: &str = "sess10n-Secret-4e7a2c9b1f6d";
const WRONG_SESSION_SECRET: &str = "wr0ngSess10n-9d3b6f1a8e2c";

/// Every log line of the process, whatever thread wrote it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One request to the API, as API Gateway hands it over; its status and body text.
async fn send(
    env: &Env,
    method: &str,
    path: &str,
    auth: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String) {
    let (status, body, _) = send_with_headers(env, method, path, auth, headers, body).await;
    (status, body)
}

/// [`send`], with the answer's headers.
async fn send_with_headers(
    env: &Env,
    method: &str,
    path: &str,
    auth: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, lambda_http::http::HeaderMap) {
    let mut req = lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("authorization", auth);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req: Request = req
        .body(body.map_or(Body::Empty, |b| Body::Text(b.to_string())))
        .unwrap();
    // Boxed: the API's future is large in a debug build; the test thread's stack is not.
    let resp = Box::pin(siphon_api::handle(&env.app, req)).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (
        status,
        String::from_utf8_lossy(resp.body().as_ref()).to_string(),
        headers,
    )
}

/// Every row of every table of the database, as text.
async fn every_row(env: &Env) -> String {
    let client = connect(&env.db).await;
    let tables: Vec<String> = client
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
               FROM information_schema.tables
              WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut all = String::new();
    for table in &tables {
        for row in client
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap()
        {
            all.push_str(row.get::<_, &str>(0));
            all.push('\n');
        }
    }
    assert!(
        tables.iter().any(|t| t.ends_with("loaderfile")),
        "the scenarios wrote LoaderFiles: {tables:?}"
    );
    all
}

/// Every object in `bucket` under `prefix`, as text.
async fn every_object(env: &Env, bucket: &str, prefix: &str) -> String {
    let listed = env
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut all = String::new();
    for o in listed.contents() {
        let got = env
            .s3
            .get_object()
            .bucket(bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        all.push_str(o.key().unwrap());
        all.push_str(&String::from_utf8_lossy(&bytes));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_an_answer_a_row_or_a_file() {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = tracing_subscriber::EnvFilter::new(
        "debug,siphon=trace,siphon_api=trace,siphon_export=trace,siphon_local=trace",
    );
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("this test binary installs the only subscriber");

    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_ADMIN_CLIENT_SECRET", ADMIN_SECRET)
    })
    .await;
    let db_password = url::Url::parse(&var("DATABASE_URL"))
        .unwrap()
        .password()
        .expect("local.env's DATABASE_URL has a password")
        .to_string();
    assert!(
        db_password.len() >= 16,
        "a password distinctive enough to look for"
    );
    let admin = basic(&var("SIPHON_ADMIN_CLIENT_ID"), ADMIN_SECRET);
    let client = basic("leak-client", CLIENT_SECRET);
    let endpoint = var("AWS_ENDPOINT_URL");
    let mut answers = Vec::new();

    // PUT /: a Client and its policy, as in the seed's demo.
    let (s, b) = send(&env, "PUT", "/", &admin, &[], Some(json!([
        {"resourceType": "Client", "id": "leak-client", "secret": CLIENT_SECRET, "grant_types": ["basic"]},
        {"resourceType": "AccessPolicy", "id": "leak-client", "engine": "allow",
         "link": [{"id": "leak-client", "resourceType": "Client"}]}]))).await;
    assert!(s < 300, "{s} {b}");
    answers.push(b);
    let (s, b) = send(&env, "GET", "/Client/leak-client", &admin, &[], None).await;
    assert_eq!(s, 200, "{b}");
    answers.push(b);

    // The Client signs in once (remembered), then wrong credentials for it, the admin
    // and an unknown client until the failure budget answers 429; the Client keeps
    // working.
    let (s, b) = send(&env, "GET", "/LoaderFile", &client, &[], None).await;
    assert_eq!(s, 200, "{b}");
    let mut statuses = Vec::new();
    for id in [
        "leak-client",
        &var("SIPHON_ADMIN_CLIENT_ID"),
        "no-such-client",
    ] {
        for _ in 0..12 {
            let (s, b) = send(
                &env,
                "GET",
                "/LoaderFile",
                &basic(id, WRONG_PASSWORD),
                &[],
                None,
            )
            .await;
            statuses.push(s);
            answers.push(b);
        }
    }
    assert!(
        statuses.contains(&401) && statuses.contains(&429),
        "{statuses:?}"
    );

    // load-from-bucket with an explicit account, as the Client.
    put(
        &env.s3,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 20, 1)),
    )
    .await;
    let (s, b) = send(
        &env,
        "POST",
        "/rpc",
        &client,
        &[],
        Some(json!({
        "method": "aidbox.bulk/load-from-bucket",
        "params": {"bucket": format!("s3://{}", env.bucket), "endpoint-url": endpoint,
                   "account": {"access-key-id": var("AWS_ACCESS_KEY_ID"),
                               "secret-access-key": LOAD_ACCOUNT_SECRET, "region": "us-east-1"}}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    answers.push(b);
    drain(&env.worker, &env.queue).await;
    let (s, b) = send(&env, "GET", "/LoaderFile", &client, &[], None).await;
    assert_eq!(s, 200);
    assert!(b.contains("\"done\""), "the file loaded: {b}");
    answers.push(b);

    // An $import session with a secret: start, a wrong secret, pause, resume, its status.
    put(
        &env.s3,
        &env.bucket,
        "s/Encounter.ndjson.gz",
        gen::gzip(&gen::ndjson("Encounter", 10, 2)),
    )
    .await;
    let (s, b) = send(&env, "POST", "/$import", &client, &[], Some(json!({"resource": {
        "id": "leak-session", "secret": SESSION_SECRET, "inputFormat": "application/fhir+ndjson",
        "inputs": [{"type": "Encounter", "url": format!("s3://{}/s/Encounter.ndjson.gz", env.bucket)}]}}))).await;
    assert_eq!(s, 201, "{b}");
    answers.push(b);
    for (secret, want) in [(WRONG_SESSION_SECRET, 403), (SESSION_SECRET, 200)] {
        let (s, b) = send(
            &env,
            "POST",
            "/$import",
            &client,
            &[],
            Some(json!({"resource": {
            "id": "leak-session", "action": "pause", "secret": secret}})),
        )
        .await;
        assert!(s == want || (want == 200 && s == 406), "{s} {b}");
        answers.push(b);
    }
    let (_, b) = send(
        &env,
        "POST",
        "/$import",
        &client,
        &[],
        Some(json!({"resource": {
        "id": "leak-session", "action": "resume", "secret": SESSION_SECRET}})),
    )
    .await;
    answers.push(b);
    drain(&env.worker, &env.queue).await;
    let (_, b) = send(&env, "GET", "/$import/leak-session", &client, &[], None).await;
    answers.push(b);

    // $export: kick-off, then the manifest.
    let fhir = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    let (s, b, h) =
        send_with_headers(&env, "GET", "/$export?_type=Patient", &client, &fhir, None).await;
    assert_eq!(s, 202, "{b}");
    answers.push(b);
    let status_path = h["content-location"]
        .to_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:8080")
        .to_string();
    let started = Instant::now();
    let manifest = loop {
        drain_exports(&env).await;
        let (s, b) = send(&env, "GET", &status_path, &client, &[], None).await;
        if s != 202 {
            assert_eq!(s, 200, "{b}");
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "export never completed"
        );
    };
    assert!(manifest.contains("\"output\""), "{manifest}");
    answers.push(manifest);

    // dump-to-bucket into another bucket with an explicit account.
    let target = siphon_tests::fresh_bucket(&env.s3).await;
    let (s, b) = send(&env, "POST", "/rpc", &client, &[], Some(json!({
        "method": "aidbox.bulk/dump-to-bucket",
        "params": {"bucket": format!("s3://{target}/out"), "types": ["Patient"], "endpoint-url": endpoint,
                   "account": {"access-key-id": var("AWS_ACCESS_KEY_ID"),
                               "secret-access-key": DUMP_ACCOUNT_SECRET, "region": "us-east-1"}}}))).await;
    assert_eq!(s, 202, "{b}");
    answers.push(b.clone());
    let job = serde_json::from_str::<Value>(&b).unwrap()["result"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    loop {
        drain_exports(&env).await;
        let (s, b) = send(
            &env,
            "GET",
            &format!("/$dump-to-bucket/{job}"),
            &client,
            &[],
            None,
        )
        .await;
        answers.push(b);
        if s != 202 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "dump never completed"
        );
    }

    // Where the secrets must not be.
    let rows = every_row(&env).await;
    let files = every_object(&env, &target, "").await;
    assert!(
        files.contains("_siphon_loads/"),
        "the dump wrote its files and marker"
    );
    // The export bucket is shared by every test (and benchmark): this export's files.
    let export_id = status_path.rsplit('/').next().unwrap();
    let exported = every_object(&env, &var("SIPHON_EXPORT_BUCKET"), &format!("{export_id}/")).await;
    assert!(
        exported.contains("Patient-1-001.ndjson"),
        "the export's file was read"
    );
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("load-from-bucket") || logs.contains("loaded"),
        "the logs were captured"
    );
    let b64 =
        |id: &str, s: &str| base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"));
    let admin_id = var("SIPHON_ADMIN_CLIENT_ID");
    let secrets = [
        ("the admin secret", ADMIN_SECRET.to_string()),
        ("the admin's Basic header", b64(&admin_id, ADMIN_SECRET)),
        ("the Client's secret", CLIENT_SECRET.to_string()),
        (
            "the Client's Basic header",
            b64("leak-client", CLIENT_SECRET),
        ),
        ("a wrong password", WRONG_PASSWORD.to_string()),
        (
            "a wrong password's Basic header",
            b64("leak-client", WRONG_PASSWORD),
        ),
        (
            "load-from-bucket's account key",
            LOAD_ACCOUNT_SECRET.to_string(),
        ),
        (
            "dump-to-bucket's account key",
            DUMP_ACCOUNT_SECRET.to_string(),
        ),
        ("the session secret", SESSION_SECRET.to_string()),
        ("a wrong session secret", WRONG_SESSION_SECRET.to_string()),
        ("the database password", db_password),
    ];
    let places = [
        (
            "a log line",
            logs.lines().map(str::to_string).collect::<Vec<_>>(),
        ),
        ("an answer", answers),
        ("a database row", rows.lines().map(str::to_string).collect()),
        ("a dump-to-bucket object", vec![files]),
        ("an $export file", vec![exported]),
    ];
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for (place, texts) in &places {
            if let Some(t) = texts.iter().find(|t| t.contains(secret.as_str())) {
                leaks.push(format!("{what} in {place}: {}", &t[..t.len().min(300)]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
