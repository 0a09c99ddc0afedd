//! `make faults` / `make faults-ci`: a bounded fault-injection suite that runs siphon as
//! users run it (`siphon-local` child processes, release build) and breaks what it
//! depends on, then checks that every resource arrived exactly once.
//!
//! - Its own PostgreSQL cluster (`pg_createcluster <v> siphonfaults`, dropped at the
//!   end, and at the start when an earlier run left it): the one it restarts and whose
//!   `max_connections` it lowers. The main cluster is never touched.
//! - LocalStack S3/SQS on 127.0.0.1:4566: its own bucket and queues (load queue with a
//!   960 s visibility timeout and a dead-letter queue after 5 receives, as provisioned
//!   for real), deleted at the end.
//! - A fault-injecting TCP proxy (in this process) in front of S3 or SQS, through
//!   `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL_SQS` of the children.
//!
//! Scenarios (each on a fresh database and queue):
//! 1. kill -9 of the siphon-local process group at K random row counts, restarted at once;
//! 2. every load message delivered twice, concurrently, to two siphon-local processes;
//! 3. PostgreSQL restarted mid-load;
//! 4. every open S3 connection cut mid-body;
//! 5. SQS unreachable (connections refused) for 10 s mid-load;
//! 6. 16 loaders, 16 files, thread-num 16 against max_connections = 20;
//! 7. 64 loaders and 8 export workers through PgBouncer (transaction pooling, 10 server
//!    connections) while 8 exports run, against the same work on direct connections.
//!
//! Each ends with: every LoaderFile `done` with `loaded` = its line count and `failed` 0,
//! and per table `count(*)` = `count(distinct id)` = the generated count. Recovery time
//! = from the fault until rows grow again. Progress is sampled every 100 ms as the sum of
//! the LoaderFiles' `loaded`, which each batch commits in the same transaction as its
//! rows (a `count(*)` of a 500 MB table every 100 ms would itself load the machine);
//! the final check counts the tables.
//!
//! `--ci`: smaller files, K = 3, short leases (6 s lease, 2 s heartbeat, 5 s sweep
//! interval, 1 s grace), 3 minutes per scenario. Without it: the settings users run
//! (30/10/30/5), so the recovery times are the honest ones; 10 minutes per scenario
//! (scenario 1: plus 2 minutes per kill). `--only 1,3` runs some scenarios.
//! Child logs go to `target/faults/<run>/`; their paths are printed on failure.

#[path = "../faults/cluster.rs"]
mod cluster;
#[path = "../faults/data.rs"]
mod data;
#[path = "../faults/http.rs"]
mod http;
#[path = "../faults/local.rs"]
mod local;
#[path = "../faults/pooler.rs"]
mod pooler;
#[path = "../faults/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use cluster::Cluster;
use data::FileSpec;
use local::Local;
use proxy::{Outage, Proxy};

const LOCALSTACK: &str = "127.0.0.1:4566";
const SEED: u64 = 7;
/// Scenario 4's S3 link: at most 1 MB/s per connection, and slow enough that every main
/// file takes this many seconds to arrive, so loads wait on bodies in transit.
const S3_LINK_BYTES_PER_S: u64 = 1_000_000;
const S3_LINK_SECONDS_PER_FILE: u64 = 4;

// ---------------------------------------------------------------------------------------
// Cleanup on every exit path

/// What must not outlive the run.
#[derive(Default)]
struct Leftovers {
    cluster: Option<Cluster>,
    /// Where the cluster's server log is copied before the cluster is dropped.
    logdir: Option<PathBuf>,
    queues: Vec<String>,
    buckets: Vec<String>,
}

static LEFTOVERS: Mutex<Option<Leftovers>> = Mutex::new(None);

fn leftovers<R>(f: impl FnOnce(&mut Leftovers) -> R) -> R {
    let mut guard = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Leftovers::default))
}

/// Kills every child group, drops the cluster, deletes the queues and the bucket. Safe
/// to call more than once and from a panic (the AWS part runs on its own thread).
fn cleanup() {
    local::kill_all();
    let left = leftovers(std::mem::take);
    if let Some(c) = &left.cluster {
        if let Some(dir) = &left.logdir {
            let _ = std::fs::copy(c.log_path(), dir.join("postgres.log"));
        }
        c.drop_cluster();
    }
    if left.queues.is_empty() && left.buckets.is_empty() {
        return;
    }
    let worker = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let work = async {
                let sqs = siphon_tests::sqs().await;
                for q in &left.queues {
                    let _ = sqs.delete_queue().queue_url(q).send().await;
                }
                let s3 = siphon_tests::s3().await;
                for b in &left.buckets {
                    if let Ok(list) = s3.list_objects_v2().bucket(b).send().await {
                        for o in list.contents() {
                            if let Some(k) = o.key() {
                                let _ = s3.delete_object().bucket(b).key(k).send().await;
                            }
                        }
                    }
                    let _ = s3.delete_bucket().bucket(b).send().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(60), work).await;
        });
    });
    let _ = worker.join();
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

// ---------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Debug)]
struct Settings {
    ci: bool,
    kills: usize,
    main_files: usize,
    main_per_file: u64,
    wide_files: usize,
    wide_per_file: u64,
    /// Scenario 7's set: one file per loader.
    many_files: usize,
    many_per_file: u64,
    /// Extra child environment (lease, heartbeat, sweep) in CI mode.
    timing: Vec<(&'static str, &'static str)>,
    bound: Duration,
    seed: u64,
    only: Option<Vec<usize>>,
    /// `--bound SECS`: every scenario's bound.
    bound_override: Option<Duration>,
    /// A file pending this long with no visible or delayed load message is stranded
    /// (lease + 3 sweep intervals + 10 s).
    stranded_after: Duration,
}

