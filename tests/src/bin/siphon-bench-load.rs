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
//! That part ends with `load_ratio=.. resources_per_s=.. mb_per_s=.. peak_rss_mb=..`.
//! Then FHIR validation's cost (see [`validation`]): `struct_validation_ratio=..` (the
//! same Patients with and without `checks: struct`) and `refs_extra_s=.. refs_ratio=..`
//! (100,000 Observations referencing 10,000 Patients, with and without `checks: refs`).
//!
//! Then the multi-file benchmark, through the real path (see [`multi`]): 8 files (2 of
//! each generator type, 25,000 resources each: 200,000 resources, about 175 MB
//! uncompressed; `SIPHON_BENCH_MULTI_RESOURCES` changes the per-file count) in a
//! LocalStack bucket.
//! - Baseline: the same rows pre-extracted to COPY text, loaded by two parallel
//!   `psql \copy` streams (half the files each; `SIPHON_BENCH_PSQL_STREAMS` changes the
//!   count) into freshly created tables of the same
//!   schema (primary key included).
//! - siphon: a `siphon-local` child (release build; `SIPHON_LOCAL_BIN`, else built with
//!   cargo) on a fresh database and queue; `load-from-bucket` with thread-num 8, timed
//!   from the RPC call until `load-from-bucket-status` counts every file done.
//! - siphon first load: the same with `disable-idx?` and `drop-primary-key?` into a fresh
//!   empty database, until every file is done and `indexes-dropped` is empty (primary
//!   keys rebuilt).
//!
//! The child runs `SIPHON_LOCAL_LOADERS` loaders (default 4, `make serve`'s own default:
//! on the 2-core development machine as fast as 8 at 200,000 resources, ratios within
//! run-to-run noise, with 3-7% less Postgres CPU and about 110 MB peak RSS against 175 MB;
//! faster than 8 at 800,000). Best of `SIPHON_BENCH_MULTI_ROUNDS`
//! (default 2) alternating rounds; row counts are checked exactly after every siphon run.
//! The two last lines:
//! `multi_load_ratio=<siphon/baseline> resources_per_s=<n>` and
//! `multi_load_ratio_first_load=<n> resources_per_s=<n>`, after a line with the CPU
//! seconds each spent (mean per round): Postgres's for the baseline, Postgres's and
//! siphon-local's for each siphon run (`multi_cpu_s ...`), read from `/proc` once each
//! run's backends have ended. On a machine where the loader shares the cores with
//! Postgres they bound the ratio from below: (Postgres + siphon-local) / (cores x
//! baseline seconds). Each round also prints, per run, what the server did besides
//! its CPU total (`... server, siphon: WAL 963 MB, checkpoints ...`,
//! `siphon_tests::pgstat`): WAL bytes, checkpoints, buffers written by the checkpointer,
//! the background writer and the backends, autovacuum runs, and CPU seconds by process
//! role; equal work with unequal CPU points below Postgres (the kernel, the machine).
//! On a VM that hands freed memory back to its host it says so first
//! (`pgstat::memory_warning`): there the same rows cost Postgres up to twice the CPU.
//!
//! Then the same three again into empty tables made beforehand with one secondary index
//! each, a GIN index over the resource (`jsonb_path_ops`, what containment searches
//! use; the baseline's tables have it too): what `disable-idx?` exists for, since
//! siphon's own tables have no index but the primary key. Its lines end in `_indexed`;
//! `SIPHON_BENCH_MULTI_INDEX=none` skips it.
//!
//! Then the Lambda-shaped round (lines ending in `_pinned`): the plain three again with
//! Postgres pinned to CPU 0 and everything else (this benchmark, its `psql` and
//! `siphon-local` children, LocalStack) to the other CPUs (`taskset`), as in AWS where
//! the loaders run in Lambda and never take the database's cores. It adds Postgres's CPU
//! seconds per 100,000 resources for each contender and their ratios
//! (`pinned_postgres_cpu_ratio=<siphon/psql> pinned_postgres_cpu_ratio_first_load=..`):
//! what siphon's load costs the database beside a bare `psql \copy`.
//! `SIPHON_BENCH_MULTI_PINNED=off` skips it.
//!
//! `SIPHON_BENCH_ONLY=single`, `multi` or `pinned` runs one part.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

#[allow(dead_code)]
#[path = "../faults/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../faults/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../faults/local.rs"]
mod local;

