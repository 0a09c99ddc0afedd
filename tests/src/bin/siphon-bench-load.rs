//! `make bench-load`: siphon's loader against bare `psql \copy`, measured in one run.
//!
//! 1. Generates a realistic Patient file (default 100,000 resources, >= 100 MB
//!    uncompressed; `SIPHON_BENCH_RESOURCES` changes the count) and puts it in LocalStack S3.
//! 2. Baseline: the same rows pre-extracted to `(id, txid, resource_type, status,
//!    resource)` in COPY text format, loaded with `psql \copy` into a table of the same
//!    schema (the single-stream Postgres limit on this machine).
//! 3. siphon: a child process runs the loader on the S3 object (gunzip, parse, validate,
//!    COPY, checkpoints) until the rows are committed; it reports its own peak RSS.
//!
//! Rounds alternate (baseline, siphon, baseline, siphon, ...) and the best of each is kept.
//! The last line is `load_ratio=.. resources_per_s=.. mb_per_s=.. peak_rss_mb=..`.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::sources::s3::S3Source;
use siphon::sources::ObjectLocation;
use siphon::storage::{Db, DbConfig};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Child mode: `siphon-bench-load --load <db-url> <bucket> <key>`: load once, print
/// `seconds rss_kb`.
async fn child(url: &str, bucket: &str, key: &str) {
    let db = Db::new(DbConfig::from_url(url).unwrap());
    let s3 = siphon_tests::s3().await;
    let loc = ObjectLocation::new(bucket, key);
    let pending = LoaderFile::pending(&loc, None, None, FileOptions::default());
    db.delete_loader_file(&pending.id).await.unwrap();
    db.create_loader_file(&pending).await.unwrap();
    let loader = Loader::new(
        db.clone(),
        Arc::new(S3Source::new(s3)),
        LoadOptions::default(),
    );
    let start = Instant::now();
    let outcome = loader.load(&pending.id, None).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(
        matches!(outcome, Outcome::Done { failed: 0, .. }),
        "{outcome:?}"
    );
    println!("{secs} {}", peak_rss_kb());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--load") {
        return child(&args[2], &args[3], &args[4]).await;
    }
    let count: u64 = std::env::var("SIPHON_BENCH_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("SIPHON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let work = std::env::temp_dir().join(format!("siphon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();

    // 1. the file
    let gz_path = work.join("Patient.ndjson.gz");
    let tsv_path = work.join("patient.copy");
    let raw_bytes = siphon_tests::gen::write_gz(
        std::fs::File::create(&gz_path).unwrap(),
        "Patient",
        count,
        42,
    )
    .unwrap();
    {
        let mut tsv = std::io::BufWriter::new(std::fs::File::create(&tsv_path).unwrap());
        let mut line = Vec::new();
        for n in 0..count {
            line.clear();
            serde_json::to_writer(&mut line, &siphon_tests::gen::resource("Patient", n, 42))
                .unwrap();
            let id = siphon_tests::gen::id_of("Patient", n);
            write!(tsv, "{id}\t1\tPatient\tcreated\t").unwrap();
            for &b in &line {
                match b {
                    b'\\' => tsv.write_all(b"\\\\").unwrap(),
                    b'\t' => tsv.write_all(b"\\t").unwrap(),
                    b'\n' => tsv.write_all(b"\\n").unwrap(),
                    b'\r' => tsv.write_all(b"\\r").unwrap(),
                    _ => tsv.write_all(&[b]).unwrap(),
                }
            }
            tsv.write_all(b"\n").unwrap();
        }
    }
    let gz_bytes = std::fs::metadata(&gz_path).unwrap().len();
    println!(
        "file: {count} Patient resources, {:.1} MB uncompressed, {:.1} MB gzipped",
        raw_bytes as f64 / 1e6,
        gz_bytes as f64 / 1e6
    );
    let s3 = siphon_tests::s3().await;
    let bucket = siphon_tests::fresh_bucket(&s3).await;
    siphon_tests::put(
        &s3,
        &bucket,
        "bench/Patient.ndjson.gz",
        std::fs::read(&gz_path).unwrap(),
    )
    .await;

    // 2-3. alternate rounds
    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    let admin = siphon_tests::connect(&db).await;
    admin
        .batch_execute(&siphon::storage::resources::table_ddl(
            &siphon::ResourceType::parse("Patient").unwrap(),
        ))
        .await
        .unwrap();
    admin
        .batch_execute("CREATE TABLE baseline (LIKE patient INCLUDING ALL)")
        .await
        .unwrap();
    let psql_url = url.clone();
    let (mut best_base, mut best_siphon, mut peak_kb) = (f64::MAX, f64::MAX, 0u64);
    for round in 1..=rounds {
        admin.batch_execute("TRUNCATE baseline").await.unwrap();
        let start = Instant::now();
        let status = Command::new("psql")
            .arg(&psql_url)
            .arg("-qc")
            .arg(format!(
                "\\copy baseline (id, txid, resource_type, status, resource) from '{}'",
                tsv_path.display()
            ))
            .status()
            .expect("psql");
        assert!(status.success());
        let base = start.elapsed().as_secs_f64();
        admin.batch_execute("TRUNCATE patient").await.unwrap();
        let out = Command::new(&args[0])
            .args(["--load", &url, &bucket, "bench/Patient.ndjson.gz"])
            .output()
            .expect("loader child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        let secs: f64 = parts.next().unwrap().parse().unwrap();
        let kb: u64 = parts.next().unwrap().parse().unwrap();
        let rows: i64 = admin
            .query_one("SELECT count(*) FROM patient", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows as u64, count);
        println!("round {round}: psql \\copy {base:.3}s, siphon {secs:.3}s (ratio {:.3}), siphon peak RSS {:.1} MB", secs / base, kb as f64 / 1024.0);
        best_base = best_base.min(base);
        best_siphon = best_siphon.min(secs);
        peak_kb = peak_kb.max(kb);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "load_ratio={:.3} resources_per_s={:.0} mb_per_s={:.1} peak_rss_mb={:.1}",
        best_siphon / best_base,
        count as f64 / best_siphon,
        raw_bytes as f64 / 1e6 / best_siphon,
        peak_kb as f64 / 1024.0
    );
}