impl Settings {
    fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let ci = args.iter().any(|a| a == "--ci");
        let flag = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let seed = std::env::var("SIPHON_FAULTS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        let bound_override = flag("--bound")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        let only = flag("--only").map(|v| {
            v.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect::<Vec<usize>>()
        });
        let kills = flag("--kills")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if ci { 3 } else { 20 });
        if ci {
            Settings {
                ci,
                kills,
                main_files: 8,
                main_per_file: 10_000,
                wide_files: 16,
                wide_per_file: 5_000,
                many_files: 64,
                many_per_file: 1_000,
                timing: vec![
                    ("SIPHON_LEASE_SECONDS", "6"),
                    ("SIPHON_HEARTBEAT_SECONDS", "2"),
                    ("SIPHON_SWEEP_INTERVAL_SECONDS", "5"),
                    ("SIPHON_SWEEP_GRACE_SECONDS", "1"),
                ],
                bound: Duration::from_secs(180),
                seed,
                only,
                bound_override,
                stranded_after: Duration::from_secs(6 + 3 * 5 + 10),
            }
        } else {
            Settings {
                ci,
                kills,
                main_files: 8,
                main_per_file: 50_000,
                wide_files: 16,
                wide_per_file: 25_000,
                many_files: 64,
                many_per_file: 5_000,
                timing: Vec::new(),
                bound: Duration::from_secs(600),
                seed,
                only,
                bound_override,
                stranded_after: Duration::from_secs(30 + 3 * 30 + 10),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Progress monitor: one connection, a sample every 100 ms

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    /// Sum of the LoaderFiles' `loaded` (committed with the rows).
    loaded: i64,
    done: i64,
    error: i64,
    files: i64,
    /// Which connection took it (a new one after the database came back).
    conn: u64,
    /// Connections of role siphon (the monitor's included).
    backends: i64,
}

struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(url: String) -> Monitor {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut conn_no = 0u64;
            loop {
                conn_no += 1;
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    let conn = tokio::spawn(conn);
                    loop {
                        let r = client
                            .query_one(
                                "SELECT coalesce(sum((resource->>'loaded')::bigint), 0)::bigint,
                                        count(*) FILTER (WHERE resource->>'status' = 'done'),
                                        count(*) FILTER (WHERE resource->>'status' = 'error'),
                                        count(*),
                                        (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user)
                                 FROM loaderfile",
                                &[],
                            )
                            .await;
                        let sample = match r {
                            Ok(row) => Sample {
                                at: Instant::now(),
                                loaded: row.get(0),
                                done: row.get(1),
                                error: row.get(2),
                                files: row.get(3),
                                conn: conn_no,
                                backends: row.get(4),
                            },
                            Err(e)
                                if e.code()
                                    == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                            {
                                Sample {
                                    at: Instant::now(),
                                    loaded: 0,
                                    done: 0,
                                    error: 0,
                                    files: 0,
                                    conn: conn_no,
                                    backends: 0,
                                }
                            }
                            Err(_) => break,
                        };
                        out.lock().unwrap().push(sample);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    conn.abort();
                }
                // Reconnect quickly: the first sample on a new connection is the
                // baseline after a database restart.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Monitor { samples, task }
    }

    fn all(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    fn last(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().copied()
    }

    /// The first sample taken at or after `t` (waits for it).
    async fn sample_after(&self, t: Instant, within: Duration) -> Result<Sample, String> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.all().into_iter().find(|s| s.at >= t) {
                return Ok(s);
            }
            if start.elapsed() > within {
                return Err(format!("no progress sample within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a sample satisfying `pred`.
    async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample, String> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.last() {
                if pred(&s) {
                    return Ok(s);
                }
                if s.error > 0 {
                    return Err(format!(
                        "{} file(s) ended in error while waiting for {what}",
                        s.error
                    ));
                }
            }
            if start.elapsed() > within {
                return Err(format!(
                    "timed out after {within:?} waiting for {what} (last sample: {:?})",
                    self.last()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until at least `min` rows are loaded and the rows are growing (the last
    /// sample is above the one before): a fault then hits loads in progress.
    async fn wait_growing(&self, min: i64) -> Result<Sample, String> {
        let start = Instant::now();
        loop {
            let recent: Vec<Sample> = {
                let all = self.samples.lock().unwrap();
                all[all.len().saturating_sub(2)..].to_vec()
            };
            if let [a, b] = recent[..] {
                if b.loaded >= min && b.loaded > a.loaded && b.done < b.files {
                    return Ok(b);
                }
                if b.error > 0 {
                    return Err(format!("{} file(s) ended in error", b.error));
                }
            }
            if start.elapsed() > Duration::from_secs(3600) {
                return Err(format!("rows never grew past {min}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Seconds from `fault` until the first sample above `baseline` taken after `from`.
    async fn recovery(
        &self,
        fault: Instant,
        from: Instant,
        baseline: i64,
        within: Duration,
    ) -> Result<f64, String> {
        let s = self
            .wait_for("rows to grow again", within, |s| {
                s.at >= from && s.loaded > baseline
            })
            .await?;
        Ok((s.at - fault).as_secs_f64())
    }

    /// The longest time without growth between `from` and `to` (seconds).
    fn longest_stall(&self, from: Instant, to: Instant) -> f64 {
        let mut last_growth = from;
        let mut prev: Option<i64> = None;
        let mut longest = 0f64;
        for s in self
            .all()
            .into_iter()
            .filter(|s| s.at >= from && s.at <= to)
        {
            if let Some(p) = prev {
                if s.loaded > p {
                    longest = longest.max((s.at - last_growth).as_secs_f64());
                    last_growth = s.at;
                }
            }
            prev = Some(s.loaded);
        }
        longest
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// The suite's context and one scenario's stage

struct DataSet {
    prefix: String,
    files: Vec<FileSpec>,
    /// The smallest gzipped file of the set, in bytes (set once the files are built).
    smallest_gz: u64,
}

impl DataSet {
    fn total(&self) -> u64 {
        self.files.iter().map(|f| f.count).sum()
    }
}

struct Ctx {
    settings: Settings,
    cluster: Cluster,
    sqs: aws_sdk_sqs::Client,
    bucket: String,
    main: DataSet,
    wide: DataSet,
    many: DataSet,
    logdir: PathBuf,
    run: String,
}

/// Per-scenario bookkeeping that survives the scenario's future (timeouts, panics).
#[derive(Default)]
struct Run {
    logs: Mutex<Vec<PathBuf>>,
    starts: Mutex<usize>,
    /// The scenario's database and load queue (for the failure report).
    db: Mutex<Option<String>>,
    queue: Mutex<Option<String>>,
}

/// What a passing scenario reports.
#[derive(Default)]
struct Report {
    faults: String,
    recoveries: Vec<f64>,
    stalls: Vec<f64>,
    rows: String,
    notes: Vec<String>,
}

struct Stage {
    db: String,
    db_url: String,
    queue_url: String,
    monitor: Monitor,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

impl Ctx {
    /// A fresh database (as owner siphon) and a fresh load queue with its DLQ.
    async fn stage(&self, run: &Run, name: &str) -> Result<Stage, String> {
        let db = format!("faults_{name}");
        *run.db.lock().unwrap() = Some(db.clone());
        let c = self.cluster.clone();
        let d = db.clone();
        blocking(move || -> Result<(), String> {
            c.psql(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"))?;
            c.psql(&format!("CREATE DATABASE {d} OWNER siphon"))?;
            Ok(())
        })
        .await?;
        let qname = format!("siphon-faults-{}-{name}", self.run);
        let dlq = self
            .sqs
            .create_queue()
            .queue_name(format!("{qname}-dlq"))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "create queue: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?
            .queue_url
            .unwrap_or_default();
        leftovers(|l| l.queues.push(dlq.clone()));
        let dlq_arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| format!("queue arn: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .unwrap_or_default();
        let queue_url = self
            .sqs
            .create_queue()
            .queue_name(&qname)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "960",
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "create queue: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?
            .queue_url
            .unwrap_or_default();
        leftovers(|l| l.queues.push(queue_url.clone()));
        *run.queue.lock().unwrap() = Some(queue_url.clone());
        let db_url = self.cluster.url(&db);
        let monitor = Monitor::start(db_url.clone());
        monitor
            .sample_after(Instant::now(), Duration::from_secs(30))
            .await?;
        Ok(Stage {
            db,
            db_url,
            queue_url,
            monitor,
        })
    }

    fn env(
        &self,
        st: &Stage,
        loaders: usize,
        extra: &[(&str, String)],
    ) -> BTreeMap<String, String> {
        let mut env = local::base_env(&st.db_url, &st.queue_url, loaders);
        for (k, v) in &self.settings.timing {
            env.insert(k.to_string(), v.to_string());
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.clone());
        }
        env
    }

    async fn start(
        &self,
        run: &Run,
        scenario: &str,
        label: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Local, String> {
        let n = {
            let mut s = run.starts.lock().unwrap();
            *s += 1;
            *s
        };
        let log = self.logdir.join(format!("{scenario}-{label}-{n:02}.log"));
        run.logs.lock().unwrap().push(log.clone());
        Local::start(&local::binary(), env, &log).await
    }

    async fn load(&self, local: &Local, set: &DataSet, threads: usize) -> Result<(), String> {
        let result = local
            .rpc(&json!({"method": "aidbox.bulk/load-from-bucket",
                          "params": {"bucket": format!("s3://{}/{}", self.bucket, set.prefix),
                                     "thread-num": threads}}))
            .await?;
        let queued = result["queued"].as_u64().unwrap_or(0);
        if queued != set.files.len() as u64 {
            return Err(format!(
                "load-from-bucket queued {queued} files, expected {}: {result}",
                set.files.len()
            ));
        }
        Ok(())
    }

    async fn wait_done(&self, st: &Stage, set: &DataSet) -> Result<Sample, String> {
        let n = set.files.len() as i64;
        st.monitor
            .wait_for("every file done", Duration::from_secs(3600), |s| {
                s.files == n && s.done == n
            })
            .await
    }

    /// The final check: every LoaderFile done with loaded = its lines and failed 0 (read
    /// through the API), and per table count(*) = count(distinct id) = generated.
    /// Returns the rows line and what the sweep did.
    /// After one fault at `fault`, the rows growing again `recovered` s later: waits for
    /// every file to end, checks the rows, and reports; `faults` (said once the load has
    /// ended, so log counts are whole) gets the sweep's doings appended.
    async fn after_one_fault(
        &self,
        st: &Stage,
        local: &Local,
        set: &DataSet,
        fault: Instant,
        recovered: f64,
        faults: impl FnOnce() -> String,
    ) -> Result<Report, String> {
        let end = self.wait_done(st, set).await?;
        let (rows, sweep) = self.verify(st, local, set).await?;
        let mut report = Report {
            recoveries: vec![recovered],
            stalls: vec![st.monitor.longest_stall(fault, end.at)],
            rows,
            faults: faults(),
            ..Default::default()
        };
        if !sweep.is_empty() {
            report.faults.push_str(&format!("; {sweep}"));
        }
        Ok(report)
    }

    async fn verify(
        &self,
        st: &Stage,
        api: &Local,
        set: &DataSet,
    ) -> Result<(String, String), String> {
        let bundle = api.get("/LoaderFile?_count=1000").await?;
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
        for e in entries {
            let r = e["resource"].clone();
            by_key.insert(r["file"].as_str().unwrap_or("").to_string(), r);
        }
        let mut problems = Vec::new();
        let (mut redelivered, mut requeued, mut other) = (0u64, 0u64, 0u64);
        let mut most = 0u64;
        for f in &set.files {
            let Some(r) = by_key.remove(&f.key) else {
                problems.push(format!("no LoaderFile for {}", f.key));
                continue;
            };
            if r["status"] != "done"
                || r["loaded"].as_u64() != Some(f.count)
                || r["failed"].as_u64() != Some(0)
            {
                problems.push(format!(
                    "{}: status {} loaded {} failed {} (expected done/{}/0){}",
                    f.key,
                    r["status"],
                    r["loaded"],
                    r["failed"],
                    f.count,
                    r.get("error")
                        .map(|e| format!(", error {e}"))
                        .unwrap_or_default()
                ));
            }
            if let Some(rec) = r.get("recovery") {
                let count = rec["count"].as_u64().unwrap_or(0);
                most = most.max(count);
                match rec["how"].as_str() {
                    Some("redelivered") => redelivered += count,
                    Some("requeued") => requeued += count,
                    _ => other += count,
                }
            }
        }
        for k in by_key.keys() {
            problems.push(format!("unexpected LoaderFile {k}"));
        }
        // As the superuser (a reserved slot: siphon may hold every other connection).
        let mut total = 0i64;
        let mut expected_total = 0u64;
        for (ty, expected) in data::expected_by_type(&set.files) {
            let (c, db) = (self.cluster.clone(), st.db.clone());
            let sql = format!(
                "SELECT count(*), count(DISTINCT id) FROM {}",
                ty.to_lowercase()
            );
            let out = blocking(move || c.query(&db, &sql))
                .await
                .map_err(|e| format!("count {ty}: {e}"))?;
            let mut parts = out
                .trim()
                .split(" | ")
                .map(|p| p.parse::<i64>().unwrap_or(-1));
            let (n, distinct) = (parts.next().unwrap_or(-1), parts.next().unwrap_or(-1));
            total += n;
            expected_total += expected;
            if n as u64 != expected || distinct as u64 != expected {
                problems.push(format!(
                    "{ty}: {n} rows, {distinct} distinct ids, expected {expected}"
                ));
            }
        }
        let rows = format!("{total}/{expected_total}");
        if !problems.is_empty() {
            return Err(format!(
                "final check failed (rows {rows}):\n    {}",
                problems.join("\n    ")
            ));
        }
        let mut sweep = Vec::new();
        if redelivered > 0 {
            sweep.push(format!("{redelivered} redelivered"));
        }
        if requeued > 0 {
            sweep.push(format!("{requeued} requeued"));
        }
        if other > 0 {
            sweep.push(format!("{other} other"));
        }
        if most > 1 {
            sweep.push(format!("up to {most} on one file"));
        }
        Ok((
            rows,
            if sweep.is_empty() {
                String::new()
            } else {
                format!("sweep: {}", sweep.join(", "))
            },
        ))
    }
}

impl Ctx {
    /// What the LoaderFiles and the load queue look like now (for a failure report).
    async fn state_of(&self, run: &Run) -> String {
        let mut out = String::new();
        let db = run.db.lock().unwrap().clone();
        if let Some(db) = db {
            let c = self.cluster.clone();
            let sql = "SELECT resource->>'file', resource->>'status', resource->>'loaded', \
                       resource->'checkpoint'->>'line', coalesce(resource->'lease'->>'until', '-'), \
                       coalesce(resource->>'recovery', '-'), coalesce(resource->>'error', '-') \
                       FROM loaderfile ORDER BY 1";
            let text = blocking(move || c.query(&db, sql))
                .await
                .unwrap_or_else(|e| e);
            out.push_str("   LoaderFiles (file | status | loaded | checkpoint | lease until | recovery | error), db now: ");
            let c = self.cluster.clone();
            let now = blocking(move || c.query("postgres", "SELECT now()"))
                .await
                .unwrap_or_default();
            out.push_str(now.trim());
            for line in text.lines() {
                out.push_str("\n     ");
                out.push_str(line);
            }
        }
        let queue = run.queue.lock().unwrap().clone();
        if let Some(q) = queue {
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(&q)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .ok()
                .and_then(|a| a.attributes)
                .unwrap_or_default();
            let get = |k: aws_sdk_sqs::types::QueueAttributeName| {
                attrs.get(&k).cloned().unwrap_or_else(|| "?".into())
            };
            let (visible, in_flight, delayed) = (
                get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
                get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            );
            out.push_str(&format!(
                "\n   load queue: {visible} visible, {in_flight} in flight, {delayed} delayed"
            ));
            let pending = out.matches(" | pending | ").count();
            if pending > 0 && visible == "0" && delayed == "0" && in_flight != "0" {
                out.push_str(&format!(
                    "\n   diagnosis: {pending} file(s) pending with no visible or delayed message: their \
                     message is in flight to a worker that died before claiming the file (or before \
                     re-queuing it); the sweep only recovers in-progress files, so they wait for the \
                     queue's visibility timeout (960 s)"
                ));
            }
        }
        out
    }
}

impl Ctx {
    /// Returns (only) when a file of the scenario is stranded: `pending` while the load
    /// queue holds no visible or delayed message for it, for longer than the sweep could
    /// need. Such a file's only message is in flight to a dead worker.
    async fn watchdog(&self, run: &Run) -> String {
        let threshold = self.settings.stranded_after;
        let mut since: Option<Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let db = run.db.lock().unwrap().clone();
            let queue = run.queue.lock().unwrap().clone();
            let (Some(db), Some(queue)) = (db, queue) else {
                continue;
            };
            let c = self.cluster.clone();
            let pending: i64 = blocking(move || {
                c.query(
                    &db,
                    "SELECT count(*) FROM loaderfile WHERE resource->>'status' = 'pending'",
                )
            })
            .await
            .ok()
            .and_then(|o| o.trim().parse().ok())
            .unwrap_or(0);
            let attrs = self
                .sqs
                .get_queue_attributes()
                .queue_url(&queue)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .ok()
                .and_then(|a| a.attributes)
                .unwrap_or_default();
            let n = |k: aws_sdk_sqs::types::QueueAttributeName| -> i64 {
                attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(-1)
            };
            let visible = n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages);
            let delayed =
                n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed);
            let in_flight =
                n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
            if pending > 0 && visible == 0 && delayed == 0 {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() > threshold {
                    return format!(
                        "stranded: {pending} file(s) pending for over {} s with no visible or \
                         delayed load message ({in_flight} in flight)",
                        threshold.as_secs()
                    );
                }
            } else {
                since = None;
            }
        }
    }
}

/// Lines of the logs containing `needle`.
fn count_in_logs(run: &Run, needle: &str) -> usize {
    run.logs
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// Stagings of the kill scenario at most, when the load keeps finishing first.
const KILL_ATTEMPTS: u64 = 3;

/// 1. kill -9 of the whole process group at K random row counts, restarted at once.
///
/// A load that ends before a kill needed recovering from tested nothing (the reduced suite's load
/// takes about a second): it is staged again with other points, and the scenario fails
/// when no attempt injected a kill.
async fn kills(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    for attempt in 1..=KILL_ATTEMPTS {
        let name = match attempt {
            1 => "kill".to_string(),
            n => format!("kill{n}"),
        };
        let seed = ctx.settings.seed.wrapping_add(attempt - 1);
        let (mut report, recovered) = kill_run(ctx, run, &name, seed).await?;
        if recovered > 0 {
            if attempt > 1 {
                report.notes.push(format!(
                    "staged {attempt} times: the earlier loads ended before their first kill point"
                ));
            }
            return Ok(report);
        }
        println!("  the load ended before its first kill point: staged again ({attempt}/{KILL_ATTEMPTS})");
    }
    Err(format!(
        "every load ended before its first kill point ({KILL_ATTEMPTS} attempts): no kill was tested"
    ))
}

/// One staging of scenario 1; returns the report and how many kills it recovered from
/// (kills that found the load already over do not count).
async fn kill_run(ctx: &Ctx, run: &Run, name: &str, seed: u64) -> Result<(Report, usize), String> {
    let set = &ctx.main;
    let st = ctx.stage(run, name).await?;
    let env = ctx.env(&st, 4, &[]);
    let mut local = ctx.start(run, "1-kill", "local", &env).await?;
    ctx.load(&local, set, 4).await?;
    let total = set.total() as i64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The reduced suite's load is short: its points lie in the first half.
    let last = if ctx.settings.ci {
        total / 2
    } else {
        total * 9 / 10
    };
    let mut points: Vec<i64> = (0..ctx.settings.kills)
        .map(|_| rng.random_range(total / 20..last))
        .collect();
    points.sort();
    let mut report = Report::default();
    let mut fault_times = Vec::new();
    let mut done_early = 0;
    for (i, point) in points.iter().enumerate() {
        let s = st
            .monitor
            .wait_for(
                &format!("{point} rows (kill {})", i + 1),
                Duration::from_secs(3600),
                |s| s.loaded >= *point || (s.files > 0 && s.done == s.files),
            )
            .await?;
        if s.files > 0 && s.done == s.files {
            done_early = points.len() - i;
            break;
        }
        local.kill().await;
        let fault = Instant::now();
        fault_times.push(fault);
        local = ctx.start(run, "1-kill", "local", &env).await?;
        // An in-flight COMMIT may still land just after the kill: the baseline is read
        // once the dead process's backends are gone.
        let base = st
            .monitor
            .sample_after(fault + Duration::from_millis(150), Duration::from_secs(30))
            .await?;
        if base.files > 0 && base.done == base.files {
            // The last batch committed just before the kill: nothing left to recover.
            done_early = points.len() - i - 1;
            println!(
                "  kill {}/{}: the load had just finished",
                i + 1,
                points.len()
            );
            break;
        }
        let r = st
            .monitor
            .recovery(fault, base.at, base.loaded, Duration::from_secs(3600))
            .await?;
        println!(
            "  kill {}/{} at {} rows: rows grow again after {r:.1} s",
            i + 1,
            points.len(),
            base.loaded
        );
        report.recoveries.push(r);
    }
    let end = ctx.wait_done(&st, set).await?;
    for (i, f) in fault_times.iter().enumerate() {
        let to = fault_times.get(i + 1).copied().unwrap_or(end.at);
        report.stalls.push(st.monitor.longest_stall(*f, to));
    }
    let (rows, sweep) = ctx.verify(&st, &local, set).await?;
    report.rows = rows;
    report.faults = format!("{} kill -9", fault_times.len());
    if !sweep.is_empty() {
        report.faults.push_str(&format!("; {sweep}"));
    }
    if done_early > 0 {
        report.notes.push(format!(
            "{done_early} kill point(s) not reached: the load finished first"
        ));
    }
    let recovered = report.recoveries.len();
    Ok((report, recovered))
}

/// 2. The same load message delivered twice, concurrently, to two processes.
async fn duplicates(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let set = &ctx.main;
    let st = ctx.stage(run, "dup").await?;
    // More loaders than files: each message (original or copy) is received at once.
    let env = ctx.env(&st, 8, &[]);
    let a = ctx.start(run, "2-dup", "a", &env).await?;
    let b = ctx.start(run, "2-dup", "b", &env).await?;
    let threads = set.files.len();
    ctx.load(&a, set, threads).await?;
    // The same bodies load-from-bucket sent, built from the LoaderFiles.
    let bundle = a.get("/LoaderFile?_count=1000").await?;
    let mut bodies = Vec::new();
    for e in bundle["entry"].as_array().cloned().unwrap_or_default() {
        let r = &e["resource"];
        let message = siphon::queue::LoadMessage {
            loader_file_id: r["id"].as_str().unwrap_or("").to_string(),
            bucket: r["bucket"].as_str().unwrap_or("").to_string(),
            key: r["file"].as_str().unwrap_or("").to_string(),
            etag: r["etag"].as_str().map(str::to_string),
            store: Default::default(),
        };
        bodies.push(serde_json::to_string(&message).unwrap());
    }
    if bodies.len() != set.files.len() {
        return Err(format!(
            "{} LoaderFiles, expected {}",
            bodies.len(),
            set.files.len()
        ));
    }
    for group in bodies.chunks(10) {
        let mut req = ctx.sqs.send_message_batch().queue_url(&st.queue_url);
        for (i, body) in group.iter().enumerate() {
            req = req.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .unwrap(),
            );
        }
        req.send().await.map_err(|e| {
            format!(
                "send duplicates: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?;
    }
    ctx.wait_done(&st, set).await?;
    let mut report = Report::default();
    if !ctx.settings.ci {
        // Let every copy be consumed (a busy one comes back after 60 s) before counting.
        let start = Instant::now();
        loop {
            let attrs = ctx
                .sqs
                .get_queue_attributes()
                .queue_url(&st.queue_url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "queue attributes: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?
                .attributes
                .unwrap_or_default();
            let n: u64 = [
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ]
            .iter()
            .filter_map(|k| attrs.get(k)?.parse::<u64>().ok())
            .sum();
            if n == 0 {
                report.notes.push(format!(
                    "queue drained {:.0} s after the last file",
                    secs(start.elapsed())
                ));
                break;
            }
            if start.elapsed() > Duration::from_secs(180) {
                report
                    .notes
                    .push(format!("queue still holds {n} message(s) after 180 s"));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    } else {
        report
            .notes
            .push("ci: copies re-queued as busy (60 s delay) not waited for".into());
    }
    let (rows, sweep) = ctx.verify(&st, &a, set).await?;
    report.rows = rows;
    let busy = count_in_logs(run, "busy: another loader holds the file");
    let nothing = count_in_logs(run, "nothing to do");
    let lost = count_in_logs(run, "lease lost to another loader");
    report.faults = format!(
        "{} copies sent; busy {busy}, nothing-to-do {nothing}, lease-lost {lost}",
        bodies.len()
    );
    if !sweep.is_empty() {
        report.faults.push_str(&format!("; {sweep}"));
    }
    drop(b);
    Ok(report)
}

/// 3. PostgreSQL restarted mid-load.
async fn pg_restart(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let set = &ctx.main;
    let st = ctx.stage(run, "pgrestart").await?;
    let env = ctx.env(&st, 4, &[]);
    let local = ctx.start(run, "3-pgrestart", "local", &env).await?;
    ctx.load(&local, set, 4).await?;
    let total = set.total() as i64;
    st.monitor.wait_growing(total * 3 / 10).await?;
    let before = st.monitor.last().map(|s| s.conn).unwrap_or(0);
    let fault = Instant::now();
    let c = ctx.cluster.clone();
    blocking(move || c.ctl("restart")).await?;
    let back = Instant::now();
    // The first sample on a new connection: what was committed before the database went
    // away (siphon retries after 1 s at the earliest; the monitor reconnects every 20 ms).
    let base = st
        .monitor
        .wait_for("the database back", Duration::from_secs(60), |s| {
            s.conn > before
        })
        .await?;
    let r = if base.files > 0 && base.done == base.files {
        // Everything loaded before the monitor got back in: an upper bound.
        (base.at - fault).as_secs_f64()
    } else {
        st.monitor
            .recovery(fault, base.at, base.loaded, Duration::from_secs(3600))
            .await?
    };
    println!(
        "  restart took {:.1} s; rows grow again {r:.1} s after it began",
        secs(back - fault)
    );
    ctx.after_one_fault(&st, &local, set, fault, r, || {
        format!(
            "1 restart ({:.1} s); {} transient retries logged",
            secs(back - fault),
            count_in_logs(run, "transient failure")
        )
    })
    .await
}

/// 4. Every open S3 connection cut mid-body.
async fn s3_cut(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let set = &ctx.main;
    let st = ctx.stage(run, "s3cut").await?;
    let upstream: SocketAddr = LOCALSTACK.parse().unwrap();
    let rate = S3_LINK_BYTES_PER_S.min(set.smallest_gz / S3_LINK_SECONDS_PER_FILE);
    let proxy = Proxy::start(upstream, Some(rate.max(16 * 1024)))
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let env = ctx.env(&st, 4, &[("AWS_ENDPOINT_URL_S3", proxy.url())]);
    let local = ctx.start(run, "4-s3cut", "local", &env).await?;
    ctx.load(&local, set, 4).await?;
    let total = set.total() as i64;
    st.monitor.wait_growing(total / 5).await?;
    // Cut while a body is still coming through the slow link: a cut that lands between
    // requests (bodies already in the loaders' socket buffers, connections idle in the
    // pool) tests nothing, and on a fast machine 20% of the rows can mean exactly that.
    let Some((cut, mid)) = proxy.cut_mid_answer(Duration::from_secs(120)).await else {
        return Err("no S3 answer was in flight within 120 s of the rows growing".into());
    };
    let fault = Instant::now();
    let base = st.monitor.last().map(|s| s.loaded).unwrap_or(0);
    let r = st
        .monitor
        .recovery(fault, fault, base, Duration::from_secs(3600))
        .await?;
    let mut interrupted = 0;
    let report = ctx
        .after_one_fault(&st, &local, set, fault, r, || {
            interrupted = count_in_logs(run, "transient failure");
            format!(
                "1 cut of {cut} open S3 connection(s), {mid} mid-answer ({} forwarded in all); {interrupted} load(s) resumed from a checkpoint",
                proxy.accepted()
            )
        })
        .await?;
    if cut == 0 || interrupted == 0 {
        return Err(format!(
            "the cut interrupted no load ({cut} connections open, {mid} mid-answer, \
             {interrupted} retries logged)"
        ));
    }
    Ok(report)
}

/// 5. SQS unreachable for 10 s mid-load.
async fn sqs_outage(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let set = &ctx.main;
    let st = ctx.stage(run, "sqsdown").await?;
    let upstream: SocketAddr = LOCALSTACK.parse().unwrap();
    let proxy = Proxy::start(upstream, None)
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let env = ctx.env(&st, 4, &[("AWS_ENDPOINT_URL_SQS", proxy.url())]);
    let local = ctx.start(run, "5-sqsdown", "local", &env).await?;
    // thread-num 2 with 4 loaders: as with Lambda concurrency above thread-num, loaders
    // also receive messages for files they may not start yet and re-queue them.
    ctx.load(&local, set, 2).await?;
    let total = set.total() as i64;
    st.monitor.wait_growing(total * 3 / 10).await?;
    let kind = match std::env::var("SIPHON_FAULTS_SQS_OUTAGE").as_deref() {
        Ok("blackhole") => Outage::Blackhole,
        _ => Outage::Refuse,
    };
    let fault = Instant::now();
    let base = st.monitor.last().map(|s| s.loaded).unwrap_or(0);
    let outage = Duration::from_secs(10);
    let cut = proxy
        .outage(kind, outage)
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let r = st
        .monitor
        .recovery(fault, fault, base, Duration::from_secs(3600))
        .await?;
    ctx.after_one_fault(&st, &local, set, fault, r, || {
        format!(
            "SQS {kind:?} 10 s ({cut} connection(s) cut); {} receive errors logged",
            count_in_logs(run, "receive failed")
        )
    })
    .await
}

/// 6. 16 concurrent loaders against max_connections = 20.
async fn connections(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let set = &ctx.wide;
    let c = ctx.cluster.clone();
    blocking(move || c.set_max_connections(Some(20))).await?;
    let st = ctx.stage(run, "conns").await?;
    let env = ctx.env(&st, 16, &[]);
    let local = ctx.start(run, "6-conns", "local", &env).await?;
    let start = Instant::now();
    ctx.load(&local, set, 16).await?;
    let end = ctx.wait_done(&st, set).await?;
    let mut report = Report {
        stalls: vec![st.monitor.longest_stall(start, end.at)],
        ..Default::default()
    };
    let (rows, sweep) = ctx.verify(&st, &local, set).await?;
    report.rows = rows;
    let (c, db) = (ctx.cluster.clone(), st.db.clone());
    let max = blocking(move || c.query(&db, "SHOW max_connections"))
        .await
        .unwrap_or_default();
    let peak = st
        .monitor
        .all()
        .iter()
        .map(|s| s.backends)
        .max()
        .unwrap_or(0);
    report.faults = format!(
        "max_connections {}; peak {peak} siphon backends; {} refusals, {} transient retries logged",
        max.trim(),
        count_in_logs(run, "too many clients") + count_in_logs(run, "remaining connection slots"),
        count_in_logs(run, "transient failure")
    );
    if !sweep.is_empty() {
        report.faults.push_str(&format!("; {sweep}"));
    }
    Ok(report)
}

/// Server connections PgBouncer may open in scenario 7 (the figure).
const POOLER_SERVER_CONNECTIONS: u32 = 10;
/// Scenario 7's workers in one siphon-local: loaders and export workers.
const POOLER_LOADERS: usize = 64;
const POOLER_EXPORTERS: usize = 8;
/// Client connections siphon-local may hold (both rounds: the direct one must stay under
/// the cluster's max_connections of 100).
const POOLER_CLIENT_POOL: &str = "80";

/// What one round of scenario 7 measured.
struct PoolRound {
    rows: String,
    sweep: String,
    /// Resources loaded per second, from the load-from-bucket call to the last file done.
    rate: f64,
    exports: usize,
    exported: u64,
    /// Most backends of role siphon seen at once (the monitor's included).
    peak_backends: i64,
}

/// A queue for one round's export tasks (deleted at the end of the run).
async fn export_queue(ctx: &Ctx, name: &str) -> Result<String, String> {
    let url = ctx
        .sqs
        .create_queue()
        .queue_name(format!("siphon-faults-{}-{name}-export", ctx.run))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "120",
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "create queue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .unwrap_or_default();
    leftovers(|l| l.queues.push(url.clone()));
    Ok(url)
}

/// Kicks off a system `$export` of every generated type; returns its status path.
async fn kick_export(local: &Local) -> Result<String, String> {
    let (status, head, body) = http::exchange(
        local.addr,
        "GET",
        &format!("/$export?_type={}", siphon_tests::gen::TYPES.join(",")),
        &local::admin(),
        "accept: application/fhir+json\r\nprefer: respond-async\r\n",
        None,
        Duration::from_secs(60),
    )
    .await?;
    if status != 202 {
        return Err(format!("$export kick-off: {status} {body}"));
    }
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("content-location:"))
        .map(str::trim)
        .ok_or("$export kick-off: no content-location")?;
    let path = location
        .find("/$export-status/")
        .map(|i| location[i..].to_string())
        .ok_or_else(|| format!("$export kick-off: content-location {location}"))?;
    Ok(path)
}

/// Polls an export until its manifest (200); returns the resources it lists.
async fn finish_export(local: &Local, path: &str) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, body) = http::request(
            local.addr,
            "GET",
            path,
            &local::admin(),
            None,
            Duration::from_secs(60),
        )
        .await?;
        match status {
            200 => {
                let errors = body["error"].as_array().map(Vec::len).unwrap_or(0);
                if errors > 0 {
                    return Err(format!("export {path} ended with errors: {body}"));
                }
                return Ok(body["output"]
                    .as_array()
                    .map(|o| o.iter().filter_map(|f| f["count"].as_u64()).sum())
                    .unwrap_or(0));
            }
            202 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            _ => return Err(format!("export {path}: {status} {body}")),
        }
    }
}

/// One round of scenario 7: 64 loaders and 8 export workers in one siphon-local on
/// `db_url` (direct, or through the pooler): 32 files loaded at thread-num 64, 8 exports
/// kicked off once a quarter of all rows are in, then 32 more files while they run.
async fn pool_round(
    ctx: &Ctx,
    run: &Run,
    label: &str,
    bouncer: Option<&pooler::Bouncer>,
) -> Result<PoolRound, String> {
    let set = &ctx.many;
    let st = ctx.stage(run, &format!("pool_{label}")).await?;
    let exports = export_queue(ctx, label).await?;
    let db_url = match bouncer {
        Some(b) => b.url(&st.db_url, ctx.cluster.port),
        None => st.db_url.clone(),
    };
    let env = ctx.env(
        &st,
        POOLER_LOADERS,
        &[
            ("DATABASE_URL", db_url),
            ("SIPHON_DB_POOL_SIZE", POOLER_CLIENT_POOL.into()),
            ("SIPHON_LOCAL_EXPORTERS", POOLER_EXPORTERS.to_string()),
            ("SIPHON_EXPORT_QUEUE_URL", exports),
            ("SIPHON_EXPORT_BUCKET", ctx.bucket.clone()),
            ("SIPHON_EXPORT_PREFIX", format!("exports-{label}/")),
            ("SIPHON_EXPORT_MAX_ACTIVE", "16".into()),
        ],
    );
    let local = ctx.start(run, "7-pooler", label, &env).await?;
    let half = |part: &str| DataSet {
        prefix: format!("many/{part}/"),
        files: set
            .files
            .iter()
            .filter(|f| f.key.starts_with(&format!("many/{part}/")))
            .cloned()
            .collect(),
        smallest_gz: 0,
    };
    let (first, second) = (half("a"), half("b"));
    let start = Instant::now();
    ctx.load(&local, &first, POOLER_LOADERS).await?;
    let quarter = (set.total() / 4) as i64;
    st.monitor
        .wait_for("a quarter of the rows", Duration::from_secs(600), |s| {
            s.loaded >= quarter
        })
        .await?;
    let mut paths = Vec::new();
    for _ in 0..POOLER_EXPORTERS {
        paths.push(kick_export(&local).await?);
    }
    // More files arrive while the exports run and the first half still loads.
    ctx.load(&local, &second, POOLER_LOADERS).await?;
    let end = ctx.wait_done(&st, set).await?;
    let took = end.at.duration_since(start);
    let mut exported = 0;
    for p in &paths {
        exported += finish_export(&local, p).await?;
    }
    let (rows, sweep) = ctx.verify(&st, &local, set).await?;
    let peak_backends = st
        .monitor
        .all()
        .iter()
        .map(|s| s.backends)
        .max()
        .unwrap_or(0);
    Ok(PoolRound {
        rows,
        sweep,
        rate: set.total() as f64 / took.as_secs_f64().max(0.001),
        exports: paths.len(),
        exported,
        peak_backends,
    })
}

/// Scenario 7: 64 loaders and 8 export workers through PgBouncer in transaction mode with 10
/// server connections, against the same work on direct connections in the same run:
/// rows exact, every file done with nothing failed, every export complete without
/// errors, no server connection beyond the pooler's 10, no statement lost between
/// server connections (`prepared statement ... does not exist`).
async fn pooler(ctx: &Ctx, run: &Run) -> Result<Report, String> {
    let direct = pool_round(ctx, run, "direct", None).await?;
    let log = ctx.logdir.join("7-pooler-pgbouncer.log");
    run.logs.lock().unwrap().push(log.clone());
    let bouncer = pooler::Bouncer::start(
        ctx.cluster.port,
        ctx.cluster.password(),
        POOLER_SERVER_CONNECTIONS,
        &log,
    )
    .await?;
    let pooled = pool_round(ctx, run, "pooled", Some(&bouncer)).await?;
    let server_connections = bouncer.server_connections;
    drop(bouncer);
    let lost = count_in_logs(run, "prepared statement");
    if lost > 0 {
        return Err(format!(
            "{lost} log line(s) name a prepared statement: a statement outlived its server connection"
        ));
    }
    // The pooler's server connections plus the monitor's own.
    let ceiling = server_connections as i64 + 1;
    if pooled.peak_backends > ceiling {
        return Err(format!(
            "{} backends of role siphon through a pooler of {} server connections",
            pooled.peak_backends, server_connections
        ));
    }
    let mut report = Report {
        rows: pooled.rows,
        ..Default::default()
    };
    report.faults = format!(
        "pgbouncer {} server conns: {:.0} rows/s vs {:.0} direct (ratio {:.2}); peak {} vs {} backends",
        POOLER_SERVER_CONNECTIONS,
        pooled.rate,
        direct.rate,
        pooled.rate / direct.rate,
        pooled.peak_backends,
        direct.peak_backends
    );
    report.notes.push(format!(
        "{} exports complete in each round ({} resources listed pooled, {} direct); direct rows {}",
        pooled.exports, pooled.exported, direct.exported, direct.rows
    ));
    for (label, sweep) in [("direct", direct.sweep), ("pooled", pooled.sweep)] {
        if !sweep.is_empty() {
            report.notes.push(format!("{label}: {sweep}"));
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Runner

struct Outcome {
    name: &'static str,
    report: Option<Report>,
    error: Option<String>,
    elapsed: f64,
    logs: Vec<PathBuf>,
}

fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.len() == 1 {
        return format!("{:.1}", s[0]);
    }
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    format!("{:.1}/{:.1}/{:.1}", s[0], median, s[s.len() - 1])
}

async fn suite(settings: Settings) -> i32 {
    let t0 = Instant::now();
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let logdir = siphon_tests::repo_root().join("target/faults").join(&run);
    std::fs::create_dir_all(&logdir).unwrap();
    let bin = local::binary();
    if !bin.exists() {
        eprintln!(
            "{} is missing: cargo build --release -p siphon-local",
            bin.display()
        );
        return 2;
    }
    println!(
        "siphon-faults ({} mode): seed {}, logs in {}",
        if settings.ci { "ci" } else { "full" },
        settings.seed,
        logdir.display()
    );
    // The cluster.
    let version = std::env::var("SIPHON_FAULTS_PG_VERSION")
        .ok()
        .or_else(cluster::installed_version)
        .unwrap_or_else(|| "15".into());
    let port: u16 = std::env::var("SIPHON_FAULTS_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(55433);
    let v = version.clone();
    let created = blocking(move || Cluster::create(&v, "siphonfaults", port)).await;
    let cluster = match created {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot create the cluster: {e}");
            return 2;
        }
    };
    leftovers(|l| {
        l.cluster = Some(cluster.clone());
        l.logdir = Some(logdir.clone());
    });
    println!(
        "cluster {}/{} on 127.0.0.1:{}",
        cluster.version, cluster.name, cluster.port
    );
    // The data.
    let s3 = siphon_tests::s3().await;
    let sqs = siphon_tests::sqs().await;
    let bucket = format!("siphon-faults-{run}");
    if let Err(e) = s3.create_bucket().bucket(&bucket).send().await {
        eprintln!(
            "create bucket: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        );
        return 2;
    }
    leftovers(|l| l.buckets.push(bucket.clone()));
    let types: Vec<&'static str> = siphon_tests::gen::TYPES.to_vec();
    let mut main = DataSet {
        prefix: "main/".into(),
        files: data::plan("main/", settings.main_files, settings.main_per_file, &types),
        smallest_gz: 0,
    };
    let mut wide = DataSet {
        prefix: "wide/".into(),
        files: data::plan("wide/", settings.wide_files, settings.wide_per_file, &types),
        smallest_gz: 0,
    };
    // Scenario 7 loads the first half, then the second while its exports run: two
    // prefixes, one id space (planned as one set, so no id is in both halves).
    let mut many_files = data::plan("many/", settings.many_files, settings.many_per_file, &types);
    let half = many_files.len() / 2;
    for (i, f) in many_files.iter_mut().enumerate() {
        let part = if i < half { "many/a/" } else { "many/b/" };
        f.key = f.key.replacen("many/", part, 1);
    }
    let mut many = DataSet {
        prefix: "many/".into(),
        files: many_files,
        smallest_gz: 0,
    };
    let gen_start = Instant::now();
    let mut raw_total = 0u64;
    for set in [&mut main, &mut wide, &mut many] {
        let specs = set.files.clone();
        let built = blocking(move || data::build(&specs, SEED)).await;
        set.smallest_gz = built.iter().map(|b| b.1.len() as u64).min().unwrap_or(0);
        for (spec, bytes, raw) in built {
            raw_total += raw;
            siphon_tests::put(&s3, &bucket, &spec.key, bytes).await;
        }
    }
    println!(
        "data: s3://{bucket}/main/ {} files x {}, wide/ {} files x {}, many/ {} files x {} \
         ({:.0} MB uncompressed, smallest main file {} KB gzipped) in {:.1} s",
        main.files.len(),
        settings.main_per_file,
        wide.files.len(),
        settings.wide_per_file,
        many.files.len(),
        settings.many_per_file,
        raw_total as f64 / 1e6,
        main.smallest_gz / 1000,
        secs(gen_start.elapsed())
    );
    let ctx = Ctx {
        settings: settings.clone(),
        cluster,
        sqs,
        bucket,
        main,
        wide,
        many,
        logdir: logdir.clone(),
        run,
    };
    type Scenario =
        for<'a> fn(&'a Ctx, &'a Run) -> futures::future::BoxFuture<'a, Result<Report, String>>;
    let scenarios: Vec<(usize, &'static str, Scenario)> = vec![
        (1, "1 kill -9 process group", |c, r| Box::pin(kills(c, r))),
        (2, "2 message delivered twice", |c, r| {
            Box::pin(duplicates(c, r))
        }),
        (3, "3 postgres restart", |c, r| Box::pin(pg_restart(c, r))),
        (4, "4 s3 connections cut", |c, r| Box::pin(s3_cut(c, r))),
        (5, "5 sqs unreachable 10 s", |c, r| {
            Box::pin(sqs_outage(c, r))
        }),
        (6, "6 16 loaders, 20 conns", |c, r| {
            Box::pin(connections(c, r))
        }),
        (7, "7 64+8 workers, pgbouncer", |c, r| {
            Box::pin(pooler(c, r))
        }),
    ];
    let mut outcomes = Vec::new();
    for (n, name, f) in scenarios {
        if let Some(only) = &settings.only {
            if !only.contains(&n) {
                continue;
            }
        }
        let mut bound = settings.bound;
        if let Some(b) = settings.bound_override {
            bound = b;
        }
        if n == 1 && settings.bound_override.is_none() {
            // A file killed again within 120 s of its last recovery waits for the sweep's
            // fixed `again` window (120 s): allow for it (liveness, not speed).
            bound += Duration::from_secs(120)
                * if settings.ci {
                    1
                } else {
                    settings.kills as u32
                };
        }
        println!("== {name} (bound {} s)", bound.as_secs());
        let run = Run::default();
        let start = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(
                bound,
                std::panic::AssertUnwindSafe(f(&ctx, &run)).catch_unwind(),
            ) => Ok(r),
            why = ctx.watchdog(&run) => Err(why),
        };
        let elapsed = secs(start.elapsed());
        let (report, error) = match result {
            Err(why) => (None, Some(why)),
            Ok(result) => match result {
                Ok(Ok(Ok(r))) => (Some(r), None),
                Ok(Ok(Err(e))) => (None, Some(e)),
                Ok(Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    (None, Some(format!("panicked: {msg}")))
                }
                Err(_) => (
                    None,
                    Some(format!("exceeded its bound of {} s", bound.as_secs())),
                ),
            },
        };
        if n == 6 {
            let c = ctx.cluster.clone();
            if let Err(e) = blocking(move || c.set_max_connections(None)).await {
                eprintln!("cannot restore max_connections: {e}");
            }
        }
        match (&report, &error) {
            (Some(r), _) => {
                println!("   pass in {elapsed:.1} s: rows {}, {}", r.rows, r.faults);
                for note in &r.notes {
                    println!("   note: {note}");
                }
            }
            (_, Some(e)) => {
                println!("   FAIL in {elapsed:.1} s: {e}");
                println!("{}", ctx.state_of(&run).await);
            }
            _ => {}
        }
        outcomes.push(Outcome {
            name,
            report,
            error,
            elapsed,
            logs: run.logs.into_inner().unwrap(),
        });
    }
    // The table.
    let mut table = String::new();
    table.push_str(&format!(
        "\n{:<27} {:<72} {:>17} {:>9} {:>15} {:>7}  {}\n",
        "scenario", "faults injected", "recovery s", "stall s", "rows", "time s", "result"
    ));
    table.push_str(&format!(
        "{:<27} {:<72} {:>17} {:>9} {:>15} {:>7}\n",
        "", "", "(min/med/max)", "(max)", "", ""
    ));
    let mut failed = 0;
    for o in &outcomes {
        let (faults, rec, stall, rows) = match &o.report {
            Some(r) => (
                r.faults.clone(),
                stats(&r.recoveries),
                r.stalls
                    .iter()
                    .cloned()
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "-".into()),
                r.rows.clone(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let result = if o.error.is_none() { "pass" } else { "FAIL" };
        if o.error.is_some() {
            failed += 1;
        }
        table.push_str(&format!(
            "{:<27} {:<72} {:>17} {:>9} {:>15} {:>7.1}  {}\n",
            o.name, faults, rec, stall, rows, o.elapsed, result
        ));
    }
    table.push_str(&format!(
        "\n{} of {} scenarios passed; total {:.0} s\n",
        outcomes.len() - failed,
        outcomes.len(),
        secs(t0.elapsed())
    ));
    print!("{table}");
    let _ = std::fs::write(logdir.join("summary.txt"), &table);
    for o in outcomes.iter().filter(|o| o.error.is_some()) {
        println!("\n{} failed: {}", o.name, o.error.as_deref().unwrap_or(""));
        println!("  child logs:");
        for l in &o.logs {
            println!("    {}", l.display());
        }
        println!(
            "  postgres log (copied when the cluster is dropped): {}",
            ctx.logdir.join("postgres.log").display()
        );
    }
    if failed > 0 {
        1
    } else {
        0
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_args();
    siphon_tests::use_local_aws();
    let guard = Guard;
    let code = {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            code = suite(settings) => code,
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted: cleaning up"); 130 }
            _ = term.recv() => { eprintln!("terminated: cleaning up"); 143 }
        }
    };
    drop(guard);
    std::process::exit(code);
}
