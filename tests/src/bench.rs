//! What the export benchmarks share: the data set, the `psql \copy` + `aws s3 cp`
//! baseline, and `make serve`'s binary started on the bench database.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use siphon::loading::{LoadOptions, Loader};
use siphon::model::{FileOptions, LoaderFile, ObjectLocation};
use siphon::sources::memory::MemorySource;
use siphon::storage::Db;

/// The mix of realistic resources, in percent.
pub const TYPES: [(&str, u64); 3] = [("Patient", 20), ("Observation", 60), ("Encounter", 20)];

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Loads `count` generated resources of `ty` through the loader, in 50k chunks.
pub async fn load(db: &Db, ty: &str, count: u64) {
    let source = MemorySource::new();
    let loc = ObjectLocation::new("bench", format!("{ty}.ndjson.gz"));
    let mut gz = Vec::new();
    let mut n = 0;
    while n < count {
        let part = (count - n).min(50_000);
        let mut lines = Vec::new();
        for i in n..n + part {
            serde_json::to_writer(&mut lines, &crate::gen::resource(ty, i, 7)).unwrap();
            lines.push(b'\n');
        }
        gz.extend(crate::gen::gzip(&lines));
        n += part;
    }
    source.put(loc.clone(), gz);
    let file = LoaderFile::pending(&loc, None, None, FileOptions::default());
    db.create_loader_file(&file).await.unwrap();
    Loader::new(db.clone(), Arc::new(source), LoadOptions::default())
        .load(&file.id, None)
        .await
        .unwrap();
}

/// Loads the [`TYPES`] mix of `count` resources and prints what was loaded.
pub async fn load_mix(db: &Db, count: u64) {
    let started = Instant::now();
    for (ty, percent) in TYPES {
        load(db, ty, count * percent / 100).await;
    }
    let c = crate::connect(db).await;
    c.batch_execute("ANALYZE").await.unwrap();
    let size: i64 = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "data: {count} resources ({}), {:.0} MB on disk, loaded in {:.0} s",
        TYPES.map(|(t, p)| format!("{t} {p}%")).join(", "),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The baseline a person would script: `psql \copy` of every type (resources as `$dump`
/// writes them) to files, then `aws s3 cp` of the files to LocalStack. Returns seconds.
pub fn psql_copy_and_upload(url: &str, bucket: &str, dir: &std::path::Path) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let start = Instant::now();
    for (ty, _) in TYPES {
        let file = dir.join(format!("{ty}.ndjson"));
        let status = Command::new("psql")
            .arg(url)
            .arg("-qc")
            .arg(format!(
                "\\copy (select resource || jsonb_build_object('resourceType', resource_type, 'id', id) from {}) to '{}'",
                ty.to_ascii_lowercase(),
                file.display()
            ))
            .status()
            .expect("psql");
        assert!(status.success());
    }
    let aws = crate::repo_root().join("infra/local/.venv-localstack/bin/aws");
    let status = Command::new(aws)
        .args(["s3", "cp", "--recursive", "--quiet"])
        .arg(dir)
        .arg(format!("s3://{bucket}/baseline/"))
        .args(["--endpoint-url", &crate::var("AWS_ENDPOINT_URL")])
        .status()
        .expect("aws s3 cp");
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

/// One `$export` (`query` after `$export`) of the siphon-local on `port`, through its
/// HTTP API as a Bulk Data client does, until the manifest; returns the seconds and the
/// manifest.
pub async fn export_over_http(port: u16, query: &str) -> (f64, serde_json::Value) {
    let auth = admin();
    let headers = [
        ("authorization", auth.as_str()),
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    let start = Instant::now();
    let kick = crate::http(
        "GET",
        &format!("http://127.0.0.1:{port}/$export{query}"),
        &headers,
        b"",
    )
    .await;
    assert_eq!(kick.status, 202, "{}", String::from_utf8_lossy(&kick.body));
    let status_url = kick.headers["content-location"].clone();
    loop {
        let got = crate::http("GET", &status_url, &headers[..1], b"").await;
        match got.status {
            202 => tokio::time::sleep(Duration::from_millis(100)).await,
            200 => {
                let secs = start.elapsed().as_secs_f64();
                return (secs, serde_json::from_slice(&got.body).unwrap());
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&got.body)),
        }
    }
}

/// The resources a manifest lists (its `output` counts).
pub fn manifest_count(manifest: &serde_json::Value) -> u64 {
    manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["count"].as_u64().unwrap())
        .sum()
}

/// `make serve`'s binary (release siphon-local) on the bench database, with its own
/// queues and `exporters` export workers; waits until it listens. Logs to
/// `target/<log>`.
pub async fn serve(url: &str, port: u16, exporters: u64, log: &str) -> Child {
    serve_with(url, port, 1, exporters, log).await
}

/// [`serve`] with `loaders` loaders (0: none).
pub async fn serve_with(url: &str, port: u16, loaders: u64, exporters: u64, log: &str) -> Child {
    serve_binary(&server_binary(), url, port, loaders, exporters, log).await
}

/// The siphon-local the benchmarks run: `SIPHON_BENCH_SERVER` (another build, e.g. of an
/// older commit, to measure before and after a change) or `make serve`'s release binary.
pub fn server_binary() -> std::path::PathBuf {
    std::env::var_os("SIPHON_BENCH_SERVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/release/siphon-local"))
}

/// [`serve_with`] running the siphon-local at `bin`.
pub async fn serve_binary(
    bin: &std::path::Path,
    url: &str,
    port: u16,
    loaders: u64,
    exporters: u64,
    log: &str,
) -> Child {
    serve_binary_with(bin, url, port, loaders, exporters, log, &[]).await
}

/// [`serve_binary`] with more environment (`extra` wins over the local settings).
pub async fn serve_binary_with(
    bin: &std::path::Path,
    url: &str,
    port: u16,
    loaders: u64,
    exporters: u64,
    log: &str,
    extra: &[(&str, &str)],
) -> Child {
    let sqs = crate::sqs().await;
    let load_queue = crate::fresh_queue(&sqs).await;
    let export_queue = crate::fresh_queue(&sqs).await;
    let log = std::fs::File::create(crate::repo_root().join("target").join(log)).unwrap();
    let child = Command::new(bin)
        .envs(crate::env().iter())
        .env("DATABASE_URL", url)
        .env("SIPHON_LOAD_QUEUE_URL", load_queue)
        .env("SIPHON_EXPORT_QUEUE_URL", export_queue)
        .env("SIPHON_LOCAL_ADDR", format!("127.0.0.1:{port}"))
        .env("SIPHON_LOCAL_LOADERS", loaders.to_string())
        .env("SIPHON_LOCAL_EXPORTERS", exporters.to_string())
        .env("SIPHON_EXPORT_MIN_POLL_MS", "0")
        .env_remove("SIPHON_EVENTS_QUEUE_URL")
        .envs(extra.iter().copied())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .expect("target/release/siphon-local (the bench's make target builds it)");
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "siphon-local did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// The admin's `authorization` header.
pub fn admin() -> String {
    let pair = format!(
        "{}:{}",
        crate::var("SIPHON_ADMIN_CLIENT_ID"),
        crate::var("SIPHON_ADMIN_CLIENT_SECRET")
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The peak resident set of process `pid` (VmHWM), in KiB.
pub fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