use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::model::Validation;
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

/// Child mode: `siphon-bench-load --load <db-url> <bucket> <key> [<validation JSON>]`:
/// load once (and resolve references, with `checks: refs`), print `seconds rss_kb`.
async fn child(url: &str, bucket: &str, key: &str, validation: Option<&str>) {
    let db = Db::new(DbConfig::from_url(url).unwrap());
    let s3 = siphon_tests::s3().await;
    let loc = ObjectLocation::new(bucket, key);
    let options = FileOptions {
        validation: validation
            .map(|v| Validation::parse(&serde_json::from_str(v).unwrap()).unwrap())
            .unwrap_or_default(),
        ..FileOptions::default()
    };
    let pending = LoaderFile::pending(&loc, None, None, options);
    db.delete_loader_file(&pending.id).await.unwrap();
    db.create_loader_file(&pending).await.unwrap();
    let loader = Loader::new(
        db.clone(),
        Arc::new(S3Source::new(s3)),
        LoadOptions::default(),
    );
    let start = Instant::now();
    let outcome = loader.load(&pending.id, None).await.unwrap();
    if options.validation.refs() {
        siphon::validation::resolve::finish(&db, &pending.id)
            .await
            .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        matches!(outcome, Outcome::Done { failed: 0, .. }),
        "{outcome:?}"
    );
    let file = db.loader_file(&pending.id).await.unwrap().unwrap();
    assert_eq!((file.failed, file.flagged), (0, 0), "no finding expected");
    println!("{secs} {}", peak_rss_kb());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--load") {
        return child(
            &args[2],
            &args[3],
            &args[4],
            args.get(5).map(String::as_str),
        )
        .await;
    }
    let only = std::env::var("SIPHON_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "single" {
        single(&args).await;
        validation(&args).await;
    }
    if only != "single" {
        multi(&only).await;
    }
}

