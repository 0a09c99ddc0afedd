//! `make bench-export`: siphon's `$export` against the two-step baseline a person would
//! script, measured in one run.
//!
//! 1. Loads realistic resources (default 1,000,000: 20% Patient, 60% Observation, 20%
//!    Encounter; `SIPHON_BENCH_RESOURCES` changes the count) into a fresh database.
//! 2. Baseline: for each type `psql \copy (select <resource as $dump writes it>) to` a
//!    file, then `aws s3 cp` of the files to LocalStack S3.
//! 3. siphon, as users run it: `make serve`'s binary (release siphon-local, its export
//!    workers polling a fresh export queue) gets `GET /$export` over HTTP, and the clock
//!    stops when the status answers the complete manifest (files in LocalStack S3); the
//!    manifest's counts are checked. Its peak RSS is read from /proc.
//! 4. Filtered: the same `$export` with a `_typeFilter` keeping about 30% of the
//!    Observations (two of the five LOINC codes, values under 150), against the
//!    unfiltered export's best: `filtered_ratio` (target <= 0.8).
//! 5. Organized: the same `$export` with `organizeOutputBy=Patient` (files of Patient
//!    resource blocks), against the unfiltered export's best: `organized_ratio` (target
//!    <= 1.5); its manifest lists a header and the Patient per block plus every
//!    Observation and Encounter whose Patient is stored (counted by Postgres itself).
//! 6. The cost of resuming: one type exported in-process once straight, once handing
//!    over after every part (the deadline always near), divided by the hand-overs.
//!
//! Rounds alternate (baseline, siphon, filtered, organized, ...), best of each kept. Last
//! line: `export_ratio=.. filtered_ratio=.. organized_ratio=.. resources_per_s=..
//! peak_rss_mb=.. handover_cost_ms=..`.

use std::sync::Arc;
use std::time::Instant;

use siphon::exporting::task::{Served, TaskOptions, TaskOutcome, TaskRunner};
use siphon::exporting::{ExportConfig, Exports};
use siphon::queue::MemoryQueue;
use siphon::sinks::s3::S3Sink;
use siphon::storage::{Db, DbConfig};
use siphon_tests::bench::{
    env_number, export_over_http, free_port, load_mix, manifest_count, peak_rss_kb,
    psql_copy_and_upload, serve,
};

/// The filtered round's `_typeFilter`: 2 of the generator's 5 LOINC codes (40%) and a
/// value under 150 (75% of 0..200): about 30% of the Observations.
const FILTER: &str =
    "Observation?code=http://loinc.org|8867-4,http://loinc.org|8480-6&value-quantity=lt150";

