//! What an operator (or the console) uses to watch and steer: load-from-bucket's dry
//! run, LoaderFile filters, the lists of sessions and exports, and dead letters with
//! their retry.

mod api_harness;

use std::sync::Arc;

use api_harness::{admin, call, call_with, count, drain, setup, FHIR_KICK_OFF};
use serde_json::{json, Value};
use siphon::dead_letters::{DeadLetters, Pair};
use siphon::loading::LoadOptions;
use siphon::model::loader_file::file_id;
use siphon::model::ObjectLocation;
use siphon::queue::{LoadMessage, SqsQueue};
use siphon_tests::{gen, put};

async fn rpc(env: &api_harness::Env, params: Value) -> (u16, Value) {
    let (s, b, _) = call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": params})),
    )
    .await;
    (s, b)
}

#[tokio::test]
async fn a_dry_run_counts_new_changed_unchanged_and_gone_and_changes_nothing() {
    let env = setup(LoadOptions::default()).await;
    for (key, n) in [
        ("d/Patient-1.ndjson.gz", 10),
        ("d/Patient-2.ndjson.gz", 20),
        ("d/Observation.ndjson.gz", 30),
    ] {
        put(
            &env.s3,
            &env.bucket,
            key,
            gen::gzip(&gen::ndjson(
                if key.contains("Obs") {
                    "Observation"
                } else {
                    "Patient"
                },
                n,
                1,
            )),
        )
        .await;
    }
    let bucket = format!("s3://{}/d/", env.bucket);
    let (s, b) = rpc(&env, json!({"bucket": bucket, "dry-run": true})).await;
    assert_eq!(s, 200, "{b}");
    let r = &b["result"];
    assert_eq!(r["dry-run"], true);
    assert_eq!(
        (r["files"].as_i64(), r["new"]["files"].as_i64()),
        (Some(3), Some(3)),
        "{r}"
    );
    assert_eq!(r["types"]["Patient"]["files"], 2);
    assert_eq!(r["types"]["Observation"]["files"], 1);
    assert!(r["bytes"].as_i64().unwrap() > 0);
    // Nothing was created or queued.
    let (_, files, _) = call(&env, "GET", "/LoaderFile", None).await;
    assert_eq!(files["entry"], json!([]));

    // Import, then change one object and delete another: the next dry run says so.
    assert_eq!(rpc(&env, json!({"bucket": bucket})).await.0, 200);
    drain(&env.worker, &env.queue).await;
    put(
        &env.s3,
        &env.bucket,
        "d/Patient-1.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 11, 2)),
    )
    .await;
    env.s3
        .delete_object()
        .bucket(&env.bucket)
        .key("d/Patient-2.ndjson.gz")
        .send()
        .await
        .unwrap();
    put(
        &env.s3,
        &env.bucket,
        "d/Encounter.ndjson.gz",
        gen::gzip(&gen::ndjson("Encounter", 5, 3)),
    )
    .await;
    let (_, b) = rpc(&env, json!({"bucket": bucket, "dry-run": true})).await;
    let r = &b["result"];
    assert_eq!(
        (
            r["new"]["files"].as_i64(),
            r["changed"]["files"].as_i64(),
            r["unchanged"]["files"].as_i64(),
            r["gone"]["files"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{r}"
    );
}

#[tokio::test]
async fn loader_files_filter_and_sessions_and_exports_list() {
    let env = setup(LoadOptions::default()).await;
    put(
        &env.s3,
        &env.bucket,
        "f/Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 5, 1)),
    )
    .await;
    // A gzip header and then garbage: the file ends in error.
    let mut broken = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
    broken.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(64));
    put(&env.s3, &env.bucket, "f/Broken.ndjson.gz", broken).await;
    rpc(&env, json!({"bucket": format!("s3://{}/f/", env.bucket)})).await;
    drain(&env.worker, &env.queue).await;
    let (s, b, _) = call(&env, "GET", "/LoaderFile?status=done", None).await;
    assert_eq!(s, 200, "{b}");
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{b}");
    assert_eq!(entries[0]["resource"]["type"], "Patient");
    let (_, b, _) = call(
        &env,
        "GET",
        "/LoaderFile?status=done&type=Observation",
        None,
    )
    .await;
    assert_eq!(b["entry"], json!([]));
    let (_, b, _) = call(&env, "GET", "/LoaderFile?status=error", None).await;
    assert_eq!(
        b["entry"][0]["resource"]["file"], "f/Broken.ndjson.gz",
        "{b}"
    );
    let (_, b, _) = call(
        &env,
        "GET",
        &format!("/LoaderFile?bucket={}&_count=10", env.bucket),
        None,
    )
    .await;
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let (s, b, _) = call(&env, "GET", "/LoaderFile?resource-%3E%3E'x'=1", None).await;
    assert_eq!(s, 400, "{b}");

    // Sessions, newest first.
    for id in ["s-1", "s-2"] {
        let (s, b, _) = call(
            &env,
            "POST",
            "/$import",
            Some(json!({"resource": {"id": id, "inputs": [
            {"type": "Patient", "url": format!("s3://{}/f/Patient.ndjson.gz", env.bucket)}]}})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b, _) = call(&env, "GET", "/$import", None).await;
    assert_eq!(s, 200, "{b}");
    let ids: Vec<&str> = b["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-2", "s-1"]);

    // Exports.
    let (s, _, _) = call_with(
        &env,
        "GET",
        "/$export?_type=Patient",
        Some(&admin()),
        FHIR_KICK_OFF,
        None,
    )
    .await;
    assert_eq!(s, 202);
    let (s, b, _) = call(&env, "GET", "/$export-status", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["exports"][0]["status"], "active");
    assert_eq!(b["exports"][0]["tasks"], 1);
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_error_and_a_retry_finishes_the_file() {
    let mut env = setup(LoadOptions::default()).await;
    let sqs = siphon_tests::sqs().await;
    let dlq = Arc::new(SqsQueue::new(
        sqs.clone(),
        siphon_tests::fresh_queue(&sqs).await,
    ));
    env.app.dead_letters = Some(DeadLetters {
        db: env.db.clone(),
        pairs: vec![Pair {
            name: "load",
            queue: env.queue.clone(),
            dead: dlq.clone(),
        }],
    });
    put(
        &env.s3,
        &env.bucket,
        "x/Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 40, 1)),
    )
    .await;
    // The queue gave up on the file: it is in error, its message in the dead-letter queue.
    let loc = ObjectLocation::new(&env.bucket, "x/Patient.ndjson.gz");
    let (file, _) = env
        .db
        .create_loader_file(&siphon::model::LoaderFile::pending(
            &loc,
            None,
            None,
            Default::default(),
        ))
        .await
        .unwrap();
    env.db
        .fail_loader_file(
            &file.id,
            None,
            "gave up after 5 attempts: connection refused",
        )
        .await
        .unwrap();
    siphon::queue::send(
        &*dlq,
        &[LoadMessage::for_file(&file, Default::default())],
        None,
    )
    .await
    .unwrap();

    let (s, b, _) = call(&env, "GET", "/$dead-letters", None).await;
    assert_eq!(s, 200, "{b}");
    let m = &b["messages"][0];
    assert_eq!(m["queue"], "load");
    assert_eq!(m["loaderFile"], file.id);
    assert_eq!(m["status"], "error");
    assert!(m["error"].as_str().unwrap().contains("gave up"));
    let id = m["id"].as_str().unwrap().to_string();
    // Listing takes nothing away.
    let (_, again, _) = call(&env, "GET", "/$dead-letters", None).await;
    assert_eq!(again["messages"].as_array().unwrap().len(), 1);

    let (s, b, _) = call(&env, "POST", &format!("/$dead-letters/{id}/$retry"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        env.db.loader_file(&file.id).await.unwrap().unwrap().status,
        siphon::model::FileStatus::Pending
    );
    drain(&env.worker, &env.queue).await;
    assert_eq!(count(&env.db, "patient").await, 40);
    let f = env.db.loader_file(&file_id(&loc)).await.unwrap().unwrap();
    assert_eq!(f.status, siphon::model::FileStatus::Done);
    let (_, b, _) = call(&env, "GET", "/$dead-letters", None).await;
    assert_eq!(b["messages"], json!([]));
    let (s, _, _) = call(&env, "POST", &format!("/$dead-letters/{id}/$retry"), None).await;
    assert_eq!(s, 404);
}