/// The single-file benchmark (siphon's loader in a child against one `psql \copy`).
async fn single(args: &[String]) {
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

// ---------------------------------------------------------------------------------------
// Multi-file: load-from-bucket through a siphon-local child against two psql streams.

/// A fresh database on the local cluster (`siphon_test_*`) and a client to it.
async fn fresh_database() -> (String, tokio_postgres::Client) {
    let url = siphon_tests::fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    let client = siphon_tests::connect(&db).await;
    (url, client)
}

async fn drop_database(url: &str) {
    let name = url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let admin = Db::new(DbConfig::from_url(&siphon_tests::var("DATABASE_URL")).unwrap());
    let client = siphon_tests::connect(&admin).await;
    let _ = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

/// A load queue as provisioned for real (visibility timeout 960 s).
async fn fresh_load_queue(sqs: &aws_sdk_sqs::Client) -> String {
    let name = format!(
        "siphon-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqs.create_queue()
        .queue_name(&name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "960",
        )
        .send()
        .await
        .expect("create a LocalStack queue")
        .queue_url
        .expect("queue URL")
}

/// The child's peak RSS (kB), read before it is killed.
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn comm_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// `CHECKPOINT` before a timed run, so that a checkpoint the previous run's WAL made due
/// does not land in this one (loads of 700 MB write about a `max_wal_size` of WAL, and a
/// checkpoint mid-load adds a full-page image for every index page touched after it).
/// Needs `pg_checkpoint` (the local stack grants it); without it the runs go on as they
/// are, said once.
async fn checkpoint(client: &tokio_postgres::Client) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Err(e) = client.batch_execute("CHECKPOINT").await {
        SAID.call_once(|| println!("(no CHECKPOINT before timed runs: {e})"));
    }
}

/// CPU seconds one live process has used (all its threads).
fn process_cpu(pid: u32) -> f64 {
    siphon_tests::pgstat::proc_times(pid).map_or(0.0, |t| t.own as f64 / 100.0)
}

/// CPU seconds LocalStack (S3 and SQS: remote services in AWS, here on the same cores)
/// has used so far, its process and ended children; 0 if its pid file is missing.
fn localstack_cpu() -> f64 {
    localstack_pid()
        .and_then(siphon_tests::pgstat::proc_times)
        .map_or(0.0, |t| (t.own + t.children) as f64 / 100.0)
}

/// LocalStack's pid, from the file `infra/local/up.sh` writes.
fn localstack_pid() -> Option<u32> {
    std::fs::read_to_string(siphon_tests::repo_root().join("infra/local/.run/localstack.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What one multi-file run cost: (wall seconds, peak RSS kB, Postgres CPU s, loader CPU s).
struct RunCost {
    secs: f64,
    kb: u64,
    postgres_cpu: f64,
    local_cpu: f64,
    /// The loaded tables' size on disk (heap, TOAST, indexes), MB.
    table_mb: f64,
    /// What the server did over the run besides its CPU total.
    activity: siphon_tests::pgstat::Activity,
    /// LocalStack's CPU seconds over the run (serving the files and the queue).
    localstack_cpu: f64,
    /// When each file was seen done (seconds from the start, to the 50 ms poll).
    done_at: Vec<f64>,
}

/// The size on disk of tables `names` (heap, TOAST, indexes), MB.
async fn tables_mb(client: &tokio_postgres::Client, names: &[String]) -> f64 {
    let bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             WHERE c.relname = ANY($1) AND c.relkind = 'r'",
            &[&names],
        )
        .await
        .unwrap()
        .get(0);
    bytes as f64 / 1e6
}

/// One siphon run: a child on a fresh database and queue, load-from-bucket of the
/// bucket's `multi/` files; returns its cost after checking every row.
async fn siphon_run(
    set: &MultiSet<'_>,
    first_load: bool,
    tables: Tables<'_>,
    log: &std::path::Path,
) -> RunCost {
    let (bin, sqs, bucket, files, loaders) = (set.bin, set.sqs, set.bucket, set.files, set.loaders);
    let (url, client) = fresh_database().await;
    if tables.index.is_some() || !tables.autovacuum {
        // Empty tables made beforehand, with the secondary index users would have.
        for (ty, _) in data::expected_by_type(files) {
            create_table(&client, ty, tables).await;
        }
    }
    let queue = fresh_load_queue(sqs).await;
    let env = local::base_env(&url, &queue, loaders);
    let mut child = local::Local::start(bin, &env, log)
        .await
        .unwrap_or_else(|e| panic!("siphon-local: {e}"));
    let status = json!({"method": "aidbox.bulk/load-from-bucket-status"});
    child.rpc(&status).await.expect("status (warm-up)");
    checkpoint(&client).await;
    let mut params = json!({"bucket": format!("s3://{bucket}/multi/"), "thread-num": 8});
    if first_load {
        params["disable-idx?"] = json!(true);
        params["drop-primary-key?"] = json!(true);
    }
    let profile = Profile::start(
        &format!(
            "{}{}",
            if first_load { "siphon-first" } else { "siphon" },
            if tables.autovacuum { "" } else { "-pinned" }
        ),
        !tables.autovacuum,
    );
    let snapshot = siphon_tests::pgstat::Snapshot::take(&client).await;
    let localstack_before = localstack_cpu();
    let start = Instant::now();
    let started = child
        .rpc(&json!({"method": "aidbox.bulk/load-from-bucket", "params": params}))
        .await
        .expect("load-from-bucket");
    assert_eq!(
        started["queued"].as_u64(),
        Some(files.len() as u64),
        "{started}"
    );
    let mut done_at = Vec::new();
    let secs = loop {
        let s = child.rpc(&status).await.expect("status");
        let done = s["files"]["done"].as_u64().unwrap_or(0);
        while (done_at.len() as u64) < done {
            done_at.push(start.elapsed().as_secs_f64());
        }
        let error = s["files"]["error"].as_u64().unwrap_or(0);
        assert_eq!(error, 0, "a file failed: {s}; log {}", log.display());
        let rebuilt = s["indexes-dropped"]
            .as_array()
            .map(|a| a.is_empty())
            .unwrap_or(false);
        if done == files.len() as u64 && (!first_load || rebuilt) {
            break start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "not done after 30 min: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kb = rss_of(child.pgid);
    let local_cpu = process_cpu(child.pgid);
    let localstack_cpu = localstack_cpu() - localstack_before;
    child.kill().await;
    // The killed child's backends end; the postmaster reaps them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let activity = snapshot.since(&client).await;
    let postgres_cpu = activity.cpu_total();
    drop(profile);
    for (ty, expected) in data::expected_by_type(files) {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), count(DISTINCT id) FROM {}",
                    ty.to_lowercase()
                ),
                &[],
            )
            .await
            .unwrap();
        let (n, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            (n as u64, distinct as u64),
            (expected, expected),
            "{ty}: rows, distinct ids"
        );
        if first_load {
            let pk: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p')",
                    &[&ty.to_lowercase()],
                )
                .await
                .unwrap()
                .get(0);
            assert!(pk, "{ty}: primary key not rebuilt");
        }
    }
    let names: Vec<String> = data::expected_by_type(files)
        .into_keys()
        .map(str::to_lowercase)
        .collect();
    let table_mb = tables_mb(&client, &names).await;
    drop(client);
    drop_database(&url).await;
    let _ = sqs.delete_queue().queue_url(&queue).send().await;
    RunCost {
        secs,
        kb,
        postgres_cpu,
        local_cpu,
        table_mb,
        activity,
        localstack_cpu,
        done_at,
    }
}

/// The multi-file benchmark (module docs); `only` = `pinned` runs the pinned round alone.
async fn multi(only: &str) {
    let per_file: u64 = std::env::var("SIPHON_BENCH_MULTI_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000);
    let rounds: usize = std::env::var("SIPHON_BENCH_MULTI_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let loaders: usize = std::env::var("SIPHON_LOCAL_LOADERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let types = siphon_tests::gen::TYPES;
    let files = data::plan("multi/", 8, per_file, types);
    let total: u64 = files.iter().map(|f| f.count).sum();
    let bin = match std::env::var_os("SIPHON_LOCAL_BIN") {
        Some(b) => std::path::PathBuf::from(b),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--release",
                    "-p",
                    "siphon-local",
                    "--bin",
                    "siphon-local",
                ])
                .current_dir(siphon_tests::repo_root())
                .status()
                .expect("cargo build of siphon-local");
            assert!(
                status.success(),
                "cargo build --release -p siphon-local failed"
            );
            local::binary()
        }
    };
    let work = std::env::temp_dir().join(format!("siphon-bench-multi-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let logs = siphon_tests::repo_root().join("target/bench-load");
    std::fs::create_dir_all(&logs).unwrap();

    // The files, in the bucket, and their COPY text (split over two streams).
    let built = data::build(&files, 42);
    let raw: u64 = built.iter().map(|b| b.2).sum();
    let gz: u64 = built.iter().map(|b| b.1.len() as u64).sum();
    let s3 = siphon_tests::s3().await;
    let sqs = siphon_tests::sqs().await;
    let bucket = siphon_tests::fresh_bucket(&s3).await;
    for (spec, bytes, _) in built {
        siphon_tests::put(&s3, &bucket, &spec.key, bytes).await;
    }
    let mut copies = Vec::new();
    for (i, spec) in files.iter().enumerate() {
        let path = work.join(format!("{i}.copy"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        data::each_line(spec, 42, |id, line| {
            write!(out, "{id}\t1\t{}\tcreated\t", spec.resource_type).unwrap();
            for &b in line {
                match b {
                    b'\\' => out.write_all(b"\\\\").unwrap(),
                    b'\t' => out.write_all(b"\\t").unwrap(),
                    b'\n' => out.write_all(b"\\n").unwrap(),
                    b'\r' => out.write_all(b"\\r").unwrap(),
                    _ => out.write_all(&[b]).unwrap(),
                }
            }
            out.write_all(b"\n").unwrap();
        });
        out.flush().unwrap();
        copies.push((spec.resource_type.to_lowercase(), path));
    }
    if let Some(warning) = siphon_tests::pgstat::memory_warning() {
        println!("{warning}");
    }
    println!(
        "multi: {} files ({} types), {total} resources, {:.1} MB uncompressed, {:.1} MB gzipped; siphon-local with {loaders} loaders, thread-num 8",
        files.len(),
        types.len(),
        raw as f64 / 1e6,
        gz as f64 / 1e6
    );
    assert!(
        raw >= 150_000_000,
        "the multi-file set must be 150 MB+ uncompressed"
    );

    let set = MultiSet {
        bin: &bin,
        sqs: &sqs,
        bucket: &bucket,
        files: &files,
        loaders,
        copies: &copies,
        logs: &logs,
        total,
    };
    let plain = if only == "pinned" {
        None
    } else {
        Some(
            set.rounds(
                rounds,
                Tables {
                    index: None,
                    autovacuum: true,
                },
            )
            .await,
        )
    };
    let index = std::env::var("SIPHON_BENCH_MULTI_INDEX").unwrap_or_else(|_| "gin".into());
    let indexed = match index.as_str() {
        _ if only == "pinned" => None,
        "none" => None,
        _ => Some(
            set.rounds(
                rounds,
                Tables {
                    index: Some(GIN_INDEX),
                    autovacuum: true,
                },
            )
            .await,
        ),
    };
    let pinned_wanted = std::env::var("SIPHON_BENCH_MULTI_PINNED").as_deref() != Ok("off");
    let pinned = match pinned_wanted.then(Pinning::split) {
        Some(Ok(pinning)) => {
            println!("{pinning}");
            let quiet = Tables {
                index: None,
                autovacuum: false,
            };
            let result = set.rounds(rounds, quiet).await;
            drop(pinning);
            Some(result)
        }
        Some(Err(why)) => {
            println!("(no pinned round: {why})");
            None
        }
        None => None,
    };
    for spec in &files {
        let _ = s3
            .delete_object()
            .bucket(&bucket)
            .key(&spec.key)
            .send()
            .await;
    }
    let _ = s3.delete_bucket().bucket(&bucket).send().await;
    let _ = std::fs::remove_dir_all(&work);
    if let Some(plain) = plain {
        plain.print("", total);
    }
    if let Some(indexed) = indexed {
        indexed.print("_indexed", total);
    }
    if let Some(pinned) = pinned {
        pinned.print("_pinned", total);
        pinned.print_postgres_cpu(total);
    }
}

/// The Lambda-shaped round's placement: Postgres on CPU 0 alone; this benchmark, its
/// children (psql, siphon-local) and LocalStack (S3 and SQS, remote services in AWS)
/// on the other CPUs, so the loaders never take the database's core, as in AWS where
/// they run in Lambda and the database on its own instance. Dropping it gives every
/// process all CPUs again.
struct Pinning {
    database: String,
    rest: String,
    all: String,
    localstack: Option<u32>,
}

impl Pinning {
    /// Pins, or says why it cannot (one CPU, no `taskset`, not allowed).
    fn split() -> Result<Pinning, String> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return Err(format!("{cpus} CPU: nothing to split"));
        }
        let pinning = Pinning {
            database: "0".into(),
            rest: format!("1-{}", cpus - 1),
            all: format!("0-{}", cpus - 1),
            localstack: localstack_pid(),
        };
        for pid in postgres_pids() {
            taskset(&pinning.database, pid)?;
        }
        if let Some(pid) = pinning.localstack {
            taskset(&pinning.rest, pid)?;
        }
        taskset(&pinning.rest, std::process::id())?;
        Ok(pinning)
    }
}

impl std::fmt::Display for Pinning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "multi pinned: Postgres on CPU {}; psql, siphon-local and LocalStack{} on CPU {}",
            self.database,
            if self.localstack.is_some() {
                ""
            } else {
                " (not found)"
            },
            self.rest
        )
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        let mut pids = postgres_pids();
        pids.extend(self.localstack);
        pids.push(std::process::id());
        for pid in pids {
            if let Err(e) = taskset(&self.all, pid) {
                println!("(cannot unpin {pid}: {e})");
            }
        }
    }
}

