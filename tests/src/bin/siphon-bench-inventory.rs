//! `make bench-inventory`: importing from an S3 Inventory of 1,000,000 objects
//! (`SIPHON_BENCH_OBJECTS` changes the count), through `make serve`'s binary.
//!
//! 1. A fresh database holds LoaderFiles for half the objects, 10% of those with another
//!    ETag (changed since), as a bucket imported before would.
//! 2. The same listing is written as two S3 Inventory runs to LocalStack, exactly as S3
//!    writes them: gzip CSV (8 data files) and Parquet (8 data files).
//! 3. Dry runs of both (`load-from-bucket` with `inventory` and `dry-run`) over HTTP:
//!    objects per second read, staged and compared (the slower of the two is reported).
//! 4. The import of the CSV run: the clock stops when the session says the planning is
//!    done (every new and changed object has its LoaderFile and load message; no
//!    loader runs, so the queue holds them): objects planned and queued per second.
//!
//! Last line: `inventory_objects_per_s=.. plan_objects_per_s=.. peak_rss_mb=..`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use siphon::model::{FileOptions, FileStatus, LoaderFile, ObjectLocation};
use siphon::storage::{Db, DbConfig};
use siphon_tests::bench::{admin, env_number, free_port, peak_rss_kb, serve_with};
use siphon_tests::inventory::{self, Format, Listed, Run};

fn etag(n: u64, version: u64) -> String {
    format!(
        "{:016x}{:016x}",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        version
    )
}

fn key(n: u64) -> String {
    format!("data/{:03}/Patient-{n:07}.ndjson.gz", n % 997)
}

async fn rpc(port: u16, params: Value) -> (u16, Value, String) {
    let auth = admin();
    let body = json!({"method": "aidbox.bulk/load-from-bucket", "params": params});
    let got = siphon_tests::http(
        "POST",
        &format!("http://127.0.0.1:{port}/rpc"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    let location = got
        .headers
        .get("content-location")
        .cloned()
        .unwrap_or_default();
    (
        got.status,
        serde_json::from_slice(&got.body).unwrap_or(Value::Null),
        location,
    )
}

#[tokio::main]
async fn main() {
    let objects = env_number("SIPHON_BENCH_OBJECTS", 1_000_000);
    siphon_tests::use_local_aws();
    let s3 = siphon_tests::s3().await;
    let source = siphon_tests::fresh_bucket(&s3).await;
    let inv = siphon_tests::fresh_bucket(&s3).await;
    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    // 1. LoaderFiles of every other object, a tenth of them of an older version.
    let started = Instant::now();
    let mut batch = Vec::new();
    for n in (0..objects).step_by(2) {
        let version = if n % 20 == 0 { 0 } else { 1 };
        let mut f = LoaderFile::pending(
            &ObjectLocation::new(&source, key(n)),
            Some(format!("\"{}\"", etag(n, version))),
            Some(1000 + n % 1000),
            FileOptions::default(),
        );
        f.status = FileStatus::Done;
        batch.push(f);
        if batch.len() == 10_000 {
            db.create_loader_files(&batch).await.unwrap();
            batch.clear();
        }
    }
    db.create_loader_files(&batch).await.unwrap();
    println!(
        "data: {} LoaderFiles ({} with an older ETag) in {:.0} s",
        objects / 2,
        objects / 20,
        started.elapsed().as_secs_f64()
    );
    // 2. The inventory, in both formats.
    let rows: Vec<Listed> = (0..objects)
        .map(|n| Listed::object(&key(n), (1000 + n % 1000) as i64, &etag(n, 1)))
        .collect();
    let mut manifests = Vec::new();
    for (format, when) in [
        (Format::Csv, "2026-11-22T01-00Z"),
        (Format::Parquet, "2026-11-23T01-00Z"),
    ] {
        let run = Run {
            inventory_bucket: &inv,
            dest: "inventories",
            source: &source,
            config: if format == Format::Csv {
                "csv"
            } else {
                "parquet"
            },
            when,
            format,
            versioned: false,
            files: 8,
            without: &[],
        };
        manifests.push((
            format,
            inventory::write(&s3, &run, &rows, 1_795_400_000_000).await,
        ));
    }
    drop(rows);
    let port = free_port();
    let mut child = serve_with(&url, port, 0, 1, "bench-inventory-serve.log").await;
    // 3. Dry runs.
    let mut dry_rate = f64::MAX;
    for (format, manifest) in &manifests {
        let t = Instant::now();
        let (s, body, _) = rpc(
            port,
            json!({"bucket": format!("s3://{source}"), "inventory": manifest, "dry-run": true}),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(s, 200, "{body}");
        let r = &body["result"];
        assert_eq!(r["files"].as_u64(), Some(objects), "{r}");
        assert_eq!(r["new"]["files"].as_u64(), Some(objects / 2), "{r}");
        assert_eq!(r["changed"]["files"].as_u64(), Some(objects / 20), "{r}");
        println!(
            "dry run ({format:?}): {objects} objects in {secs:.2}s ({:.0} objects/s): new {}, changed {}, unchanged {}",
            objects as f64 / secs,
            r["new"]["files"],
            r["changed"]["files"],
            r["unchanged"]["files"]
        );
        dry_rate = dry_rate.min(objects as f64 / secs);
    }
    // 4. The import's planning.
    let t = Instant::now();
    let (s, body, location) = rpc(
        port,
        json!({"bucket": format!("s3://{source}"), "inventory": manifests[0].1}),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    let auth = admin();
    let plan = loop {
        let got =
            siphon_tests::http("GET", &location, &[("authorization", auth.as_str())], b"").await;
        let view: Value = serde_json::from_slice(&got.body).unwrap();
        if view["inventory"]["plan"]["done"] == true {
            break view["inventory"]["plan"].clone();
        }
        assert!(view["status"] == "active", "{view}");
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "planning never ended: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(plan["new"].as_u64(), Some(objects / 2), "{plan}");
    assert_eq!(plan["changed"].as_u64(), Some(objects / 20), "{plan}");
    println!(
        "import planning: {objects} objects in {secs:.2}s ({} new and {} changed files created and queued)",
        plan["new"], plan["changed"]
    );
    let peak = peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "inventory_objects_per_s={:.0} plan_objects_per_s={:.0} peak_rss_mb={:.1}",
        dry_rate,
        objects as f64 / secs,
        peak as f64 / 1024.0
    );
}
