//! Crash recovery without waiting for SQS (SPEC section 9): a worker killed mid-file
//! stops renewing its lease; the LoaderFile says it is stalled; the sweep makes the very
//! message the dead worker held visible again (or queues a new one when there is none),
//! and the next worker finishes the file from its checkpoint, exactly.
//!
//! The queue's visibility timeout is 900 s here, so only the worker's own hold on its
//! message (renewed while it lives, one lease long) or the sweep can explain a recovery
//! within the test's bounds. "Killed" is a tokio task aborted mid-load: its
//! futures are dropped at an await point, as a process dies between two instructions
//! (the decoder thread sees its channel close and stops; the heartbeat stops).

mod api_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{call, count, distinct_ids, drain, setup, Env};
use serde_json::{json, Value};
use siphon::loading::{LoadOptions, Loader};
use siphon::model::{FileOptions, LoaderFile, ObjectLocation};
use siphon::sources::s3::S3Source;
use siphon::sweep::{SweepOptions, Sweeper};
use siphon_tests::{gen, put};

fn short_leases() -> LoadOptions {
    LoadOptions {
        batch_rows: 500,
        lease: Duration::from_millis(1500),
        heartbeat: Duration::from_millis(300),
        ..LoadOptions::default()
    }
}

/// The load queue, except that changing a message's visibility to anything but "now"
/// fails, as it does when SQS refuses ChangeMessageVisibility (throttled, or the call
/// cannot get through): the worker cannot hold its message short, it stays invisible for
/// the queue's 900 s, and only the sweep can bring it back. A stand-in for an SQS failure
/// LocalStack cannot be asked to produce for one call kind.
struct CannotHold(Arc<siphon::queue::SqsQueue>);

impl siphon::queue::MessageQueue for CannotHold {
    fn send_bodies<'a>(
        &'a self,
        bodies: Vec<String>,
        delay_seconds: Option<i32>,
    ) -> futures::future::BoxFuture<'a, siphon::error::Result<()>> {
        self.0.send_bodies(bodies, delay_seconds)
    }

    fn hold<'a>(
        &'a self,
        receipt: &'a str,
        seconds: i32,
    ) -> futures::future::BoxFuture<'a, siphon::error::Result<bool>> {
        if seconds > 0 {
            return Box::pin(async {
                Err(siphon::error::Error::Internal(
                    "ChangeMessageVisibility refused (test)".into(),
                ))
            });
        }
        self.0.hold(receipt, seconds)
    }
}

/// A load worker whose every hold on its message SQS refuses.
fn unheld_worker(env: &Env) -> siphon::workers::LoadWorker {
    siphon_tests::load_worker(
        env.db.clone(),
        Arc::new(CannotHold(env.queue.clone())),
        env.s3.clone(),
        short_leases(),
    )
}

fn sweeper(env: &Env) -> Sweeper {
    Sweeper::new(
        env.db.clone(),
        env.queue.clone(),
        SweepOptions {
            grace: Duration::from_millis(200),
            ..SweepOptions::default()
        },
    )
}

async fn long_visibility(env: &Env) {
    env.queue
        .client()
        .set_queue_attributes()
        .queue_url(env.queue.url())
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "900",
        )
        .send()
        .await
        .unwrap();
}

async fn wait_rows(env: &Env, table: &str, at_least: i64) {
    let start = Instant::now();
    while count(&env.db, table).await < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no rows in {table}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts a gzipped file of `n` Patients at `{prefix}/Patient.ndjson.gz`.
async fn put_patients(env: &Env, prefix: &str, n: u64, seed: u64) -> ObjectLocation {
    let location = ObjectLocation::new(&env.bucket, format!("{prefix}/Patient.ndjson.gz"));
    put(
        &env.s3,
        &env.bucket,
        &location.key,
        gen::gzip(&gen::ndjson("Patient", n, seed)),
    )
    .await;
    location
}

/// Puts a file of `n` Patients at `{prefix}/Patient.ndjson.gz` and queues it with
/// load-from-bucket; returns its LoaderFile id.
async fn queue_patients(env: &Env, prefix: &str, n: u64, seed: u64) -> String {
    let location = put_patients(env, prefix, n, seed).await;
    let (s, b, _) = call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket",
                    "params": {"bucket": format!("s3://{}/{prefix}/", env.bucket)}})),
    )
    .await;
    assert_eq!((s, b["result"]["queued"].as_u64()), (200, Some(1)), "{b}");
    siphon::model::loader_file::file_id(&location)
}

