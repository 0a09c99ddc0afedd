//! FHIR validation of loads (`validation: {enable, checks}`) end to end, in process: the
//! API (`$load`, `$import`, load-from-bucket), the SQS loader worker, LocalStack S3 and
//! Postgres. What a user checks: the answers' counts, `GET /LoaderFile/{id}` and
//! `GET /LoaderFile/{id}/$errors`, and the rows in the tables.

mod api_harness;

use std::sync::Arc;
use std::time::Duration;

use api_harness::{call, count, drain, setup, Env};
use serde_json::{json, Value};
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::model::validation::{Checks, Enable, Validation};
use siphon::sources::s3::S3Source;
use siphon::sources::ObjectLocation;
use siphon::sweep::{SweepOptions, Sweeper};
use siphon_tests::corpus::{fhir_invalid, InvalidCase};
use siphon_tests::{connect, gen, put};

fn small_batches(rows: usize) -> LoadOptions {
    LoadOptions {
        batch_rows: rows,
        ..LoadOptions::default()
    }
}

fn ndjson(lines: &[Value]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// The invalid corpus, each bad resource followed by a valid Patient: the lines, and the
/// line number of each case (1-based).
fn corpus_file() -> (Vec<InvalidCase>, Vec<u8>, Vec<u64>) {
    let cases = fhir_invalid();
    let mut lines = Vec::new();
    let mut at = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        lines.push(case.resource.clone());
        at.push(lines.len() as u64);
        lines.push(gen::resource("Patient", n as u64, 5));
    }
    (cases, ndjson(&lines), at)
}

async fn errors(env: &Env, file: &str) -> Vec<Value> {
    let (s, b, _) = call(env, "GET", &format!("/LoaderFile/{file}/$errors"), None).await;
    assert_eq!(s, 200, "{b}");
    b["errors"].as_array().unwrap().clone()
}

async fn loader_file(env: &Env, file: &str) -> Value {
    let (s, b, _) = call(env, "GET", &format!("/LoaderFile/{file}"), None).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// `$load` of `key`; the answer and the LoaderFile id of its session's input.
async fn load(env: &Env, key: &str, extra: Value) -> (u16, Value, Option<String>) {
    let mut body = json!({"source": format!("s3://{}/{key}", env.bucket)});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, b, h) = call(env, "POST", "/$load", Some(body)).await;
    let file = match h.get("content-location") {
        Some(location) => {
            let (_, session, _) = call(env, "GET", location.to_str().unwrap(), None).await;
            session["inputs"][0]["loaderFile"]
                .as_str()
                .map(str::to_string)
        }
        None => None,
    };
    (s, b, file)
}

