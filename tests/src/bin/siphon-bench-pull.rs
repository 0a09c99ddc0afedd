//! `make bench-pull`: a pull import (`$import-pnp`) from one siphon into another, against
//! the two-step a person scripts today, measured in one run.
//!
//! 1. The remote: `make serve`'s binary on a database of realistic resources (default
//!    500,000: 20% Patient, 60% Observation, 20% Encounter; `SIPHON_BENCH_RESOURCES`).
//! 2. The puller: a second `make serve` binary on an empty database, the remote
//!    allow-listed, two loaders (both ways load two files at once) and one export
//!    worker (the pull's planning).
//! 3. siphon: `POST /$import-pnp` to the puller naming the remote's `$export` (HTTP Basic
//!    with the remote's admin credential); the clock stops when the session is `done`.
//!    The remote's export, the download and the load overlap.
//! 4. Two-step: the same `$export` read as a Bulk Data client does (kick-off, polling),
//!    every file downloaded with `curl` to local files, copied to a bucket with
//!    `aws s3 cp`, then `load-from-bucket` of them into the puller's emptied tables; the
//!    clock stops when every row is in.
//!
//! Rounds alternate (two-step, siphon), the tables emptied before each, best of each
//! kept; every round's rows are counted. Last line:
//! `pull_ratio=<siphon/two-step> resources_per_s=<n> peak_rss_mb=<n>` (the puller's
//! process, API and workers together).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use siphon::storage::{Db, DbConfig};
use siphon_tests::bench::{
    admin, env_number, export_over_http, free_port, load_mix, manifest_count, peak_rss_kb, serve,
    serve_binary_with, server_binary, TYPES,
};

/// Rows of the bench's types in `db`.
async fn rows(db: &Db) -> u64 {
    let c = siphon_tests::connect(db).await;
    let mut n = 0;
    for (ty, _) in TYPES {
        let table = ty.to_ascii_lowercase();
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .unwrap()
            .get(0);
        if exists {
            let k: i64 = c
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get(0);
            n += k as u64;
        }
    }
    n
}

/// Empties the puller's tables and its LoaderFiles (load-from-bucket skips files it has
/// a LoaderFile for).
async fn empty(db: &Db) {
    let c = siphon_tests::connect(db).await;
    for table in ["patient", "observation", "encounter", "loaderfile"] {
        let _ = c.batch_execute(&format!("TRUNCATE {table}")).await;
    }
}

async fn post(
    port: u16,
    path: &str,
    body: &Value,
) -> (u16, Value, std::collections::HashMap<String, String>) {
    let auth = admin();
    let got = siphon_tests::http(
        "POST",
        &format!("http://127.0.0.1:{port}{path}"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/fhir+json"),
            ("prefer", "respond-async"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    let value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
    (got.status, value, got.headers)
}

/// siphon's pull: seconds until the session is done.
async fn pull(remote: u16, puller: u16, db: &Db, count: u64) -> f64 {
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "exportUrl", "valueUrl": format!("http://127.0.0.1:{remote}/$export")},
        {"name": "auth", "part": [
            {"name": "type", "valueCode": "basic"},
            {"name": "username", "valueString": siphon_tests::var("SIPHON_ADMIN_CLIENT_ID")},
            {"name": "password", "valueString": siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET")}]}]});
    let start = Instant::now();
    let (status, answer, _) = post(puller, "/$import-pnp", &body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let auth = admin();
    loop {
        let got = siphon_tests::http(
            "GET",
            &format!("http://127.0.0.1:{puller}/$import/{id}"),
            &[("authorization", auth.as_str())],
            b"",
        )
        .await;
        match got.status {
            202 => tokio::time::sleep(Duration::from_millis(100)).await,
            200 => {
                let secs = start.elapsed().as_secs_f64();
                let v: Value = serde_json::from_slice(&got.body).unwrap();
                assert_eq!(v["status"], "done", "{v}");
                assert_eq!(v["loaded"].as_u64(), Some(count), "{v}");
                assert_eq!(rows(db).await, count);
                return secs;
            }
            other => panic!("session: {other} {}", String::from_utf8_lossy(&got.body)),
        }
    }
}

/// The two-step: a Bulk Data download to local files, then load-from-bucket of them.
async fn two_step(remote: u16, puller: u16, db: &Db, count: u64, round: usize) -> f64 {
    let dir = std::env::temp_dir().join("siphon-bench-pull");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let start = Instant::now();
    let (_, manifest) = export_over_http(remote, "").await;
    assert_eq!(manifest_count(&manifest), count);
    for (i, file) in manifest["output"].as_array().unwrap().iter().enumerate() {
        let path = dir.join(format!("{}-{i}.ndjson", file["type"].as_str().unwrap()));
        let status = Command::new("curl")
            .args(["-sSf", "-o"])
            .arg(&path)
            .arg(file["url"].as_str().unwrap())
            .status()
            .expect("curl");
        assert!(status.success());
    }
    let bucket = siphon_tests::var("SIPHON_EXPORT_BUCKET");
    let prefix = format!("bench-pull/{round}/");
    let aws = siphon_tests::repo_root().join("infra/local/.venv-localstack/bin/aws");
    let status = Command::new(aws)
        .args(["s3", "cp", "--recursive", "--quiet"])
        .arg(&dir)
        .arg(format!("s3://{bucket}/{prefix}"))
        .args(["--endpoint-url", &siphon_tests::var("AWS_ENDPOINT_URL")])
        .status()
        .expect("aws s3 cp");
    assert!(status.success());
    let (status, answer, _) = post(
        puller,
        "/rpc",
        &json!({"method": "aidbox.bulk/load-from-bucket",
                "params": {"bucket": format!("s3://{bucket}/{prefix}"), "glob": "**/*.ndjson", "thread-num": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let waited = Instant::now();
    while rows(db).await < count {
        assert!(
            waited.elapsed() < Duration::from_secs(1800),
            "the load did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    secs
}

#[tokio::main]
async fn main() {
    let count = env_number("SIPHON_BENCH_RESOURCES", 500_000);
    let rounds = env_number("SIPHON_BENCH_ROUNDS", 2) as usize;
    siphon_tests::use_local_aws();
    let remote_url = siphon_tests::fresh_db_url().await;
    let remote_db = Db::new(DbConfig::from_url(&remote_url).unwrap());
    load_mix(&remote_db, count).await;
    let remote_port = free_port();
    let mut remote = serve(&remote_url, remote_port, 2, "bench-pull-remote.log").await;

    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    let port = free_port();
    let allow = format!("127.0.0.1:4566,127.0.0.1:{remote_port}");
    let mut puller = serve_binary_with(
        &server_binary(),
        &url,
        port,
        2,
        1,
        "bench-pull-puller.log",
        &[("SIPHON_URL_ALLOWLIST", &allow)],
    )
    .await;

    let (mut best_two, mut best_pull) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        empty(&db).await;
        let two = two_step(remote_port, port, &db, count, round).await;
        empty(&db).await;
        let pulled = pull(remote_port, port, &db, count).await;
        println!(
            "round {round}: two-step (Bulk Data download with curl + aws s3 cp + load-from-bucket) {two:.2}s, \
             siphon $import-pnp {pulled:.2}s (ratio {:.3})",
            pulled / two
        );
        best_two = best_two.min(two);
        best_pull = best_pull.min(pulled);
    }
    let peak = peak_rss_kb(puller.id());
    for child in [&mut puller, &mut remote] {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "pull_ratio={:.3} resources_per_s={:.0} peak_rss_mb={:.1}",
        best_pull / best_two,
        count as f64 / best_pull,
        peak as f64 / 1024.0
    );
}
