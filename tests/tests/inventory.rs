//! Import from an S3 Inventory, end to end in process: the API, the export worker (which
//! plans), the loader, Postgres, LocalStack S3 and SQS. Inventories are written exactly
//! as S3 writes them (`siphon_tests::inventory`): manifest, checksum, gzip CSV and
//! Parquet data files, URL-encoded keys, versioned buckets with delete markers.

mod api_harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{call, count, drain, drain_exports, setup, Env};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;
use siphon::model::loader_file::file_id;
use siphon::model::ObjectLocation;
use siphon_tests::inventory::{self, Format, Listed, Run};
use siphon_tests::{fresh_bucket, gen, put};

/// ndjson.gz of `ty` resources with indexes `from..to` (ids `pat-00000100`...).
fn file(ty: &str, from: u64, to: u64, seed: u64) -> Vec<u8> {
    let mut lines = Vec::new();
    for n in from..to {
        serde_json::to_writer(&mut lines, &gen::resource(ty, n, seed)).unwrap();
        lines.push(b'\n');
    }
    gen::gzip(&lines)
}

async fn rpc(env: &Env, params: Value) -> (u16, Value, lambda_http::http::HeaderMap) {
    call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": params})),
    )
    .await
}

/// Every object of a bucket with its ETag.
async fn snapshot(env: &Env, bucket: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = env
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            out.insert(
                o.key().unwrap().to_string(),
                o.e_tag().unwrap_or("").to_string(),
            );
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// The current version of `key` as the inventory lists it (its real size and ETag).
async fn listed(env: &Env, key: &str) -> Listed {
    let head = env
        .s3
        .head_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    Listed::object(key, head.content_length().unwrap(), head.e_tag().unwrap())
}

/// Starts an import; plans it and loads its files; answers the session as it ends.
async fn import(env: &Env, params: Value) -> Value {
    let (s, body, headers) = rpc(env, params).await;
    assert_eq!(s, 202, "{body}");
    let location = headers["content-location"].to_str().unwrap().to_string();
    let id = body["result"]["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(location.ends_with(&format!("/$import/{id}")), "{location}");
    let start = Instant::now();
    loop {
        drain_exports(env).await;
        drain(&env.worker, &env.queue).await;
        let (s, view, _) = call(env, "GET", &format!("/$import/{id}"), None).await;
        assert_eq!(s, 200, "{view}");
        if view["status"] != "active" {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never ended: {view}"
        );
    }
}

async fn loader_file(env: &Env, key: &str) -> Value {
    let id = file_id(&ObjectLocation::new(&env.bucket, key));
    let (s, body, _) = call(env, "GET", &format!("/LoaderFile/{id}"), None).await;
    assert_eq!(s, 200, "{key}: {body}");
    body
}

/// Messages waiting in the load queue.
async fn queued(env: &Env) -> i64 {
    let attrs = env
        .queue
        .client()
        .get_queue_attributes()
        .queue_url(env.queue.url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[test]
fn dry_run_import_same_run_again_and_a_newer_run_bring_in_exactly_what_changed() {
    // The whole scenario is one big future: it runs on a thread with room for it.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(gradual_import())
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn gradual_import() {
    let env = setup(LoadOptions::default()).await;
    let inv = fresh_bucket(&env.s3).await;
    let src = env.bucket.clone();
    put(
        &env.s3,
        &src,
        "data/Patient-1.ndjson.gz",
        file("Patient", 0, 20, 1),
    )
    .await;
    put(
        &env.s3,
        &src,
        "data/Observation-1.ndjson.gz",
        file("Observation", 0, 30, 1),
    )
    .await;
    put(
        &env.s3,
        &src,
        "data/dir with space/Patient+2.ndjson.gz",
        file("Patient", 100, 105, 2),
    )
    .await;
    put(
        &env.s3,
        &src,
        "data/notes.txt",
        b"not a resource file".to_vec(),
    )
    .await;
    put(
        &env.s3,
        &src,
        "other/Patient-9.ndjson.gz",
        file("Patient", 900, 901, 9),
    )
    .await;
    put(
        &env.s3,
        &src,
        "data/Encounter-old.ndjson.gz",
        file("Encounter", 0, 7, 1),
    )
    .await;
    // Before the inventory: Observation and Encounter-old were loaded by listing.
    let (s, b, _) = rpc(
        &env,
        json!({"bucket": format!("s3://{src}/data/"), "glob": "**/{Observation-1,Encounter-old}.ndjson.gz"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    drain(&env.worker, &env.queue).await;
    assert_eq!(count(&env.db, "encounter").await, 7);
    // Encounter-old is deleted since: the inventory will not list it.
    env.s3
        .delete_object()
        .bucket(&src)
        .key("data/Encounter-old.ndjson.gz")
        .send()
        .await
        .unwrap();
    let mut rows = vec![
        listed(&env, "data/Patient-1.ndjson.gz").await,
        listed(&env, "data/Observation-1.ndjson.gz").await,
        listed(&env, "data/dir with space/Patient+2.ndjson.gz").await,
        listed(&env, "data/notes.txt").await,
        listed(&env, "other/Patient-9.ndjson.gz").await,
    ];
    // A versioned bucket: an older version, and a delete marker.
    let mut old = rows[0].clone();
    old.latest = false;
    old.version_id = Some("v-old".into());
    old.etag = Some("0123456789abcdef0123456789abcdef".into());
    rows.push(old);
    rows.push(Listed {
        key: "data/Deleted-1.ndjson.gz".into(),
        size: None,
        etag: None,
        modified_ms: 1_795_400_000_000,
        version_id: Some("v-marker".into()),
        latest: true,
        delete_marker: true,
    });
    let run1 = Run {
        inventory_bucket: &inv,
        dest: "inventories",
        source: &src,
        config: "daily",
        when: "2026-11-22T01-00Z",
        format: Format::Csv,
        versioned: true,
        files: 2,
        without: &[],
    };
    let manifest1 = inventory::write(&env.s3, &run1, &rows, 1_795_400_000_000).await;
    let before = (snapshot(&env, &src).await, snapshot(&env, &inv).await);
    let params = json!({"bucket": format!("s3://{src}/data/"), "inventory": manifest1});

    // The dry run: counts, and nothing changes.
    let mut dry = params.clone();
    dry["dry-run"] = json!(true);
    let (s, b, _) = rpc(&env, dry).await;
    assert_eq!(s, 200, "{b}");
    let r = &b["result"];
    let size = |i: usize| rows[i].size.unwrap();
    assert_eq!(r["files"], 3, "{r}");
    assert_eq!(r["bytes"], size(0) + size(1) + size(2));
    assert_eq!(r["new"], json!({"files": 2, "bytes": size(0) + size(2)}));
    assert_eq!(r["unchanged"], json!({"files": 1, "bytes": size(1)}));
    assert_eq!(r["changed"]["files"], 0);
    assert_eq!(r["gone"]["files"], 1, "Encounter-old");
    assert_eq!(r["types"]["Patient"]["files"], 2);
    assert_eq!(r["types"]["Observation"]["files"], 1);
    assert_eq!(
        r["inventory"]["skipped"],
        json!({"versions": 2, "filtered": 2})
    );
    assert_eq!(r["inventory"]["format"], "Csv");
    assert_eq!(queued(&env).await, 0, "a dry run queues nothing");
    assert_eq!(count(&env.db, "patient").await, 0);

    // The import.
    let view = import(&env, params.clone()).await;
    assert_eq!(view["status"], "done", "{view}");
    let plan = &view["inventory"]["plan"];
    assert_eq!(
        (
            plan["new"].as_u64(),
            plan["changed"].as_u64(),
            plan["unchanged"].as_u64()
        ),
        (Some(2), Some(0), Some(1)),
        "{view}"
    );
    assert_eq!(plan["gone"], 1);
    assert_eq!(view["files"]["done"], 2);
    assert_eq!(count(&env.db, "patient").await, 25);
    let f = loader_file(&env, "data/dir with space/Patient+2.ndjson.gz").await;
    assert_eq!(
        (f["status"].as_str(), f["loaded"].as_u64()),
        (Some("done"), Some(5)),
        "{f}"
    );
    assert_eq!(f["inventory"], json!(manifest1));
    assert_eq!(f["import"], view["id"]);
    let gone = loader_file(&env, "data/Encounter-old.ndjson.gz").await;
    assert_eq!(gone["gone"]["inventory"], json!(manifest1), "{gone}");
    assert_eq!(
        count(&env.db, "encounter").await,
        7,
        "a gone file's rows stay"
    );
    assert!(
        loader_file(&env, "data/Observation-1.ndjson.gz").await["inventory"].is_null(),
        "unchanged: left alone"
    );
    assert_eq!(
        before,
        (snapshot(&env, &src).await, snapshot(&env, &inv).await),
        "siphon wrote nothing to either bucket"
    );

    // The same run again: nothing to queue.
    let (s, b, _) = rpc(&env, params.clone()).await;
    assert_eq!(s, 202, "{b}");
    let id = b["result"]["session"]["id"].as_str().unwrap().to_string();
    drain_exports(&env).await;
    assert_eq!(queued(&env).await, 0, "the same manifest queues nothing");
    let (_, view, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["inventory"]["plan"]["unchanged"], 3, "{view}");
    assert_eq!(view["inventory"]["plan"]["new"], 0);

    // A day later: one object overwritten, one added, one deleted. The newest run is
    // found under the configuration's prefix (a run without its checksum is skipped).
    put(
        &env.s3,
        &src,
        "data/Patient-1.ndjson.gz",
        file("Patient", 0, 20, 77),
    )
    .await;
    put(
        &env.s3,
        &src,
        "data/Encounter-2.ndjson.gz",
        file("Encounter", 100, 104, 2),
    )
    .await;
    env.s3
        .delete_object()
        .bucket(&src)
        .key("data/dir with space/Patient+2.ndjson.gz")
        .send()
        .await
        .unwrap();
    let rows2 = vec![
        listed(&env, "data/Patient-1.ndjson.gz").await,
        listed(&env, "data/Observation-1.ndjson.gz").await,
        listed(&env, "data/Encounter-2.ndjson.gz").await,
        listed(&env, "data/notes.txt").await,
    ];
    let run2 = Run {
        when: "2026-11-23T01-00Z",
        format: Format::Parquet,
        versioned: false,
        files: 1,
        ..run1
    };
    let manifest2 = inventory::write(&env.s3, &run2, &rows2, 1_795_486_400_000).await;
    put(
        &env.s3,
        &inv,
        &format!("{}2026-11-24T01-00Z/manifest.json", run2.prefix()),
        b"{}".to_vec(),
    )
    .await;
    let by_prefix = json!({"bucket": format!("s3://{src}/data/"), "inventory": format!("s3://{inv}/{}", run2.prefix())});
    let mut dry = by_prefix.clone();
    dry["dry-run"] = json!(true);
    let (s, b, _) = rpc(&env, dry).await;
    assert_eq!(s, 200, "{b}");
    let r = &b["result"];
    assert_eq!(
        r["inventory"]["manifest"],
        json!(manifest2),
        "the newest complete run"
    );
    assert_eq!(r["inventory"]["format"], "Parquet");
    assert_eq!(
        (
            r["new"]["files"].as_i64(),
            r["changed"]["files"].as_i64(),
            r["unchanged"]["files"].as_i64(),
            r["gone"]["files"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(2)),
        "{r}"
    );
    let view = import(&env, by_prefix).await;
    assert_eq!(view["status"], "done", "{view}");
    let plan = &view["inventory"]["plan"];
    assert_eq!(
        (
            plan["new"].as_u64(),
            plan["changed"].as_u64(),
            plan["unchanged"].as_u64(),
            plan["gone"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{view}"
    );
    assert_eq!(count(&env.db, "encounter").await, 11);
    assert_eq!(
        count(&env.db, "patient").await,
        25,
        "the overwritten file upserted its ids"
    );
    let stored: Value = siphon_tests::connect(&env.db)
        .await
        .query_one(
            "SELECT resource FROM patient WHERE id = $1",
            &[&gen::id_of("Patient", 3)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored["name"],
        gen::resource("Patient", 3, 77)["name"],
        "the new content loaded"
    );
    let rewritten = loader_file(&env, "data/Patient-1.ndjson.gz").await;
    assert_eq!(rewritten["inventory"], json!(manifest2));
    assert_eq!(
        rewritten["etag"],
        json!(rows2[0].etag.as_ref().map(|e| format!("\"{e}\"")))
    );
    let deleted = loader_file(&env, "data/dir with space/Patient+2.ndjson.gz").await;
    assert_eq!(deleted["gone"]["inventory"], json!(manifest2), "{deleted}");
}

#[tokio::test]
async fn an_object_listed_but_gone_ends_missing_and_the_import_goes_on() {
    let env = setup(LoadOptions::default()).await;
    let inv = fresh_bucket(&env.s3).await;
    let src = env.bucket.clone();
    put(
        &env.s3,
        &src,
        "Patient-1.ndjson.gz",
        file("Patient", 0, 10, 1),
    )
    .await;
    let rows = vec![
        listed(&env, "Patient-1.ndjson.gz").await,
        // Deleted after the inventory was taken.
        Listed::object(
            "Patient-ghost.ndjson.gz",
            123,
            "00000000000000000000000000000000",
        ),
    ];
    let run = Run {
        inventory_bucket: &inv,
        dest: "",
        source: &src,
        config: "cfg",
        when: "2026-11-22T01-00Z",
        format: Format::Csv,
        versioned: false,
        files: 1,
        without: &[],
    };
    let manifest = inventory::write(&env.s3, &run, &rows, 1_795_400_000_000).await;
    let view = import(
        &env,
        json!({"bucket": format!("s3://{src}"), "inventory": manifest}),
    )
    .await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["files"], json!({"done": 1, "missing": 1}));
    let ghost = &view["inputs"][0];
    assert_eq!(ghost["status"], "missing");
    assert!(
        ghost["error"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{ghost}"
    );
    assert_eq!(count(&env.db, "patient").await, 10);
}

#[test]
fn broken_inventories_are_400s_that_name_the_problem() {
    siphon_tests::on_big_stack(broken_inventories);
}

async fn broken_inventories() {
    let env = setup(LoadOptions::default()).await;
    let inv = fresh_bucket(&env.s3).await;
    let src = env.bucket.clone();
    put(
        &env.s3,
        &src,
        "Patient-1.ndjson.gz",
        file("Patient", 0, 3, 1),
    )
    .await;
    let rows = vec![listed(&env, "Patient-1.ndjson.gz").await];
    let run = |config: &'static str, without: &'static [&'static str]| Run {
        inventory_bucket: inv.as_str(),
        dest: "inv",
        source: src.as_str(),
        config,
        when: "2026-11-22T01-00Z",
        format: Format::Csv,
        versioned: false,
        files: 1,
        without,
    };
    let dry = |inventory: &str, bucket: &str| json!({"bucket": format!("s3://{bucket}"), "inventory": inventory, "dry-run": true});
    let mut cases: Vec<(Value, &str)> = Vec::new();
    // The checksum does not match the manifest.
    let m = inventory::write(&env.s3, &run("sum", &[]), &rows, 1).await;
    let checksum = m.replace("manifest.json", "manifest.checksum");
    put(
        &env.s3,
        &inv,
        checksum.trim_start_matches(&format!("s3://{inv}/")),
        b"ffffffffffffffffffffffffffffffff".to_vec(),
    )
    .await;
    cases.push((dry(&m, &src), "does not match its manifest.checksum"));
    // No ETag column.
    let m = inventory::write(&env.s3, &run("noetag", &["ETag"]), &rows, 1).await;
    cases.push((dry(&m, &src), "no ETag column"));
    // Another bucket's inventory.
    let m = inventory::write(&env.s3, &run("good", &[]), &rows, 1).await;
    cases.push((dry(&m, "some-other-bucket"), "lists bucket"));
    // A data file damaged (same size, other bytes) or gone.
    let m2 = inventory::write(&env.s3, &run("damaged", &[]), &rows, 1).await;
    let manifest: Value = serde_json::from_slice(
        &env.s3
            .get_object()
            .bucket(&inv)
            .key(m2.trim_start_matches(&format!("s3://{inv}/")))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let data_key = manifest["files"][0]["key"].as_str().unwrap().to_string();
    let mut bytes = env
        .s3
        .get_object()
        .bucket(&inv)
        .key(&data_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    put(&env.s3, &inv, &data_key, bytes).await;
    cases.push((dry(&m2, &src), "has MD5"));
    let m3 = inventory::write(&env.s3, &run("lost", &[]), &rows, 1).await;
    let manifest3: Value = serde_json::from_slice(
        &env.s3
            .get_object()
            .bucket(&inv)
            .key(m3.trim_start_matches(&format!("s3://{inv}/")))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    env.s3
        .delete_object()
        .bucket(&inv)
        .key(manifest3["files"][0]["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    cases.push((dry(&m3, &src), "listed in the manifest"));
    // ORC, written with a correct checksum.
    let orc = serde_json::to_vec(&json!({"sourceBucket": src, "destinationBucket": format!("arn:aws:s3:::{inv}"),
        "version": "2016-11-30", "creationTimestamp": "1", "fileFormat": "ORC",
        "fileSchema": "struct<bucket:string,key:string,size:bigint,last_modified_date:timestamp,e_tag:string>", "files": []}))
    .unwrap();
    let sum: String = {
        use md5::Digest;
        md5::Md5::digest(&orc)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    put(
        &env.s3,
        &inv,
        "orc/src/cfg/2026-11-22T01-00Z/manifest.json",
        orc,
    )
    .await;
    put(
        &env.s3,
        &inv,
        "orc/src/cfg/2026-11-22T01-00Z/manifest.checksum",
        sum.into_bytes(),
    )
    .await;
    cases.push((
        dry(
            &format!("s3://{inv}/orc/src/cfg/2026-11-22T01-00Z/manifest.json"),
            &src,
        ),
        "siphon reads CSV and Parquet",
    ));
    // A prefix with no complete run, a manifest that is not there, not an s3:// URL.
    cases.push((
        dry(&format!("s3://{inv}/nothing-here/"), &src),
        "no complete inventory",
    ));
    cases.push((
        dry(&format!("s3://{inv}/x/manifest.json"), &src),
        "manifest.json",
    ));
    cases.push((dry("https://example.org/manifest.json", &src), "s3:// URL"));
    let before = snapshot(&env, &inv).await;
    for (params, words) in cases {
        let (s, b, _) = rpc(&env, params.clone()).await;
        assert_eq!(s, 400, "{params}: {b}");
        let m = b["error"]["message"].as_str().unwrap();
        assert!(m.contains(words), "{words}: {m}");
        // The same problem refuses the import itself.
        let mut real = params.clone();
        real.as_object_mut().unwrap().remove("dry-run");
        if words != "has MD5" {
            let (s, b, _) = rpc(&env, real).await;
            assert_eq!(s, 400, "{params}: {b}");
        }
    }
    assert_eq!(before, snapshot(&env, &inv).await);
    assert_eq!(queued(&env).await, 0);
    // A damaged data file found while planning fails the session, saying which.
    let (s, b, _) = rpc(
        &env,
        json!({"bucket": format!("s3://{src}"), "inventory": m2}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let id = b["result"]["session"]["id"].as_str().unwrap().to_string();
    drain_exports(&env).await;
    let (_, view, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!(view["status"], "error", "{view}");
    assert!(
        view["error"].as_str().unwrap().contains("has MD5"),
        "{view}"
    );
}

#[tokio::test]
async fn a_new_manifest_checksum_event_imports_the_run_once() {
    let env = setup(LoadOptions::default()).await;
    let inv = fresh_bucket(&env.s3).await;
    let src = env.bucket.clone();
    put(
        &env.s3,
        &src,
        "in/Patient-1.ndjson.gz",
        file("Patient", 0, 12, 1),
    )
    .await;
    let (s, b, _) = call(
        &env,
        "PUT",
        "/",
        Some(
            json!([{"resourceType": "Inventory", "id": "daily", "bucket": format!("s3://{src}/in/"),
                     "inventory": format!("s3://{inv}/inv/{src}/daily/"), "thread-num": 2}]),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let rows = vec![listed(&env, "in/Patient-1.ndjson.gz").await];
    let run = Run {
        inventory_bucket: &inv,
        dest: "inv",
        source: &src,
        config: "daily",
        when: "2026-11-23T01-00Z",
        format: Format::Parquet,
        versioned: false,
        files: 1,
        without: &[],
    };
    inventory::write(&env.s3, &run, &rows, 1_795_486_400_000).await;
    let checksum_key = format!("{}2026-11-23T01-00Z/manifest.checksum", run.prefix());
    // The sample S3 event of infra/events/, naming the new run's manifest.checksum.
    let mut event: Value =
        serde_json::from_str(include_str!("../../infra/events/s3-object-created.json")).unwrap();
    event["Records"][0]["s3"]["bucket"]["name"] = json!(inv);
    event["Records"][0]["s3"]["bucket"]["arn"] = json!(format!("arn:aws:s3:::{inv}"));
    event["Records"][0]["s3"]["object"]["key"] = json!(checksum_key);
    let auto = siphon::inventory::auto::AutoImport {
        db: env.db.clone(),
        task_queue: env.export_queue.clone(),
        s3: siphon::sources::s3::S3Source::new(env.s3.clone()),
        guard: Arc::new(siphon::sources::http::HttpSource::new(
            siphon::sources::http::UrlPolicy::from_env(&siphon_tests::config_env()),
        )),
    };
    // S3 delivers at least once: the same event twice starts one session.
    for _ in 0..2 {
        let out = siphon_s3_ingest::handle(&env.db, env.queue.as_ref(), Some(&auto), event.clone())
            .await
            .unwrap();
        assert_eq!(out["status"], "ok");
    }
    drain_exports(&env).await;
    drain(&env.worker, &env.queue).await;
    let (s, list, _) = call(&env, "GET", "/$import", None).await;
    assert_eq!(s, 200, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    assert_eq!(sessions[0]["status"], "done", "{list}");
    assert_eq!(count(&env.db, "patient").await, 12);
    let f = loader_file(&env, "in/Patient-1.ndjson.gz").await;
    assert!(
        f["inventory"]
            .as_str()
            .unwrap()
            .ends_with("2026-11-23T01-00Z/manifest.json"),
        "{f}"
    );
    // An event for a run no Inventory covers changes nothing.
    let mut other = event.clone();
    other["Records"][0]["s3"]["object"]["key"] =
        json!("elsewhere/2026-11-23T01-00Z/manifest.checksum");
    siphon_s3_ingest::handle(&env.db, env.queue.as_ref(), Some(&auto), other)
        .await
        .unwrap();
    assert_eq!(queued(&env).await, 0);
}

#[tokio::test]
async fn files_wait_in_postgres_and_are_fed_thread_num_at_a_time_through_pause_and_resume() {
    let env = setup(LoadOptions::default()).await;
    let inv = fresh_bucket(&env.s3).await;
    let src = env.bucket.clone();
    let mut rows = Vec::new();
    for n in 0..12u64 {
        let key = format!("f/Patient-{n:02}.ndjson.gz");
        put(&env.s3, &src, &key, file("Patient", n * 10, n * 10 + 10, n)).await;
        rows.push(listed(&env, &key).await);
    }
    let run = Run {
        inventory_bucket: &inv,
        dest: "",
        source: &src,
        config: "cfg",
        when: "2026-11-22T01-00Z",
        format: Format::Csv,
        versioned: false,
        files: 3,
        without: &[],
    };
    let manifest = inventory::write(&env.s3, &run, &rows, 1_795_400_000_000).await;
    let (s, b, _) = rpc(
        &env,
        json!({"bucket": format!("s3://{src}"), "inventory": manifest, "thread-num": 2}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let id = b["result"]["session"]["id"].as_str().unwrap().to_string();
    drain_exports(&env).await;
    assert_eq!(
        queued(&env).await,
        2,
        "only thread-num files are on the queue"
    );
    // One file at a time: each one that ends queues the next; never more than 2 queued.
    for _ in 0..3 {
        let n =
            siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 1, 1)
                .await;
        assert_eq!(n, 1);
        let q = queued(&env).await;
        assert!((1..=2).contains(&q), "{q} queued");
    }
    // Paused, files stop being fed; resumed, the feeding starts again.
    let (s, v, _) = call(
        &env,
        "POST",
        "/$import",
        Some(json!({"resource": {"id": id, "action": "pause"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    drain(&env.worker, &env.queue).await;
    let (_, view, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!(view["status"], "paused", "{view}");
    assert!(view["files"]["paused"].as_i64().unwrap() >= 7, "{view}");
    let (s, v, _) = call(
        &env,
        "POST",
        "/$import",
        Some(json!({"resource": {"id": id, "action": "resume"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        queued(&env).await,
        2,
        "resume feeds thread-num files, not all"
    );
    drain(&env.worker, &env.queue).await;
    let (_, view, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["files"], json!({"done": 12}));
    assert_eq!(count(&env.db, "patient").await, 120);
}
