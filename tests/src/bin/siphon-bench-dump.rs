//! `make bench-dump`: siphon's `$dump` stream against `psql \copy (select ...) to stdout`
//! of the same rows, measured in one run.
//!
//! Loads 100,000 realistic Patients (`SIPHON_BENCH_RESOURCES` changes the count) and the
//! seed demo's 100,000 generated patients (`generate_series`), then alternates rounds:
//! psql's `\copy` to /dev/null, and a child process running siphon's dump stream (the
//! function's code path minus HTTP) to /dev/null, which reports its own peak RSS.
//! Then the path users take: `make serve`'s release binary on the same database, read by
//! curl writing to a file, against `psql \copy (...) to` a file, for `$dump` of both
//! tables and `$dump-sql` in tsv and csv; `SIPHON_BENCH_BEFORE=path` runs the same
//! rounds against another siphon-local build too (before and after a change, one run).
//! The last lines are `dump_ratio=.. demo_100k_patients_s=.. peak_rss_mb=..` and
//! `http_<case>_ratio=..` for each build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use siphon::loading::{LoadOptions, Loader};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::sources::memory::MemorySource;
use siphon::sources::ObjectLocation;
use siphon::storage::{Db, DbConfig};
use siphon::ResourceType;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Child: `--dump <url> <Type>`: stream the dump to /dev/null, print `seconds bytes rss_kb`.
async fn child(url: &str, ty: &str) {
    let db = Db::new(DbConfig::from_url(url).unwrap());
    let start = Instant::now();
    let mut stream = siphon::dumping::dump_type(&db, &ResourceType::parse(ty).unwrap(), None)
        .await
        .unwrap();
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    println!(
        "{} {bytes} {}",
        start.elapsed().as_secs_f64(),
        peak_rss_kb()
    );
}

fn run_child(exe: &str, url: &str, ty: &str) -> (f64, u64, u64) {
    let out = Command::new(exe)
        .args(["--dump", url, ty])
        .output()
        .expect("dump child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = text.split_whitespace().collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
    )
}

fn psql_copy(url: &str, table: &str) -> f64 {
    let start = Instant::now();
    let status = Command::new("psql")
        .arg(url)
        .arg("-qc")
        .arg(format!("\\copy (select resource || jsonb_build_object('resourceType', resource_type, 'id', id) from {table}) to stdout"))
        .stdout(Stdio::null())
        .status()
        .expect("psql");
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

/// One request through make serve's binary, written to `file` by curl: seconds.
fn curl(port: u16, path: &str, body: Option<&str>, file: &Path) -> f64 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "-o"]).arg(file).args([
        "-H",
        &format!("authorization: {}", siphon_tests::bench::admin()),
    ]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let start = Instant::now();
    let status = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .status()
        .expect("curl");
    assert!(status.success(), "curl {path}");
    start.elapsed().as_secs_f64()
}