/// `SIPHON_BENCH_PERF=<dir>`: a CPU profile of Postgres's core (CPU 0, where the pinned
/// round puts it; every CPU otherwise) over each measured run, `perf record -g` into
/// `<dir>/<run>-<n>.data` (read with `perf report -i`): where the database's time goes.
struct Profile(Option<std::process::Child>);

impl Profile {
    /// `pinned`: Postgres is on CPU 0 alone (the pinned round): profile that CPU only.
    fn start(run: &str, pinned: bool) -> Profile {
        let Some(dir) = std::env::var_os("SIPHON_BENCH_PERF") else {
            return Profile(None);
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = std::path::Path::new(&dir).join(format!("{run}-{n}.data"));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q", "-g", "-o"]).arg(&out);
        if pinned {
            cmd.args(["-C", "0"]);
        } else {
            cmd.arg("-a");
        }
        cmd.args(["--", "sleep", "3600"]);
        let child = cmd.spawn().ok();
        std::thread::sleep(Duration::from_millis(300));
        Profile(child)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // perf writes its file on SIGINT.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Every live `postgres` process (the postmaster and its children; backends forked
/// later inherit the postmaster's CPUs).
fn postgres_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| comm_of(&pid.to_string()) == "postgres")
        .collect()
}

/// `taskset -a -p -c <cpus> <pid>`: every thread of `pid` on `cpus`.
fn taskset(cpus: &str, pid: u32) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The secondary index of the indexed multi-file runs (`{t}`: the table): a GIN index
/// over the whole resource, as containment (`@>`) searches use.
const GIN_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS {t}_resource_gin ON {t} USING gin (resource jsonb_path_ops)";

/// How the measured tables are made.
#[derive(Clone, Copy)]
struct Tables<'a> {
    /// A secondary index (see [`GIN_INDEX`]).
    index: Option<&'a str>,
    /// `false`: autovacuum off on every measured table, both sides (the pinned round), so
    /// that a run's Postgres CPU is its load alone, not the vacuum of the previous run's
    /// 800,000 freshly inserted rows that autovacuum starts meanwhile.
    autovacuum: bool,
}