/// `$import` session `id` with `inputs` (type, key) and `validation`; waits until done.
async fn import(env: &Env, id: &str, inputs: &[(&str, &str)], validation: Value) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(ty, key)| json!({"type": ty, "url": format!("s3://{}/{key}", env.bucket)}))
        .collect();
    let (s, b, _) = call(
        env,
        "POST",
        "/$import",
        Some(json!({"resource": {"id": id, "inputs": inputs, "validation": validation}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    drain(&env.worker, &env.queue).await;
    let (s, b, _) = call(env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("done")), "{b}");
    b
}

#[tokio::test]
async fn the_generated_sets_validate_clean() {
    let env = setup(small_batches(700)).await;
    const N: u64 = 2000;
    for ty in gen::TYPES {
        put(
            &env.s3,
            &env.bucket,
            &format!("{ty}.ndjson.gz"),
            gen::gzip(&gen::ndjson(ty, N, 9)),
        )
        .await;
    }
    // Patients, Observations and Conditions reference Patients of the same set: every
    // check holds. Encounters also name Practitioners the set does not have: structure.
    let all = import(
        &env,
        "clean-all",
        &[
            ("Observation", "Observation.ndjson.gz"),
            ("Condition", "Condition.ndjson.gz"),
            ("Patient", "Patient.ndjson.gz"),
        ],
        json!({"enable": "on", "checks": "all"}),
    )
    .await;
    let structure = import(
        &env,
        "clean-struct",
        &[("Encounter", "Encounter.ndjson.gz")],
        json!({"enable": "on", "checks": "struct"}),
    )
    .await;
    for session in [&all, &structure] {
        for input in session["inputs"].as_array().unwrap() {
            assert_eq!(
                (
                    input["loaded"].as_u64(),
                    input["failed"].as_u64(),
                    input.get("flagged")
                ),
                (Some(N), Some(0), None),
                "no false positive: {input}"
            );
            let file = loader_file(&env, input["loaderFile"].as_str().unwrap()).await;
            assert!(
                file.get("parked").is_none() && file.get("pendingRefs").is_none(),
                "{file}"
            );
        }
    }
    for ty in gen::TYPES {
        assert_eq!(count(&env.db, &ty.to_lowercase()).await, N as i64, "{ty}");
    }
}

#[tokio::test]
async fn every_defect_of_the_invalid_corpus_is_caught_with_its_path() {
    let env = setup(LoadOptions::default()).await;
    let (cases, body, at) = corpus_file();
    assert!(cases.len() >= 10);
    let types: std::collections::HashSet<&str> =
        cases.iter().map(|c| c.resource_type.as_str()).collect();
    assert_eq!(types.len(), cases.len(), "one defect per resource type");
    put(&env.s3, &env.bucket, "corpus/mixed.ndjson", body).await;
    let (s, b, file) = load(
        &env,
        "corpus/mixed.ndjson",
        json!({"validation": {"enable": "on", "checks": "struct"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let n = cases.len() as u64;
    assert_eq!(
        (b["total"].as_u64(), b["failed"].as_u64()),
        (Some(n), Some(n)),
        "{b}"
    );
    let found = errors(&env, &file.unwrap()).await;
    assert_eq!(found.len(), cases.len(), "{found:#?}");
    let mut caught = 0;
    for ((case, line), error) in cases.iter().zip(&at).zip(&found) {
        let reason = error["reason"].as_str().unwrap();
        assert_eq!(
            error["line"].as_u64(),
            Some(*line),
            "{}: {error}",
            case.defect
        );
        assert!(
            reason.starts_with(&case.finding()),
            "{}:\n  want {}\n  got  {reason}",
            case.defect,
            case.finding()
        );
        assert!(!reason.contains("; "), "one defect, one finding: {reason}");
        assert!(error.get("loaded").is_none(), "{error}");
        caught += 1;
    }
    assert_eq!(caught, cases.len());
    // Only the valid lines are in the tables.
    assert_eq!(count(&env.db, "patient").await, n as i64);
    for table in [
        "observation",
        "condition",
        "encounter",
        "organization",
        "device",
    ] {
        assert_eq!(count(&env.db, table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn async_validation_loads_every_line_and_lists_its_findings() {
    let env = setup(LoadOptions::default()).await;
    let (cases, body, at) = corpus_file();
    put(&env.s3, &env.bucket, "corpus/async.ndjson", body).await;
    let n = cases.len() as u64;
    let (s, b, file) = load(
        &env,
        "corpus/async.ndjson",
        json!({"validation": {"enable": "async"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["total"].as_u64(),
            b["failed"].as_u64(),
            b["flagged"].as_u64()
        ),
        (Some(2 * n), Some(0), Some(n)),
        "{b}"
    );
    let file = file.unwrap();
    let f = loader_file(&env, &file).await;
    assert_eq!(
        (
            f["loaded"].as_u64(),
            f["failed"].as_u64(),
            f["flagged"].as_u64()
        ),
        (Some(2 * n), Some(0), Some(n)),
        "{f}"
    );
    let found = errors(&env, &file).await;
    assert_eq!(found.len(), cases.len());
    for ((case, line), error) in cases.iter().zip(&at).zip(&found) {
        assert_eq!(error["line"].as_u64(), Some(*line));
        assert_eq!(error["loaded"], json!(true), "{error}");
        assert!(
            error["reason"]
                .as_str()
                .unwrap()
                .starts_with(&case.finding()),
            "{error}"
        );
    }
    // Every line is in its table, the invalid ones too.
    let c = connect(&env.db).await;
    for case in &cases {
        let table = case.resource_type.to_lowercase();
        let id = case.resource["id"].as_str().unwrap();
        let rows: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "{table}/{id}");
    }
    // strict: one invalid line fails the file and nothing loads.
    let (s, b, _) = load(
        &env,
        "corpus/async.ndjson",
        json!({"validation": {"enable": "on", "checks": "struct"}, "strict": true}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains(&format!("strict mode: {n} invalid line(s)")),
        "{b}"
    );
}

/// Observations (some referencing Patients that never come) before their Patients.
fn observations_then_patients(patients: u64, dangling: &[&str]) -> (Vec<Value>, Vec<Value>) {
    let mut observations = Vec::new();
    for n in 0..patients {
        let mut o = gen::resource("Observation", n, 2);
        o["subject"] = json!({"reference": format!("Patient/{}", gen::id_of("Patient", n))});
        observations.push(o);
    }
    for (i, missing) in dangling.iter().enumerate() {
        let mut o = gen::resource("Observation", patients + i as u64, 2);
        o["subject"] = json!({"reference": format!("Patient/{missing}")});
        observations.push(o);
    }
    let patients = (0..patients)
        .map(|n| gen::resource("Patient", n, 2))
        .collect();
    (observations, patients)
}

#[tokio::test]
async fn references_are_resolved_when_the_whole_session_has_ended() {
    let env = setup(small_batches(50)).await;
    let (observations, patients) = observations_then_patients(200, &["gone-1", "gone-2", "gone-3"]);
    put(
        &env.s3,
        &env.bucket,
        "Observation.ndjson.gz",
        gen::gzip(&ndjson(&observations)),
    )
    .await;
    put(
        &env.s3,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&ndjson(&patients)),
    )
    .await;
    let session = import(
        &env,
        "refs-async",
        &[
            ("Observation", "Observation.ndjson.gz"),
            ("Patient", "Patient.ndjson.gz"),
        ],
        json!({"enable": "async", "checks": "refs"}),
    )
    .await;
    let obs = &session["inputs"][0];
    assert_eq!(
        (
            obs["loaded"].as_u64(),
            obs["failed"].as_u64(),
            obs["flagged"].as_u64()
        ),
        (Some(203), Some(0), Some(3)),
        "{session}"
    );
    let file = obs["loaderFile"].as_str().unwrap();
    assert!(loader_file(&env, file).await.get("pendingRefs").is_none());
    let found = errors(&env, file).await;
    let reasons: Vec<(u64, &str, bool)> = found
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap(),
                e["loaded"] == json!(true),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                201,
                "Observation.subject: Patient/gone-1 does not exist",
                true
            ),
            (
                202,
                "Observation.subject: Patient/gone-2 does not exist",
                true
            ),
            (
                203,
                "Observation.subject: Patient/gone-3 does not exist",
                true
            ),
        ]
    );
    assert_eq!(
        count(&env.db, "observation").await,
        203,
        "async never undoes rows"
    );
}

#[tokio::test]
async fn with_enable_on_lines_wait_for_their_references_then_load_or_fail() {
    let env = setup(small_batches(25)).await;
    // One file, no type in its name: Observations first, their Patients after them.
    let (observations, patients) = observations_then_patients(100, &["gone-1", "gone-2"]);
    let mut lines = observations;
    lines.extend(patients);
    // A reference to a type its element does not allow is caught on its line.
    let mut wrong = gen::resource("Observation", 999, 2);
    wrong["subject"] = json!({"reference": "Medication/m-1"});
    lines.push(wrong);
    put(
        &env.s3,
        &env.bucket,
        "mixed.ndjson.gz",
        gen::gzip(&ndjson(&lines)),
    )
    .await;
    let (s, b, _) = call(
        &env,
        "POST",
        "/$import",
        Some(json!({"resource": {"id": "refs-on", "inputs": [{"url": format!("s3://{}/mixed.ndjson.gz", env.bucket)}],
                    "validation": {"enable": "on", "checks": "refs"}}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    drain(&env.worker, &env.queue).await;
    let (_, session, _) = call(&env, "GET", "/$import/refs-on", None).await;
    let input = &session["inputs"][0];
    assert_eq!(
        (
            session["status"].as_str(),
            input["loaded"].as_u64(),
            input["failed"].as_u64()
        ),
        (Some("done"), Some(200), Some(3)),
        "{session}"
    );
    let file = input["loaderFile"].as_str().unwrap();
    let f = loader_file(&env, file).await;
    assert!(
        f.get("parked").is_none() && f.get("pendingRefs").is_none(),
        "{f}"
    );
    let found: Vec<(u64, String)> = errors(&env, file)
        .await
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found[0],
        (
            101,
            "Observation.subject: Patient/gone-1 does not exist".to_string()
        )
    );
    assert_eq!(
        found[1],
        (
            102,
            "Observation.subject: Patient/gone-2 does not exist".to_string()
        )
    );
    assert_eq!(found[2].0, 203);
    assert!(
        found[2]
            .1
            .starts_with("Observation.subject: Medication/m-1 is not an allowed target"),
        "{found:?}"
    );
    assert_eq!(count(&env.db, "observation").await, 100);
    assert_eq!(count(&env.db, "patient").await, 100);
    // The Observations waited: each was written after the Patients it references.
    let c = connect(&env.db).await;
    let early: i64 = c
        .query_one(
            "SELECT count(*) FROM observation o JOIN patient p ON p.id = split_part(o.resource->'subject'->>'reference', '/', 2)
             WHERE o.txid < p.txid",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(early, 0);
}

#[tokio::test]
async fn a_crash_mid_load_and_a_worker_dying_before_the_end_lose_and_repeat_nothing() {
    let env = setup(LoadOptions::default()).await;
    // 300 Observations, every 10th referencing a Patient that exists.
    let patients: Vec<Value> = (0..30).map(|n| gen::resource("Patient", n, 4)).collect();
    let lines: Vec<Value> = (0..300)
        .map(|n| {
            let mut o = gen::resource("Observation", n, 4);
            let target = if n % 10 == 0 {
                gen::id_of("Patient", n / 10)
            } else {
                format!("nobody-{n}")
            };
            o["subject"] = json!({"reference": format!("Patient/{target}")});
            o
        })
        .collect();
    let db = &env.db;
    let options = FileOptions {
        validation: Validation {
            enable: Enable::Async,
            checks: Checks::All,
        },
        ..FileOptions::default()
    };
    // The Patients are there before the Observations load.
    put(&env.s3, &env.bucket, "Patient.ndjson", ndjson(&patients)).await;
    put(&env.s3, &env.bucket, "Observation.ndjson", ndjson(&lines)).await;
    let source = Arc::new(S3Source::new(env.s3.clone()));
    for key in ["Patient.ndjson", "Observation.ndjson"] {
        let (file, _) = db
            .create_loader_file(&LoaderFile::pending(
                &ObjectLocation::new(&env.bucket, key),
                None,
                None,
                options,
            ))
            .await
            .unwrap();
        if key == "Patient.ndjson" {
            Loader::new(db.clone(), source.clone(), LoadOptions::default())
                .load(&file.id, None)
                .await
                .unwrap();
            continue;
        }
        // Dies before committing its third batch of 50...
        let crashing = LoadOptions {
            batch_rows: 50,
            lease: Duration::from_secs(1),
            crash_before_commit: Some(2),
            retries: 0,
            ..LoadOptions::default()
        };
        let err = Loader::new(db.clone(), source.clone(), crashing)
            .load(&file.id, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected crash"), "{err}");
        let f = loader_file(&env, &file.id).await;
        assert_eq!(
            (f["loaded"].as_u64(), f["pendingRefs"].as_u64()),
            (Some(100), Some(90)),
            "{f}"
        );
        // ... the next worker resumes after the lease, and dies before resolving.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let resumed = Loader::new(db.clone(), source.clone(), small_batches(50));
        assert_eq!(
            resumed.load(&file.id, None).await.unwrap(),
            Outcome::Done {
                loaded: 300,
                failed: 0
            }
        );
        let f = loader_file(&env, &file.id).await;
        assert_eq!(
            (f["pendingRefs"].as_u64(), f.get("flagged")),
            (Some(270), None),
            "{f}"
        );
        // The sweep finds the ended load with references unresolved and resolves them.
        let sweeper = Sweeper::new(db.clone(), env.queue.clone(), SweepOptions::default());
        assert_eq!(sweeper.pass().await.unwrap().refs_resolved, 1);
        assert_eq!(sweeper.pass().await.unwrap().refs_resolved, 0, "once");
        let f = loader_file(&env, &file.id).await;
        assert_eq!(
            (
                f["loaded"].as_u64(),
                f["flagged"].as_u64(),
                f.get("pendingRefs")
            ),
            (Some(300), Some(270), None),
            "{f}"
        );
        let found = errors(&env, &file.id).await;
        assert_eq!(found.len(), 270);
        assert!(found.iter().all(|e| e["loaded"] == json!(true)));
        assert_eq!(
            found[0]["reason"],
            "Observation.subject: Patient/nobody-1 does not exist"
        );
    }
    assert_eq!(count(db, "observation").await, 300, "exactly once");
}

#[tokio::test]
async fn load_from_bucket_takes_validation_params() {
    let env = setup(LoadOptions::default()).await;
    let mut lines: Vec<Value> = (0..10).map(|n| gen::resource("Patient", n, 6)).collect();
    lines[4]["gender"] = json!(["female"]);
    put(
        &env.s3,
        &env.bucket,
        "in/Patient.ndjson.gz",
        gen::gzip(&ndjson(&lines)),
    )
    .await;
    let (s, b, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": {
            "bucket": format!("s3://{}/in/", env.bucket), "validation": {"enable": "on", "checks": "all"}}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    drain(&env.worker, &env.queue).await;
    let file = siphon::model::loader_file::file_id(&ObjectLocation::new(
        &env.bucket,
        "in/Patient.ndjson.gz",
    ));
    let f = loader_file(&env, &file).await;
    assert_eq!(
        (
            f["status"].as_str(),
            f["loaded"].as_u64(),
            f["failed"].as_u64()
        ),
        (Some("done"), Some(9), Some(1)),
        "{f}"
    );
    assert_eq!(
        f["options"]["validation"],
        json!({"enable": "on", "checks": "all"})
    );
    let found = errors(&env, &file).await;
    assert_eq!(found[0]["line"], 5);
    assert!(
        found[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Patient.gender: expected a single value"),
        "{found:?}"
    );
    // A validation the call cannot honour is refused before anything is queued.
    let (s, b, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": {
            "bucket": format!("s3://{}/in/", env.bucket), "validation": {"enable": "sometimes"}}})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("validation.enable"), "{b}");
}