/// `psql \copy (select) to 'file' options`: seconds.
fn psql_to_file(url: &str, select: &str, options: &str, file: &Path) -> f64 {
    let start = Instant::now();
    let status = Command::new("psql")
        .arg(url)
        .arg("-qc")
        .arg(format!(
            "\\copy ({select}) to '{}' {options}",
            file.display()
        ))
        .status()
        .expect("psql");
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

/// One comparison of the HTTP rounds: a request and the `psql \copy` writing the same.
struct Case {
    name: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    select: &'static str,
    options: &'static str,
}

const WITH_ID: &str = "resource || jsonb_build_object('resourceType', resource_type, 'id', id)";

fn cases() -> Vec<Case> {
    let dump = |name, path, table: &'static str| Case {
        name,
        path,
        body: None,
        select: Box::leak(format!("select {WITH_ID} from {table}").into_boxed_str()),
        options: "",
    };
    vec![
        dump("dump_observation", "/Observation/$dump", "observation"),
        dump("dump_patient", "/Patient/$dump", "patient"),
        Case {
            name: "dump_sql_tsv",
            path: "/$dump-sql",
            body: Some(r#"{"query": "select id, resource from observation", "format": "tsv"}"#),
            select: "select id, resource from observation",
            options: "",
        },
        Case {
            name: "dump_sql_csv",
            path: "/$dump-sql",
            body: Some(r#"{"query": "select id, resource from observation", "format": "csv"}"#),
            select: "select id, resource from observation",
            options: "with (format csv, header true)",
        },
    ]
}

/// The HTTP rounds against the siphon-local at `bin`: best of `rounds` for each case,
/// curl against psql, alternating. Prints a line per round and returns `(case, ratio)`.
async fn http_rounds(bin: &Path, label: &str, url: &str, rounds: usize) -> Vec<(String, f64)> {
    let port = siphon_tests::bench::free_port();
    // No loader; one export worker (the least make serve takes), idle here.
    let mut server =
        siphon_tests::bench::serve_binary(bin, url, port, 0, 1, &format!("bench-dump-{label}.log"))
            .await;
    let dir = siphon_tests::repo_root().join("target/bench-dump");
    std::fs::create_dir_all(&dir).unwrap();
    let (ours, theirs) = (dir.join("siphon.out"), dir.join("psql.out"));
    let mut ratios = Vec::new();
    for case in cases() {
        let (mut best_psql, mut best_siphon) = (f64::MAX, f64::MAX);
        for round in 1..=rounds {
            let base = psql_to_file(url, case.select, case.options, &theirs);
            let secs = curl(port, case.path, case.body, &ours);
            let (a, b) = (
                std::fs::metadata(&ours).unwrap().len(),
                std::fs::metadata(&theirs).unwrap().len(),
            );
            println!(
                "{label} {} round {round}: psql \\copy to a file {base:.3}s ({:.1} MB), curl {secs:.3}s ({:.1} MB), ratio {:.3}",
                case.name,
                b as f64 / 1e6,
                a as f64 / 1e6,
                secs / base
            );
            best_psql = best_psql.min(base);
            best_siphon = best_siphon.min(secs);
        }
        ratios.push((case.name.to_string(), best_siphon / best_psql));
    }
    let _ = server.kill();
    let _ = server.wait();
    ratios
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--dump") {
        return child(&args[2], &args[3]).await;
    }
    let count: u64 = std::env::var("SIPHON_BENCH_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("SIPHON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    // Realistic rows, through the loader (streamed from memory, in gzip members of 50k).
    let source = MemorySource::new();
    let loc = ObjectLocation::new("bench", "Observation.ndjson.gz");
    let mut gz = Vec::new();
    let mut n = 0;
    while n < count {
        let part = (count - n).min(50_000);
        let mut lines = Vec::new();
        for i in n..n + part {
            serde_json::to_writer(
                &mut lines,
                &siphon_tests::gen::resource("Observation", i, 5),
            )
            .unwrap();
            lines.push(b'\n');
        }
        gz.extend(siphon_tests::gen::gzip(&lines));
        n += part;
    }
    source.put(loc.clone(), gz);
    let file = LoaderFile::pending(&loc, None, None, FileOptions::default());
    db.create_loader_file(&file).await.unwrap();
    Loader::new(db.clone(), Arc::new(source), LoadOptions::default())
        .load(&file.id, None)
        .await
        .unwrap();
    // The seed demo's table.
    db.upsert(
        &ResourceType::parse("Patient").unwrap(),
        "seed",
        &serde_json::json!({}),
    )
    .await
    .unwrap();
    let c = siphon_tests::connect(&db).await;
    c.batch_execute(
        "DELETE FROM patient; INSERT INTO patient (id,txid, status, resource)
         SELECT g.id, g.id, 'created', '{\"name\": [{\"family\": \"John\"}]}' FROM generate_series(1, 100000) AS g (id); ANALYZE",
    )
    .await
    .unwrap();
    let size: i64 = c
        .query_one("SELECT pg_total_relation_size('observation')", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "table: {count} Observation resources, {:.1} MB on disk",
        size as f64 / 1e6
    );
    let (mut best_psql, mut best_siphon, mut best_demo, mut peak, mut out_bytes) =
        (f64::MAX, f64::MAX, f64::MAX, 0u64, 0u64);
    for round in 1..=rounds {
        let base = psql_copy(&url, "observation");
        let (secs, bytes, kb) = run_child(&args[0], &url, "Observation");
        let (demo, demo_bytes, demo_kb) = run_child(&args[0], &url, "Patient");
        println!(
            "round {round}: psql \\copy {base:.3}s, siphon {secs:.3}s (ratio {:.3}, {:.1} MB out), demo 100k patients {demo:.3}s ({:.1} MB), peak RSS {:.1} MB",
            secs / base,
            bytes as f64 / 1e6,
            demo_bytes as f64 / 1e6,
            kb.max(demo_kb) as f64 / 1024.0
        );
        best_psql = best_psql.min(base);
        best_siphon = best_siphon.min(secs);
        best_demo = best_demo.min(demo);
        peak = peak.max(kb).max(demo_kb);
        out_bytes = bytes;
    }
    println!(
        "dump_ratio={:.3} demo_100k_patients_s={:.3} peak_rss_mb={:.1} mb_per_s={:.1}",
        best_siphon / best_psql,
        best_demo,
        peak as f64 / 1024.0,
        out_bytes as f64 / 1e6 / best_siphon
    );
    let mut builds = vec![("after", siphon_tests::bench::server_binary())];
    if let Some(before) = std::env::var_os("SIPHON_BENCH_BEFORE") {
        builds.insert(0, ("before", PathBuf::from(before)));
    }
    let mut summary = Vec::new();
    for (label, bin) in &builds {
        let label = if builds.len() == 1 { "http" } else { label };
        for (case, ratio) in http_rounds(bin, label, &url, rounds).await {
            summary.push(format!("{label}_{case}_ratio={ratio:.3}"));
        }
    }
    println!("{}", summary.join(" "));
}
