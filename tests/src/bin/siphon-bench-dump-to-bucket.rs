//! `make bench-dump-to-bucket`: `aidbox.bulk/dump-to-bucket` against the two-step
//! baseline a person would script, measured in one run.
//!
//! 1. Loads realistic resources (default 1,000,000: 20% Patient, 60% Observation, 20%
//!    Encounter; `SIPHON_BENCH_RESOURCES` changes the count) into a fresh database.
//! 2. Baseline: for each type `psql \copy (select <resource as $dump writes it>) to` a
//!    file, then `aws s3 cp` of the files to LocalStack S3.
//! 3. siphon, as users run it: `make serve`'s binary (release siphon-local, its export
//!    workers on a fresh export queue) gets `POST /rpc` `aidbox.bulk/dump-to-bucket` over
//!    HTTP, once as gzip ndjson and once as Parquet; the clock stops when the job's
//!    status answers 200 (every file and the marker written to LocalStack S3), and the
//!    job's counts are checked. Its peak RSS is read from /proc.
//!
//! Rounds alternate (baseline, ndjson, Parquet, ...), best of each kept. Last line:
//! `bucket_ndjson_ratio=.. bucket_parquet_ratio=.. peak_rss_mb=..`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use siphon::storage::{Db, DbConfig};
use siphon_tests::bench::{
    admin, env_number, free_port, load_mix, peak_rss_kb, psql_copy_and_upload, serve,
};

/// One dump through the HTTP API until the job answers 200; returns seconds, rows and
/// bytes written.
async fn dump(port: u16, bucket: &str, prefix: &str, format: &str, gzip: bool) -> (f64, u64, u64) {
    let auth = admin();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = json!({"method": "aidbox.bulk/dump-to-bucket", "params": {
        "bucket": format!("s3://{bucket}/{prefix}"), "format": format, "gzip": gzip}});
    let start = Instant::now();
    let kick = siphon_tests::http(
        "POST",
        &format!("http://127.0.0.1:{port}/rpc"),
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(kick.status, 202, "{}", String::from_utf8_lossy(&kick.body));
    let job = kick.headers["content-location"].clone();
    loop {
        let got = siphon_tests::http("GET", &job, &headers[..1], b"").await;
        match got.status {
            202 => tokio::time::sleep(Duration::from_millis(100)).await,
            200 => {
                let secs = start.elapsed().as_secs_f64();
                let view: Value = serde_json::from_slice(&got.body).unwrap();
                assert_eq!(view["status"], "done", "{view}");
                let files = view["files"].as_array().unwrap();
                let rows = files.iter().map(|f| f["count"].as_u64().unwrap()).sum();
                let bytes = files.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
                return (secs, rows, bytes);
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&got.body)),
        }
    }
}

#[tokio::main]
async fn main() {
    let count = env_number("SIPHON_BENCH_RESOURCES", 1_000_000);
    let rounds = env_number("SIPHON_BENCH_ROUNDS", 2) as usize;
    let exporters = env_number("SIPHON_BENCH_EXPORTERS", 3);
    siphon_tests::use_local_aws();
    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    load_mix(&db, count).await;
    let bucket = siphon_tests::var("SIPHON_EXPORT_BUCKET");
    let port = free_port();
    let mut child = serve(&url, port, exporters, "bench-dump-to-bucket-serve.log").await;
    let dir = std::env::temp_dir().join("siphon-bench-dump-to-bucket");
    let (mut best_base, mut best_nd, mut best_pq) = (f64::MAX, f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let base = psql_copy_and_upload(&url, &bucket, &dir);
        let (nd, rows, _) = dump(port, &bucket, &format!("bench-nd-{round}"), "ndjson", true).await;
        assert_eq!(rows, count, "the ndjson dump wrote every resource once");
        let (pq, rows, _) = dump(
            port,
            &bucket,
            &format!("bench-pq-{round}"),
            "parquet",
            false,
        )
        .await;
        assert_eq!(rows, count, "the Parquet dump wrote every resource once");
        println!(
            "round {round}: psql \\copy + aws s3 cp {base:.2}s, gzip ndjson {nd:.2}s (ratio {:.3}), Parquet {pq:.2}s (ratio {:.3})",
            nd / base,
            pq / base
        );
        best_base = best_base.min(base);
        best_nd = best_nd.min(nd);
        best_pq = best_pq.min(pq);
    }
    let peak = peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "bucket_ndjson_ratio={:.3} bucket_parquet_ratio={:.3} peak_rss_mb={:.1}",
        best_nd / best_base,
        best_pq / best_base,
        peak as f64 / 1024.0
    );
}
