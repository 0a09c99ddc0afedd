//! First loads with Aidbox's `disable-idx?` and `drop-primary-key?`: the tables lose
//! their secondary indexes (and, when empty, their primary key) while the files load,
//! and get them back when the load ends; ids repeated within the load are reported and
//! the last one kept; a load whose end was never processed is rebuilt by the sweep.

mod api_harness;

use api_harness::{call, count, distinct_ids, drain, setup, Env};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::ObjectLocation;
use siphon::sources::s3::S3Source;
use siphon::sweep::{SweepOptions, Sweeper};
use siphon::ResourceType;
use siphon_tests::{connect, gen, put};

fn lines(ids: std::ops::Range<u64>, tag: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for n in ids {
        out.extend(
            format!("{{\"resourceType\":\"Patient\",\"id\":\"p-{n}\",\"gender\":\"{tag}\"}}\n")
                .as_bytes(),
        );
    }
    out
}

async fn rpc(env: &Env, params: Value) -> (u16, Value) {
    let (s, b, _) = call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": params})),
    )
    .await;
    (s, b)
}

/// The names of the table's indexes, and whether it has a primary key.
async fn indexes(env: &Env, table: &str) -> (Vec<String>, bool) {
    let c = connect(&env.db).await;
    let names: Vec<String> = c
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pk: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p')",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    (names, pk)
}

async fn status(env: &Env) -> Value {
    let (_, b, _) = call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket-status"})),
    )
    .await;
    b["result"].clone()
}

#[tokio::test]
async fn indexes_and_primary_key_are_dropped_for_the_load_and_rebuilt_after() {
    let env = setup(LoadOptions {
        batch_rows: 300,
        ..LoadOptions::default()
    })
    .await;
    // An empty table with a secondary index, as a user would have made it.
    env.db
        .upsert(&ResourceType::parse("Patient").unwrap(), "tmp", &json!({}))
        .await
        .unwrap();
    let c = connect(&env.db).await;
    c.batch_execute(
        "DELETE FROM patient; CREATE INDEX patient_gender ON patient ((resource->>'gender'))",
    )
    .await
    .unwrap();
    // Two files of one load; the second repeats 101 ids of the first with new content.
    put(
        &env.s3,
        &env.bucket,
        "first/a-Patient.ndjson.gz",
        gen::gzip(&lines(0..1000, "a")),
    )
    .await;
    put(
        &env.s3,
        &env.bucket,
        "first/b-Patient.ndjson.gz",
        gen::gzip(&lines(899..1100, "b")),
    )
    .await;
    // (`a-Patient` names no type, so each line brings its own.)
    let (s, b) = rpc(
        &env,
        json!({"bucket": format!("s3://{}/first/", env.bucket), "thread-num": 1,
               "disable-idx?": true, "drop-primary-key?": true}),
    )
    .await;
    assert_eq!((s, b["result"]["queued"].as_u64()), (200, Some(2)), "{b}");

    // Load the first file only: the table is in bulk mode meanwhile.
    siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 1, 1).await;
    let (names, pk) = indexes(&env, "patient").await;
    assert!(names.is_empty() && !pk, "{names:?} {pk}");
    let st = status(&env).await;
    assert_eq!(st["indexes-dropped"][0]["type"], "Patient", "{st}");
    assert_eq!(
        st["indexes-dropped"][0]["primaryKey"], "patient_pkey",
        "{st}"
    );
    assert_eq!(
        st["indexes-dropped"][0]["indexes"][0]["name"], "patient_gender",
        "{st}"
    );

    // The rest of the load; at its end everything is back.
    drain(&env.worker, &env.queue).await;
    let (names, pk) = indexes(&env, "patient").await;
    assert_eq!(names, vec!["patient_gender", "patient_pkey"]);
    assert!(pk);
    assert_eq!(count(&env.db, "patient").await, 1100);
    assert_eq!(distinct_ids(&env.db, "patient").await, 1100);
    // The last line of an id wins, as an upsert would have decided.
    let gender: String = c
        .query_one(
            "SELECT resource->>'gender' FROM patient WHERE id = 'p-950'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gender, "b");
    let st = status(&env).await;
    assert_eq!(st["indexes-dropped"], json!([]), "{st}");
    let (_, files, _) = call(&env, "GET", "/LoaderFile", None).await;
    for entry in files["entry"].as_array().unwrap() {
        let bulk = &entry["resource"]["bulk"][0];
        assert_eq!(bulk["type"], "Patient", "{entry}");
        assert_eq!(bulk["duplicates"], 101, "{entry}");
        assert_eq!(bulk["duplicateIds"].as_array().unwrap().len(), 100);
        assert_eq!(bulk["primaryKey"], true);
        assert_eq!(bulk["indexes"], 1);
    }
}