/// The rows the filter keeps, counted by Postgres itself.
const FILTER_SQL: &str = "SELECT count(*) FROM observation
    WHERE resource #>> '{code,coding,0,code}' IN ('8867-4', '8480-6')
      AND (resource #>> '{valueQuantity,value}')::numeric < 150";

/// The lines of the organized export: per stored Patient a header and the Patient, and
/// each Observation and Encounter whose subject is a stored Patient.
const ORGANIZED_SQL: &str = "SELECT (SELECT 2 * count(*) FROM patient)
    + (SELECT count(*) FROM observation
       WHERE substring(resource #>> '{subject,reference}' from 'Patient/(.*)$') IN (SELECT id FROM patient))
    + (SELECT count(*) FROM encounter
       WHERE substring(resource #>> '{subject,reference}' from 'Patient/(.*)$') IN (SELECT id FROM patient))";

/// One $export (`query` after `$export`) through the HTTP API, until the manifest;
/// returns seconds and the resources it lists.
async fn siphon_export(port: u16, query: &str) -> (f64, u64) {
    let (secs, manifest) = export_over_http(port, query).await;
    (secs, manifest_count(&manifest))
}

/// Exports `ty` in-process: straight, or handing over after every part. Returns the
/// seconds and the number of invocations.
async fn in_process(db: &Db, bucket: &str, ty: &str, hand_over: bool) -> (f64, u32) {
    siphon_tests::use_local_aws();
    let sink = Arc::new(S3Sink::new(siphon_tests::s3().await, bucket));
    let queue = Arc::new(MemoryQueue::default());
    let exports = Exports {
        db: db.clone(),
        queue: queue.clone(),
        sink: sink.clone(),
        config: ExportConfig {
            bucket: bucket.to_string(),
            prefix: "bench-resume/".into(),
            range_rows: 1 << 40,
            ..Default::default()
        },
    };
    let request = siphon::exporting::request::parse(siphon::exporting::request::KickOff {
        post: false,
        level: siphon::exporting::request::Level::System,
        accept: Some("application/fhir+json"),
        prefer: vec!["respond-async"],
        query: vec![("_type".into(), ty.into())],
        body: None,
        now: chrono::Utc::now(),
    })
    .unwrap();
    let export = exports
        .kick_off(
            request,
            &siphon::auth::Principal::admin("bench"),
            "http://bench/$export",
        )
        .await
        .unwrap();
    let task = format!("{}/0", export.id);
    let options = TaskOptions::default();
    let runner = TaskRunner {
        db: db.clone(),
        sink,
        options: options.clone(),
    };
    let start = Instant::now();
    let mut invocations = 0;
    loop {
        invocations += 1;
        // A deadline one margin away: the run hands over after its first part.
        let deadline = hand_over.then(|| Instant::now() + options.deadline_margin);
        match runner
            .run(&task, Served::default(), deadline)
            .await
            .unwrap()
        {
            TaskOutcome::Continue => continue,
            TaskOutcome::Done { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    (start.elapsed().as_secs_f64(), invocations)
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
    let mut child = serve(&url, port, exporters, "bench-export-serve.log").await;
    let dir = std::env::temp_dir().join("siphon-bench-export");
    let c = siphon_tests::connect(&db).await;
    let kept: i64 = c.query_one(FILTER_SQL, &[]).await.unwrap().get(0);
    let observations: i64 = c
        .query_one("SELECT count(*) FROM observation", &[])
        .await
        .unwrap()
        .get(0);
    let organized_lines: i64 = c.query_one(ORGANIZED_SQL, &[]).await.unwrap().get(0);
    drop(c);
    let filtered_query = format!(
        "?_typeFilter={}",
        url::form_urlencoded::byte_serialize(FILTER.as_bytes()).collect::<String>()
    );
    let (mut best_base, mut best_siphon, mut best_filtered) = (f64::MAX, f64::MAX, f64::MAX);
    let mut best_organized = f64::MAX;
    for round in 1..=rounds {
        let base = psql_copy_and_upload(&url, &bucket, &dir);
        let (secs, exported) = siphon_export(port, "").await;
        assert_eq!(exported, count, "the manifest lists every resource once");
        let (filtered, listed) = siphon_export(port, &filtered_query).await;
        assert_eq!(
            listed as i64,
            count as i64 - observations + kept,
            "the filtered manifest lists the kept Observations and every other resource"
        );
        let (organized, lines) = siphon_export(port, "?organizeOutputBy=Patient").await;
        assert_eq!(
            lines as i64, organized_lines,
            "the organized manifest lists a header and the Patient per block and each Observation and Encounter of a stored Patient"
        );
        println!(
            "round {round}: psql \\copy + aws s3 cp {base:.2}s, siphon $export {secs:.2}s (ratio {:.3}), \
             filtered ({kept} of {observations} Observations) {filtered:.2}s (ratio {:.3}), \
             organizeOutputBy=Patient ({organized_lines} lines) {organized:.2}s (ratio {:.3})",
            secs / base,
            filtered / secs,
            organized / secs
        );
        best_organized = best_organized.min(organized);
        best_base = best_base.min(base);
        best_siphon = best_siphon.min(secs);
        best_filtered = best_filtered.min(filtered);
    }
    let peak = peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    // Resuming: the Observations straight, then handing over after every 8 MiB part.
    let (straight, _) = in_process(&db, &bucket, "Observation", false).await;
    let (chopped, invocations) = in_process(&db, &bucket, "Observation", true).await;
    let handovers = invocations.saturating_sub(1).max(1);
    let cost_ms = ((chopped - straight) * 1000.0 / handovers as f64).max(0.0);
    println!(
        "resume: Observation straight {straight:.2}s, with {handovers} hand-overs {chopped:.2}s"
    );
    println!(
        "export_ratio={:.3} filtered_ratio={:.3} organized_ratio={:.3} resources_per_s={:.0} peak_rss_mb={:.1} handover_cost_ms={:.0}",
        best_siphon / best_base,
        best_filtered / best_siphon,
        best_organized / best_siphon,
        count as f64 / best_siphon,
        peak as f64 / 1024.0,
        cost_ms
    );
}