/// Creates `ty`'s table as siphon does, with `tables`' index and autovacuum setting.
async fn create_table(client: &tokio_postgres::Client, ty: &str, tables: Tables<'_>) {
    let ty = siphon::ResourceType::parse(ty).unwrap();
    client
        .batch_execute(&siphon::storage::resources::table_ddl(&ty))
        .await
        .unwrap();
    if let Some(index) = tables.index {
        client
            .batch_execute(&index.replace("{t}", &ty.table_name()))
            .await
            .unwrap();
    }
    if !tables.autovacuum {
        client
            .batch_execute(&format!(
                "ALTER TABLE {} SET (autovacuum_enabled = false)",
                ty.table_name()
            ))
            .await
            .unwrap();
    }
}

/// The multi-file set, in the bucket and as COPY text.
struct MultiSet<'a> {
    bin: &'a std::path::Path,
    sqs: &'a aws_sdk_sqs::Client,
    bucket: &'a str,
    files: &'a [data::FileSpec],
    loaders: usize,
    /// (table, COPY text file) per file.
    copies: &'a [(String, std::path::PathBuf)],
    logs: &'a std::path::Path,
    total: u64,
}

/// Best seconds of each contender over the rounds, and CPU seconds summed over them.
struct MultiResult {
    rounds: usize,
    base: f64,
    siphon: f64,
    first: f64,
    /// Baseline Postgres; siphon Postgres, loader; first load Postgres, loader.
    cpu: [f64; 5],
}