#[tokio::test]
async fn a_table_with_rows_keeps_its_primary_key_and_says_why() {
    let env = setup(LoadOptions::default()).await;
    env.db
        .upsert(
            &ResourceType::parse("Patient").unwrap(),
            "p-0",
            &json!({"gender": "x"}),
        )
        .await
        .unwrap();
    put(
        &env.s3,
        &env.bucket,
        "more/Patient.ndjson.gz",
        gen::gzip(&lines(0..500, "n")),
    )
    .await;
    let (s, b) = rpc(
        &env,
        json!({"bucket": format!("s3://{}/more/", env.bucket), "drop-primary-key?": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 1, 1).await;
    drain(&env.worker, &env.queue).await;
    let (_, pk) = indexes(&env, "patient").await;
    assert!(pk);
    // The existing id was updated, not doubled.
    assert_eq!(count(&env.db, "patient").await, 500);
    // upsert?: false cannot work without the primary key: refused up front.
    let (s, b) = rpc(
        &env,
        json!({"bucket": format!("s3://{}/more/", env.bucket), "drop-primary-key?": true,
               "upsert?": false}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("upsert?"),
        "{b}"
    );
}

#[tokio::test]
async fn a_table_left_in_bulk_mode_by_a_dead_worker_is_rebuilt_by_the_sweep() {
    let env = setup(LoadOptions::default()).await;
    let patient = ResourceType::parse("Patient").unwrap();
    // The load's last file ended, and its worker died before the rebuild: the table is
    // in bulk mode for a load that has no unfinished file.
    let state = env
        .db
        .enter_bulk_mode(&patient, "a-finished-load", true, true)
        .await
        .unwrap();
    assert_eq!(state.primary_key.as_deref(), Some("patient_pkey"));
    let c = connect(&env.db).await;
    c.batch_execute(
        "INSERT INTO patient (id, txid, status, resource) VALUES
           ('d', 1, 'created', '{\"v\": 1}'), ('d', 2, 'created', '{\"v\": 2}'), ('e', 3, 'created', '{}')",
    )
    .await
    .unwrap();
    assert!(!indexes(&env, "patient").await.1);
    let sweeper = Sweeper::new(env.db.clone(), env.queue.clone(), SweepOptions::default());
    let report = sweeper.pass().await.unwrap();
    assert_eq!(report.rebuilt, 1, "{report:?}");
    assert!(indexes(&env, "patient").await.1);
    assert_eq!(count(&env.db, "patient").await, 2);
    let v: String = c
        .query_one("SELECT resource->>'v' FROM patient WHERE id = 'd'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "2");
    assert_eq!(sweeper.pass().await.unwrap().rebuilt, 0);
}

#[tokio::test]
async fn each_table_is_rebuilt_as_soon_as_the_files_that_write_it_have_ended() {
    let options = LoadOptions {
        batch_rows: 300,
        lease: Duration::from_millis(1500),
        heartbeat: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    let env = setup(options.clone()).await;
    for (ty, n) in [("Patient", 1_000), ("Observation", 30_000)] {
        put(
            &env.s3,
            &env.bucket,
            &format!("early/{ty}.ndjson.gz"),
            gen::gzip(&gen::ndjson(ty, n, 5)),
        )
        .await;
    }
    let (s, b) = rpc(
        &env,
        json!({"bucket": format!("s3://{}/early/", env.bucket), "thread-num": 2,
               "disable-idx?": true, "drop-primary-key?": true}),
    )
    .await;
    assert_eq!((s, b["result"]["queued"].as_u64()), (200, Some(2)), "{b}");
    let id = |ty: &str| {
        siphon::model::loader_file::file_id(&ObjectLocation::new(
            &env.bucket,
            format!("early/{ty}.ndjson.gz"),
        ))
    };
    let loader = Loader::new(
        env.db.clone(),
        Arc::new(S3Source::new(env.s3.clone())),
        options,
    );

    // The Observations are loading (their table in bulk mode) when the Patients end.
    let observations = {
        let (loader, id) = (loader.clone(), id("Observation"));
        tokio::spawn(async move { loader.load(&id, None).await })
    };
    let start = Instant::now();
    while count(&env.db, "observation").await < 600 {
        assert!(start.elapsed() < Duration::from_secs(60), "no Observations");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observations.abort();
    let outcome = loader.load(&id("Patient"), None).await.unwrap();
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
    let (_, file, _) = call(&env, "GET", &format!("/LoaderFile/{}", id("Patient")), None).await;
    let owner = file["group"].as_str().unwrap().to_string();
    assert_eq!(
        siphon::loading::bulk::finish(&env.db, &owner)
            .await
            .unwrap(),
        1
    );
    assert!(
        indexes(&env, "patient").await.1,
        "the Patients' table is whole"
    );
    assert!(
        !indexes(&env, "observation").await.1,
        "the Observations still load"
    );
    let st = status(&env).await;
    let dropped = st["indexes-dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{st}");
    assert_eq!(dropped[0]["type"], "Observation", "{st}");

    // The rest through the queue (the dead Observation loader's lease runs out): both
    // tables whole, and every file says what was rebuilt, for both.
    let start = Instant::now();
    while count(&env.db, "observation").await < 30_000 {
        assert!(start.elapsed() < Duration::from_secs(120), "not finished");
        drain(&env.worker, &env.queue).await;
    }
    for (table, n) in [("patient", 1_000), ("observation", 30_000)] {
        assert!(indexes(&env, table).await.1, "{table}: no primary key");
        assert_eq!(count(&env.db, table).await, n);
    }
    let st = status(&env).await;
    assert_eq!(st["indexes-dropped"], json!([]), "{st}");
    let (_, files, _) = call(&env, "GET", "/LoaderFile", None).await;
    for entry in files["entry"].as_array().unwrap() {
        let types: Vec<&str> = entry["resource"]["bulk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Patient", "Observation"], "{entry}");
    }
}