/// Polls as a worker does until the dead worker's message is delivered again, by
/// itself (bounded: 20 s after the kill).
async fn until_delivered_again(env: &Env, killed_at: Instant) {
    let mut got = 0;
    while got == 0 {
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "the message did not come back by itself"
        );
        got = siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 1, 1)
            .await;
    }
}

/// Puts a file of `n` Patients at `{prefix}/Patient.ndjson.gz` and creates its pending
/// LoaderFile without queuing any message (as `$load` does before loading inline).
async fn pending_file(env: &Env, prefix: &str, n: u64, seed: u64) -> LoaderFile {
    let location = put_patients(env, prefix, n, seed).await;
    env.db
        .create_loader_file(&LoaderFile::pending(
            &location,
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap()
        .0
}

async fn loader_file(env: &Env, id: &str) -> Value {
    let (s, b, _) = call(env, "GET", &format!("/LoaderFile/{id}"), None).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Waits (bounded) until the file's lease has run out and the API says it is stalled.
async fn wait_stalled(env: &Env, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let f = loader_file(env, id).await;
        if f.get("stalled").is_some() {
            return f;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never stalled: {f}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_file_is_redelivered_by_the_sweep_and_ends_exact() {
    const N: u64 = 20_000;
    let env = setup(short_leases()).await;
    long_visibility(&env).await;
    let id = queue_patients(&env, "crash", N, 11).await;

    // One worker receives the message as Lambda's poller does (invisible for the
    // queue's timeout) and dies mid-file; it could not hold its message.
    let worker = Arc::new(unheld_worker(&env));
    let (sqs, url) = (env.queue.client().clone(), env.queue.url().to_string());
    let doomed = tokio::spawn(async move {
        siphon_local::poll_queue(&sqs, &url, 1, 5, None, Duration::from_secs(900), |r, d| {
            worker.handle(r, d)
        })
        .await;
    });
    wait_rows(&env, "patient", 2_000).await;
    doomed.abort();
    let killed_at = Instant::now();
    let rows_at_kill = count(&env.db, "patient").await;
    assert!(rows_at_kill < N as i64, "the file finished before the kill");

    // Nobody renews the lease: the file says it is stalled, and since when.
    let f = wait_stalled(&env, &id).await;
    assert_eq!(f["status"], "in-progress", "{f}");
    assert!(
        f["lease"].get("receipt").is_none(),
        "receipt handles stay inside: {f}"
    );
    // With a 900 s visibility timeout, nothing is delivered again by itself.
    assert_eq!(
        siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 1, 1).await,
        0
    );

    // The sweep makes the dead worker's message visible again; the next worker resumes.
    let report = sweeper(&env).pass().await.unwrap();
    assert_eq!((report.redelivered, report.requeued), (1, 0), "{report:?}");
    drain(&env.worker, &env.queue).await;
    let recovered_in = killed_at.elapsed();
    let f = loader_file(&env, &id).await;
    assert_eq!(f["status"], "done", "{f}");
    assert_eq!(f["loaded"], N, "{f}");
    assert_eq!(f["recovery"]["how"], "redelivered", "{f}");
    assert!(f.get("stalled").is_none());
    assert_eq!(count(&env.db, "patient").await, N as i64);
    assert_eq!(distinct_ids(&env.db, "patient").await, N as i64);
    println!(
        "killed at {rows_at_kill} rows; done {:.1} s after the kill",
        recovered_in.as_secs_f64()
    );
    // Nothing left to sweep.
    assert_eq!(sweeper(&env).pass().await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_worker_killed_mid_file_lets_its_message_come_back_within_a_lease() {
    // No sweep here: the dead worker stopped extending its message's visibility, so SQS
    // delivers it again one lease after the last extension, not after the queue's 900 s.
    const N: u64 = 20_000;
    let env = setup(short_leases()).await;
    long_visibility(&env).await;
    let id = queue_patients(&env, "held", N, 13).await;
    let worker = env.worker.clone();
    let (sqs, url) = (env.queue.client().clone(), env.queue.url().to_string());
    let doomed = tokio::spawn(async move {
        siphon_local::poll_load_queue(&worker, &sqs, &url, 1, 5).await;
    });
    wait_rows(&env, "patient", 2_000).await;
    doomed.abort();
    let killed_at = Instant::now();
    let rows_at_kill = count(&env.db, "patient").await;
    assert!(rows_at_kill < N as i64, "the file finished before the kill");

    until_delivered_again(&env, killed_at).await;
    let came_back = killed_at.elapsed();
    drain(&env.worker, &env.queue).await;
    let f = loader_file(&env, &id).await;
    assert_eq!(f["status"], "done", "{f}");
    assert_eq!(f["loaded"], N, "{f}");
    assert!(f.get("recovery").is_none(), "no sweep ran: {f}");
    assert_eq!(count(&env.db, "patient").await, N as i64);
    assert_eq!(distinct_ids(&env.db, "patient").await, N as i64);
    println!(
        "killed at {rows_at_kill} rows; message back after {:.1} s",
        came_back.as_secs_f64()
    );
}

#[tokio::test]
async fn a_local_worker_killed_before_holding_its_message_gets_it_back_within_a_lease() {
    // `make serve`'s pollers live in the process they feed and die with it, even in the
    // middle of a receive. They take messages for one hold (lease + 1 s), not for the
    // queue's 900 s: a message received by a process that died before its worker could
    // hold it (here: every hold refused) comes back by itself, no sweep needed.
    const N: u64 = 20_000;
    let env = setup(short_leases()).await;
    long_visibility(&env).await;
    let id = queue_patients(&env, "unheld", N, 17).await;
    let worker = Arc::new(unheld_worker(&env));
    let (sqs, url) = (env.queue.client().clone(), env.queue.url().to_string());
    let doomed = tokio::spawn(async move {
        siphon_local::poll_load_queue(&worker, &sqs, &url, 1, 5).await;
    });
    wait_rows(&env, "patient", 2_000).await;
    doomed.abort();
    let killed_at = Instant::now();
    let rows_at_kill = count(&env.db, "patient").await;
    assert!(rows_at_kill < N as i64, "the file finished before the kill");

    until_delivered_again(&env, killed_at).await;
    let came_back = killed_at.elapsed();
    drain(&env.worker, &env.queue).await;
    let f = loader_file(&env, &id).await;
    assert_eq!(f["status"], "done", "{f}");
    assert_eq!(f["loaded"], N, "{f}");
    assert!(f.get("recovery").is_none(), "no sweep ran: {f}");
    assert_eq!(count(&env.db, "patient").await, N as i64);
    assert_eq!(distinct_ids(&env.db, "patient").await, N as i64);
    println!(
        "killed at {rows_at_kill} rows; message back after {:.1} s",
        came_back.as_secs_f64()
    );
}

#[tokio::test]
async fn workers_killed_one_after_another_each_past_the_last_never_send_the_file_to_the_dead_letter_queue(
) {
    // The queue gives up on a message received twice (maxReceiveCount 2 here, 5 in the
    // template) and moves it to its dead-letter queue. Three workers in a row die on the
    // same file, each after moving its checkpoint on: that is not a file that kills its
    // worker, and it must end, exactly, with nothing dead-lettered.
    const N: u64 = 30_000;
    let env = setup(short_leases()).await;
    long_visibility(&env).await;
    let sqs = env.queue.client().clone();
    let dlq_url = siphon_tests::fresh_dead_letter_queue(&sqs, env.queue.url(), 2).await;
    let id = queue_patients(&env, "again", N, 19).await;

    let mut rows = 0;
    for kill in 1..=3 {
        let worker = env.worker.clone();
        let (sqs, url) = (sqs.clone(), env.queue.url().to_string());
        let doomed = tokio::spawn(async move {
            loop {
                siphon_local::poll_load_queue(&worker, &sqs, &url, 1, 1).await;
            }
        });
        wait_rows(&env, "patient", rows + 1_500).await;
        doomed.abort();
        rows = count(&env.db, "patient").await;
        assert!(rows < N as i64, "the file finished before kill {kill}");
    }
    // Bounded: 20 s (the hold is 3 s here).
    let killed_at = Instant::now();
    until_delivered_again(&env, killed_at).await;
    drain(&env.worker, &env.queue).await;
    let f = loader_file(&env, &id).await;
    assert_eq!(f["status"], "done", "{f}");
    assert_eq!(f["loaded"], N, "{f}");
    assert_eq!(count(&env.db, "patient").await, N as i64);
    assert_eq!(distinct_ids(&env.db, "patient").await, N as i64);
    let dead = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
}

#[tokio::test]
async fn a_load_without_a_message_is_requeued_by_the_sweep() {
    // `$load` loads inline in the API; if that instance dies there is no message at all.
    const N: u64 = 10_000;
    let env = setup(short_leases()).await;
    let file = pending_file(&env, "inline", N, 12).await;
    let loader = Loader::new(
        env.db.clone(),
        Arc::new(S3Source::new(env.s3.clone())),
        short_leases(),
    );
    let id = file.id.clone();
    let doomed = tokio::spawn(async move { loader.load(&id, None).await });
    wait_rows(&env, "patient", 1_000).await;
    doomed.abort();
    wait_stalled(&env, &file.id).await;
    // The sweep acts once the lease has been over for its grace period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = sweeper(&env).pass().await.unwrap();
    assert_eq!((report.redelivered, report.requeued), (0, 1), "{report:?}");
    // Acting again right away would only duplicate the message: the sweep waits.
    assert_eq!(sweeper(&env).pass().await.unwrap(), Default::default());
    drain(&env.worker, &env.queue).await;
    let f = loader_file(&env, &file.id).await;
    assert_eq!(
        (f["status"].as_str(), f["loaded"].as_u64()),
        (Some("done"), Some(N)),
        "{f}"
    );
    assert_eq!(f["recovery"]["how"], "requeued");
    assert_eq!(count(&env.db, "patient").await, N as i64);
    assert_eq!(distinct_ids(&env.db, "patient").await, N as i64);
}

#[tokio::test]
async fn a_live_worker_keeps_its_lease_beyond_the_lease_length() {
    // Batches slower than the lease: the heartbeat alone keeps the file claimed, so the
    // sweep never touches a file whose worker is alive.
    let env = setup(LoadOptions {
        batch_rows: 200,
        lease: Duration::from_millis(800),
        heartbeat: Duration::from_millis(200),
        ..LoadOptions::default()
    })
    .await;
    put(
        &env.s3,
        &env.bucket,
        "slow/Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 4_000, 13)),
    )
    .await;
    let location = ObjectLocation::new(&env.bucket, "slow/Patient.ndjson.gz");
    let (file, _) = env
        .db
        .create_loader_file(&LoaderFile::pending(
            &location,
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    // Hold the patient table's lock from another session so each batch waits ~2 s.
    let blocker = siphon_tests::connect(&env.db).await;
    env.db
        .upsert(
            &siphon::ResourceType::parse("Patient").unwrap(),
            "warm-up",
            &json!({}),
        )
        .await
        .unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE patient IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let loader = Loader::new(
        env.db.clone(),
        Arc::new(S3Source::new(env.s3.clone())),
        LoadOptions {
            batch_rows: 200,
            lease: Duration::from_millis(800),
            heartbeat: Duration::from_millis(200),
            ..LoadOptions::default()
        },
    );
    let id = file.id.clone();
    let running = tokio::spawn(async move { loader.load(&id, None).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Blocked for longer than the lease, yet not stalled: the sweep leaves it alone.
    let f = loader_file(&env, &file.id).await;
    assert_eq!(f["status"], "in-progress", "{f}");
    assert!(f.get("stalled").is_none(), "{f}");
    assert_eq!(sweeper(&env).pass().await.unwrap(), Default::default());
    blocker.batch_execute("COMMIT").await.unwrap();
    let outcome = running.await.unwrap().unwrap();
    assert!(
        matches!(outcome, siphon::loading::Outcome::Done { loaded: 4000, .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_file_whose_workers_keep_dying_where_they_started_ends_in_error_not_in_a_loop() {
    // A line that kills every worker (out of memory, say) must not be retried forever:
    // the sweep counts workers in a row that died without moving the checkpoint on and,
    // at `give_up_after` once the file has been stuck for `give_up_stuck`, ends it in
    // `error`, saying where and why.
    const N: u64 = 3_000;
    let env = setup(short_leases()).await;
    let file = pending_file(&env, "poison", N, 21).await;
    let sweeper_with = |stuck: Duration| {
        Sweeper::new(
            env.db.clone(),
            env.queue.clone(),
            SweepOptions {
                grace: Duration::from_millis(200),
                give_up_after: 3,
                give_up_stuck: stuck,
                ..SweepOptions::default()
            },
        )
    };
    // Stuck for 15 minutes at least before giving up; then for no time at all.
    let (patient, impatient) = (
        sweeper_with(Duration::from_secs(900)),
        sweeper_with(Duration::ZERO),
    );
    // A worker that dies before committing its (n+1)-th batch, its lease left to run out.
    let die = |crash: u64| {
        let loader = Loader::new(
            env.db.clone(),
            Arc::new(S3Source::new(env.s3.clone())),
            LoadOptions {
                crash_before_commit: Some(crash),
                retries: 0,
                ..short_leases()
            },
        );
        let id = file.id.clone();
        async move {
            let e = loader.load(&id, None).await.unwrap_err();
            assert!(e.to_string().contains("injected crash"), "{e}");
        }
    };
    let stalled_then_swept = |sweeper: &'static str| {
        let sweeper = if sweeper == "patient" {
            &patient
        } else {
            &impatient
        };
        async {
            wait_stalled(&env, &file.id).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            sweeper.pass().await.unwrap()
        }
    };

    // The first worker commits one batch (500 lines) before dying: progress.
    die(1).await;
    let report = stalled_then_swept("impatient").await;
    assert_eq!((report.requeued, report.given_up), (1, 0), "{report:?}");
    let f = loader_file(&env, &file.id).await;
    assert_eq!(f["recovery"]["barren"], 0, "{f}");
    assert!(f["recovery"].get("stuck_since").is_none(), "{f}");
    // Then each worker dies where it started, at line 500: stuck since the first's claim.
    let mut since = Value::Null;
    for barren in 1..=3 {
        die(0).await;
        let report = stalled_then_swept("patient").await;
        assert_eq!((report.requeued, report.given_up), (1, 0), "{report:?}");
        let f = loader_file(&env, &file.id).await;
        assert_eq!(
            (f["status"].as_str(), f["recovery"]["barren"].as_u64()),
            (Some("in-progress"), Some(barren)),
            "{f}"
        );
        if barren == 1 {
            since = f["recovery"]["stuck_since"].clone();
            assert!(since.is_string(), "{f}");
        }
        assert_eq!(f["recovery"]["stuck_since"], since, "{f}");
    }
    // 3 barren deaths, but stuck for seconds, not 15 minutes: delivered again (above).
    // With no time required, the next barren death ends it.
    die(0).await;
    let report = stalled_then_swept("impatient").await;
    assert_eq!((report.requeued, report.given_up), (0, 1), "{report:?}");
    let f = loader_file(&env, &file.id).await;
    assert_eq!(f["status"], "error", "{f}");
    assert_eq!(f["loaded"], 500, "{f}");
    let why = f["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("4 workers in a row") && why.contains("line 500"),
        "{why}"
    );
    assert_eq!(f["recovery"]["how"], "gave up", "{f}");
    assert_eq!(f["recovery"]["count"], 5, "{f}");
    assert!(
        f.get("lease").is_none() && f.get("stalled").is_none(),
        "{f}"
    );
    assert_eq!(count(&env.db, "patient").await, 500);
    // Nothing left to sweep, and the messages the sweep queued end without loading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(impatient.pass().await.unwrap(), Default::default());
    drain(&env.worker, &env.queue).await;
    assert_eq!(loader_file(&env, &file.id).await["status"], "error");
    assert_eq!(count(&env.db, "patient").await, 500);
}