impl MultiResult {
    /// The Lambda-shaped figures: Postgres's CPU seconds per 100,000 resources for each
    /// contender (mean over the rounds), and siphon's against the baseline's.
    fn print_postgres_cpu(&self, total: u64) {
        let per = |cpu: f64| cpu / self.rounds as f64 / total as f64 * 100_000.0;
        let (base, siphon, first) = (per(self.cpu[0]), per(self.cpu[1]), per(self.cpu[3]));
        println!(
            "pinned_postgres_cpu_s_per_100k baseline={base:.3} siphon={siphon:.3} first_load={first:.3}"
        );
        println!(
            "pinned_postgres_cpu_ratio={:.3} pinned_postgres_cpu_ratio_first_load={:.3}",
            siphon / base,
            first / base
        );
    }

    /// The summary lines; `suffix` names the variant (`""` or `"_indexed"`).
    fn print(&self, suffix: &str, total: u64) {
        println!(
            "multi_load_ratio{suffix}={:.3} resources_per_s={:.0}",
            self.siphon / self.base,
            total as f64 / self.siphon
        );
        let r = self.rounds as f64;
        let c = &self.cpu;
        println!(
            "multi_cpu_s{suffix} (mean per round) baseline_postgres={:.2} siphon_postgres={:.2} siphon_local={:.2} first_postgres={:.2} first_local={:.2}",
            c[0] / r,
            c[1] / r,
            c[2] / r,
            c[3] / r,
            c[4] / r
        );
        println!(
            "multi_load_ratio_first_load{suffix}={:.3} resources_per_s={:.0}",
            self.first / self.base,
            total as f64 / self.first
        );
    }
}

impl MultiSet<'_> {
    /// `rounds` alternating rounds of the baseline, siphon and siphon's first load, into
    /// tables with the primary key and, if given, `index`.
    async fn rounds(&self, rounds: usize, tables: Tables<'_>) -> MultiResult {
        let index = tables.index;
        let label = match (index.is_some(), tables.autovacuum) {
            (true, _) => "multi indexed",
            (false, true) => "multi",
            (false, false) => "multi pinned",
        };
        let types = siphon_tests::gen::TYPES;
        let total = self.total;
        let copies = self.copies;
        // Baseline tables: the same schema as siphon's (primary key included).
        let (base_url, base) = fresh_database().await;
        for ty in types {
            create_table(&base, ty, tables).await;
        }
        // Two streams (half the files each), or `SIPHON_BENCH_PSQL_STREAMS` (to compare
        // with siphon's concurrency: as many streams as its loaders).
        let streams: usize = std::env::var("SIPHON_BENCH_PSQL_STREAMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(2);
        let per_stream = copies.len().div_ceil(streams);
        let mut result = MultiResult {
            rounds,
            base: f64::MAX,
            siphon: f64::MAX,
            first: f64::MAX,
            cpu: [0.0; 5],
        };
        let tag = match (index.is_some(), tables.autovacuum) {
            (true, _) => "-indexed",
            (false, true) => "",
            (false, false) => "-pinned",
        };
        for round in 1..=rounds {
            for ty in types {
                let t = ty.to_lowercase();
                base.batch_execute(&format!(
                    "DROP TABLE IF EXISTS b_{t}; CREATE TABLE b_{t} (LIKE {t} INCLUDING ALL) WITH (autovacuum_enabled = {})",
                    tables.autovacuum
                ))
                .await
                .unwrap();
            }
            checkpoint(&base).await;
            let profile = Profile::start(&format!("psql{tag}"), !tables.autovacuum);
            let snapshot = siphon_tests::pgstat::Snapshot::take(&base).await;
            let start = Instant::now();
            let streams: Vec<std::process::Child> = copies
                .chunks(per_stream)
                .map(|part| {
                    let mut cmd = Command::new("psql");
                    cmd.arg(&base_url).arg("-q");
                    for (t, path) in part.iter() {
                        cmd.arg("-c").arg(format!(
                            "\\copy b_{t} (id, txid, resource_type, status, resource) from '{}'",
                            path.display()
                        ));
                    }
                    cmd.spawn().expect("psql")
                })
                .collect();
            for mut s in streams {
                assert!(s.wait().unwrap().success(), "psql \\copy failed");
            }
            let base_secs = start.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let base_activity = snapshot.since(&base).await;
            let base_pg = base_activity.cpu_total();
            drop(profile);
            let sum = types
                .iter()
                .map(|t| format!("(SELECT count(*) FROM b_{})", t.to_lowercase()))
                .collect::<Vec<_>>()
                .join(" + ");
            let n: i64 = base
                .query_one(&format!("SELECT {sum}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n as u64, total);
            let base_names: Vec<String> = types
                .iter()
                .map(|t| format!("b_{}", t.to_lowercase()))
                .collect();
            let base_mb = tables_mb(&base, &base_names).await;
            let plain = siphon_run(
                self,
                false,
                tables,
                &self.logs.join(format!("multi{tag}-{round}.log")),
            )
            .await;
            let first = siphon_run(
                self,
                true,
                tables,
                &self.logs.join(format!("multi{tag}-first-{round}.log")),
            )
            .await;
            let (s_secs, f_secs) = (plain.secs, first.secs);
            println!(
                "{label} round {round}: 2x psql \\copy {base_secs:.3}s, siphon {s_secs:.3}s (ratio {:.3}, peak RSS {:.1} MB), siphon first load {f_secs:.3}s (ratio {:.3}, peak RSS {:.1} MB)",
                s_secs / base_secs,
                plain.kb as f64 / 1024.0,
                f_secs / base_secs,
                first.kb as f64 / 1024.0
            );
            println!(
                "{label} round {round} CPU seconds: psql \\copy: Postgres {base_pg:.2}; siphon: Postgres {:.2} + siphon-local {:.2} + LocalStack {:.2}; first load: Postgres {:.2} + siphon-local {:.2} + LocalStack {:.2}",
                plain.postgres_cpu, plain.local_cpu, plain.localstack_cpu, first.postgres_cpu, first.local_cpu, first.localstack_cpu
            );
            println!(
                "{label} round {round} tables on disk: psql \\copy {base_mb:.0} MB; siphon {:.0} MB; first load {:.0} MB",
                plain.table_mb, first.table_mb
            );
            println!("{label} round {round} server, psql \\copy: {base_activity}");
            let times = |run: &RunCost| {
                run.done_at
                    .iter()
                    .map(|t| format!("{t:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "{label} round {round} files done at (s): siphon {}; first load {}",
                times(&plain),
                times(&first)
            );
            println!("{label} round {round} server, siphon: {}", plain.activity);
            println!(
                "{label} round {round} server, first load: {}",
                first.activity
            );
            let c = &mut result.cpu;
            c[0] += base_pg;
            c[1] += plain.postgres_cpu;
            c[2] += plain.local_cpu;
            c[3] += first.postgres_cpu;
            c[4] += first.local_cpu;
            result.base = result.base.min(base_secs);
            result.siphon = result.siphon.min(s_secs);
            result.first = result.first.min(f_secs);
        }
        drop(base);
        drop_database(&base_url).await;
        result
    }
}

/// FHIR validation's cost, each part in child loaders alternating rounds, best of each
/// (`SIPHON_BENCH_RESOURCES`, `SIPHON_BENCH_ROUNDS` as for the single file):
/// - the same 100,000 Patients without and with `validation: {enable: on, checks:
///   struct}`: `struct_validation_ratio=<with/without>`;
/// - 100,000 Observations whose subjects are 10,000 Patients already loaded, without and
///   with `{enable: async, checks: refs}` (resolving included):
///   `refs_extra_s=<with - without> refs_ratio=<with/without>`.
async fn validation(args: &[String]) {
    let var = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (count, rounds) = (
        var("SIPHON_BENCH_RESOURCES", 100_000),
        var("SIPHON_BENCH_ROUNDS", 3),
    );
    let s3 = siphon_tests::s3().await;
    let bucket = siphon_tests::fresh_bucket(&s3).await;
    let mut patients = Vec::new();
    siphon_tests::gen::write_gz(&mut patients, "Patient", count, 42).unwrap();
    siphon_tests::put(&s3, &bucket, "bench/Patient.ndjson.gz", patients).await;
    let mut lines = Vec::new();
    for n in 0..count {
        let mut o = siphon_tests::gen::resource("Observation", n, 42);
        let subject = siphon_tests::gen::id_of("Patient", n % 10_000);
        o["subject"] = json!({ "reference": format!("Patient/{subject}") });
        serde_json::to_writer(&mut lines, &o).unwrap();
        lines.push(b'\n');
    }
    let observations = siphon_tests::gen::gzip(&lines);
    siphon_tests::put(&s3, &bucket, "bench/Observation.ndjson.gz", observations).await;
    let (url, admin) = fresh_database().await;
    for ty in ["Patient", "Observation"] {
        let ty = siphon::ResourceType::parse(ty).unwrap();
        let ddl = siphon::storage::resources::table_ddl(&ty);
        admin.batch_execute(&ddl).await.unwrap();
    }
    let run = |key: &str, validation: Option<&str>| {
        let mut child = Command::new(&args[0]);
        child.args(["--load", &url, &bucket, key]).args(validation);
        let out = child.output().expect("loader child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let structure = r#"{"enable": "on", "checks": "struct"}"#;
    let refs = r#"{"enable": "async", "checks": "refs"}"#;
    let (mut plain, mut checked) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        admin.batch_execute("TRUNCATE patient").await.unwrap();
        let without = run("bench/Patient.ndjson.gz", None);
        admin.batch_execute("TRUNCATE patient").await.unwrap();
        let with = run("bench/Patient.ndjson.gz", Some(structure));
        println!("round {round}: {count} Patients without validation {without:.3}s, with struct {with:.3}s");
        (plain, checked) = (plain.min(without), checked.min(with));
    }
    println!("struct_validation_ratio={:.3}", checked / plain);
    // The 10,000 Patients the Observations reference.
    admin
        .batch_execute("DELETE FROM patient WHERE id > 'pat-00009999'")
        .await
        .unwrap();
    let (mut plain, mut checked) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        admin.batch_execute("TRUNCATE observation").await.unwrap();
        let without = run("bench/Observation.ndjson.gz", None);
        admin.batch_execute("TRUNCATE observation").await.unwrap();
        let with = run("bench/Observation.ndjson.gz", Some(refs));
        println!("round {round}: {count} Observations without validation {without:.3}s, with refs {with:.3}s");
        (plain, checked) = (plain.min(without), checked.min(with));
    }
    println!(
        "refs_extra_s={:.3} refs_ratio={:.3}",
        checked - plain,
        checked / plain
    );
    drop(admin);
    drop_database(&url).await;
}
