//! Ingestion end to end, in process, against LocalStack S3/SQS and Postgres: the API's
//! RPC and LoaderFile routes with auth, the SQS loader worker, S3-event ingestion.

mod api_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{admin, basic, call_as, Env};
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::loader_file::{file_id, FileStatus};
use siphon::sources::s3::S3Source;
use siphon::sources::ObjectLocation;
use siphon_tests::{corpus, gen, put, s3, var};

async fn setup() -> Env {
    api_harness::setup(LoadOptions::default()).await
}

fn worker(env: &mut Env) -> &mut siphon::workers::LoadWorker {
    Arc::get_mut(&mut env.worker).expect("the test's only handle on its worker")
}

async fn rpc(env: &Env, method: &str, params: Value) -> (u16, Value) {
    let (s, v, _) = call_as(
        env,
        "POST",
        "/rpc",
        Some(&admin()),
        Some(json!({"method": method, "params": params})),
    )
    .await;
    (s, v)
}

async fn drain(env: &Env) {
    api_harness::drain(&env.worker, &env.queue).await
}

async fn table_count(env: &Env, table: &str) -> i64 {
    api_harness::count(&env.db, table).await
}

#[tokio::test]
async fn load_from_bucket_end_to_end_with_skip_and_reimport() {
    let env = setup().await;
    let s3 = s3().await;
    put(
        &s3,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 300, 1)),
    )
    .await;
    put(
        &s3,
        &env.bucket,
        "sub/Encounter-1.ndjson.gz",
        gen::gzip(&gen::ndjson("Encounter", 200, 1)),
    )
    .await;
    put(
        &s3,
        &env.bucket,
        "Observation.ndjson.gz",
        corpus::corrupt(500),
    )
    .await;
    put(&s3, &env.bucket, "notes.txt", b"not a data file".to_vec()).await;
    let (status, body) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket), "thread-num": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"result": {"message": "Upload started", "queued": 3, "skipped": 0}})
    );
    drain(&env).await;
    assert_eq!(table_count(&env, "patient").await, 300);
    assert_eq!(table_count(&env, "encounter").await, 200);
    let (_, status_body) = rpc(&env, "aidbox.bulk/load-from-bucket-status", json!({})).await;
    assert_eq!(
        status_body["result"]["files"]["done"],
        json!(2),
        "{status_body}"
    );
    assert_eq!(
        status_body["result"]["files"]["error"],
        json!(1),
        "{status_body}"
    );
    assert!(
        status_body["result"]["resources"]["loaded"]
            .as_i64()
            .unwrap()
            >= 500,
        "{status_body}"
    );
    // The last hour minute by minute: every file loaded within it, so the minutes add up
    // to the resources loaded (each run spread over the minutes it took).
    let minutes = status_body["result"]["throughput"]["loaded-per-minute"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(minutes.len(), 60, "{status_body}");
    assert_eq!(
        minutes.iter().filter_map(|m| m.as_i64()).sum::<i64>(),
        status_body["result"]["resources"]["loaded"]
            .as_i64()
            .unwrap(),
        "{status_body}"
    );
    // The corrupt file says why.
    let bad = file_id(&ObjectLocation::new(&env.bucket, "Observation.ndjson.gz"));
    let (s, f, _) = call_as(
        &env,
        "GET",
        &format!("/LoaderFile/{bad}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(f["status"], "error");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .starts_with("gzip data corrupt"),
        "{f}"
    );
    // Again: everything is skipped.
    let (_, again) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket)}),
    )
    .await;
    assert_eq!(
        again["result"],
        json!({"message": "Upload started", "queued": 0, "skipped": 3})
    );
    // Delete one LoaderFile: exactly that file is imported again.
    let pid = file_id(&ObjectLocation::new(&env.bucket, "Patient.ndjson.gz"));
    let (s, _, _) = call_as(
        &env,
        "DELETE",
        &format!("/LoaderFile/{pid}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, third) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket)}),
    )
    .await;
    assert_eq!(
        third["result"],
        json!({"message": "Upload started", "queued": 1, "skipped": 2})
    );
    drain(&env).await;
    let (_, f, _) = call_as(
        &env,
        "GET",
        &format!("/LoaderFile/{pid}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(
        (f["status"].as_str(), f["loaded"].as_u64()),
        (Some("done"), Some(300))
    );
    let updated: i64 = siphon_tests::connect(&env.db)
        .await
        .query_one("SELECT count(*) FROM patient WHERE status = 'updated'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated, 300, "the re-import overwrote the same ids");
    let (s, list, _) = call_as(&env, "GET", "/LoaderFile", Some(&admin()), None).await;
    assert_eq!((s, list["total"].as_u64()), (200, Some(3)));
}

#[tokio::test]
async fn listing_walks_every_page_and_globs_and_prefixes_select() {
    let env = setup().await;
    let s3 = s3().await;
    let tiny = gen::gzip(b"{\"resourceType\":\"Patient\",\"id\":\"1\"}\n");
    let keys: Vec<String> = (0..2_500)
        .map(|i| format!("many/Patient-{i:04}.ndjson.gz"))
        .collect();
    let mut puts = futures::stream::iter(keys.iter().map(|k| {
        let (s3, b, body) = (s3.clone(), env.bucket.clone(), tiny.clone());
        async move { put(&s3, &b, k, body).await }
    }))
    .buffer_unordered(32);
    use futures::StreamExt;
    while puts.next().await.is_some() {}
    put(&s3, &env.bucket, "other/Encounter.ndjson.gz", tiny.clone()).await;
    put(&s3, &env.bucket, "Condition.ndjson.gz", tiny.clone()).await;
    // A glob that only matches at the root.
    let (_, root) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket), "glob": "*.ndjson.gz"}),
    )
    .await;
    assert_eq!(root["result"]["queued"], json!(1), "{root}");
    // Prefixes.
    let (_, other) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket), "prefixes": ["other/"]}),
    )
    .await;
    assert_eq!(other["result"]["queued"], json!(1), "{other}");
    // 2,500 keys: three list pages.
    let start = Instant::now();
    let (status, many) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}/many/", env.bucket), "glob": "**/Patient-*.ndjson.gz"}),
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{many}");
    assert_eq!(
        many["result"],
        json!({"message": "Upload started", "queued": 2500, "skipped": 0})
    );
    println!(
        "queued 2500 files in {secs:.2}s ({:.0} files/s)",
        2500.0 / secs
    );
    let attrs = env
        .queue
        .client()
        .get_queue_attributes()
        .queue_url(env.queue.url())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let n: u64 = attrs.attributes.unwrap()
        [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages]
        .parse()
        .unwrap();
    assert_eq!(n, 2502);
}

#[tokio::test]
async fn thread_num_caps_concurrent_loads_of_one_call() {
    let env = setup().await;
    let s3c = s3().await;
    for i in 0..3 {
        put(
            &s3c,
            &env.bucket,
            &format!("Patient-{i}.ndjson.gz"),
            gen::gzip(&gen::ndjson("Patient", 3000, i)),
        )
        .await;
    }
    let (_, r) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": format!("s3://{}", env.bucket), "thread-num": 1}),
    )
    .await;
    assert_eq!(r["result"]["queued"], json!(3));
    let loader = Loader::new(
        env.db.clone(),
        Arc::new(S3Source::new(s3c)),
        LoadOptions {
            batch_rows: 200,
            ..Default::default()
        },
    );
    let ids: Vec<String> = (0..3)
        .map(|i| {
            file_id(&ObjectLocation::new(
                &env.bucket,
                format!("Patient-{i}.ndjson.gz"),
            ))
        })
        .collect();
    let (a, b, c) = tokio::join!(
        loader.load(&ids[0], None),
        loader.load(&ids[1], None),
        loader.load(&ids[2], None)
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Done { .. }))
        .count();
    let throttled = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Throttled))
        .count();
    assert_eq!((done, throttled), (1, 2), "{outcomes:?}");
}

#[tokio::test]
async fn auth_401_403_200_and_secrets_never_returned() {
    let env = setup().await;
    let (s, body, headers) = call_as(&env, "GET", "/LoaderFile", None, None).await;
    assert_eq!(s, 401);
    assert!(body["message"].as_str().unwrap().contains("credentials"));
    assert_eq!(
        headers.get("www-authenticate").unwrap(),
        "Basic realm=\"siphon\""
    );
    let (s, _, _) = call_as(
        &env,
        "GET",
        "/LoaderFile",
        Some(&basic(&var("SIPHON_ADMIN_CLIENT_ID"), "wrong")),
        None,
    )
    .await;
    assert_eq!(s, 401);
    // The seed demo: a Client and its AccessPolicy, created with PUT /.
    let (s, created, _) = call_as(&env, "PUT", "/", Some(&admin()), Some(json!([
        {"resourceType": "Client", "id": "bulk-client", "secret": "secret", "grant_types": ["basic"]},
        {"resourceType": "Client", "id": "no-policy", "secret": "other"},
        {"resourceType": "AccessPolicy", "id": "bulk-client", "engine": "allow", "link": [{"id": "bulk-client", "resourceType": "Client"}]}
    ]))).await;
    assert_eq!(s, 200, "{created}");
    assert!(!created.to_string().contains("secret\""), "{created}");
    let (s, _, _) = call_as(
        &env,
        "GET",
        "/LoaderFile",
        Some(&basic("bulk-client", "secret")),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call_as(
        &env,
        "GET",
        "/LoaderFile",
        Some(&basic("bulk-client", "Secret")),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, body, _) = call_as(
        &env,
        "GET",
        "/LoaderFile",
        Some(&basic("no-policy", "other")),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("AccessPolicy"));
    let (s, client, _) = call_as(&env, "GET", "/Client/bulk-client", Some(&admin()), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        client,
        json!({"resourceType": "Client", "id": "bulk-client", "grant_types": ["basic"]})
    );
    let stored: String = siphon_tests::connect(&env.db)
        .await
        .query_one(
            "SELECT resource::text FROM client WHERE id = 'bulk-client'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.contains("$argon2id$") && !stored.contains("\"secret\""),
        "{stored}"
    );
}

#[tokio::test]
async fn yaml_in_and_out_and_clear_errors() {
    let env = setup().await;
    let req: Request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/rpc")
        .header("content-type", "text/yaml")
        .header("accept", "text/yaml")
        .header("authorization", admin())
        .body(Body::Text(format!(
            "method: aidbox.bulk/load-from-bucket\nparams:\n  bucket: s3://{}\n  thread-num: 4\n",
            env.bucket
        )))
        .unwrap();
    let resp = siphon_api::handle(&env.app, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/yaml");
    let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
    assert_eq!(
        text,
        "result:\n  message: Upload started\n  queued: 0\n  skipped: 0\n"
    );
    let (s, b) = rpc(&env, "aidbox.bulk/nope", json!({})).await;
    assert_eq!(
        (s, b["error"]["message"].as_str()),
        (400, Some("unknown method \"aidbox.bulk/nope\""))
    );
    let (s, b) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": "s3://siphon-no-such-bucket-x"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{b}"
    );
    let (s, b) = rpc(
        &env,
        "aidbox.bulk/load-from-bucket",
        json!({"bucket": "not-a-url"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // endpoint-url: https only, and never an internal address (loopback here, so even a
    // broken guard could not send traffic off this machine).
    for (endpoint, why) in [
        ("http://127.0.0.1:9/", "https"),
        ("https://127.0.0.1:9/", "loopback"),
        ("https://[::1]:9/", "loopback"),
    ] {
        let (s, b) = rpc(
            &env,
            "aidbox.bulk/load-from-bucket",
            json!({"bucket": format!("s3://{}", env.bucket), "endpoint-url": endpoint}),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(why),
            "{endpoint}: {b}"
        );
    }
    let malformed = |content_type: Option<&str>| {
        let mut req = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/rpc")
            .header("authorization", admin());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req: Request = req.body(Body::Text("{not json".into())).unwrap();
        siphon_api::handle(&env.app, req)
    };
    assert_eq!(malformed(Some("application/json")).await.status(), 400);
    // A body that does not say it is JSON or YAML is not read at all.
    assert_eq!(malformed(None).await.status(), 415);
    let (s, b, _) = call_as(
        &env,
        "GET",
        "/LoaderFile/nope/extra/path",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(s, 404, "{b}");
    let (s, _, _) = call_as(&env, "GET", "/pg_catalog", Some(&admin()), None).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn s3_events_of_both_shapes_queue_once_per_version() {
    let env = setup().await;
    let s3c = s3().await;
    let key = "my dir/Patient+1.ndjson.gz";
    put(
        &s3c,
        &env.bucket,
        key,
        gen::gzip(&gen::ndjson("Patient", 40, 1)),
    )
    .await;
    let head = s3c
        .head_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let etag = head.e_tag().unwrap().trim_matches('"').to_string();
    // An S3 event record as S3 sends it (every field aws_lambda_events requires).
    let s3_event = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
        "awsRegion": "us-east-1", "eventTime": "2026-11-23T06:00:00.000Z",
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "AWS:TEST"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"}, "responseElements": {},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": env.bucket},
               "object": {"key": "my+dir/Patient%2B1.ndjson.gz", "size": 100, "eTag": etag}}}]});
    siphon_s3_ingest::handle(&env.db, env.queue.as_ref(), None, s3_event.clone())
        .await
        .unwrap();
    // The same event through SQS, plus a test event: nothing new is queued.
    let wrapped = json!({"Records": [
        {"messageId": "1", "eventSource": "aws:sqs", "body": s3_event.to_string()},
        {"messageId": "2", "eventSource": "aws:sqs", "body": json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": env.bucket}).to_string()}
    ]});
    let out = siphon_s3_ingest::handle(&env.db, env.queue.as_ref(), None, wrapped)
        .await
        .unwrap();
    assert_eq!(out["batchItemFailures"], json!([]));
    drain(&env).await;
    assert_eq!(table_count(&env, "patient").await, 40);
    let id = file_id(&ObjectLocation::new(&env.bucket, key));
    let f = env.db.loader_file(&id).await.unwrap().unwrap();
    assert_eq!(
        (f.status, f.loaded, f.file.as_str()),
        (FileStatus::Done, 40, key)
    );
    // A new upload of the same key (new etag) loads the new content.
    put(
        &s3c,
        &env.bucket,
        key,
        gen::gzip(&gen::ndjson("Patient", 60, 2)),
    )
    .await;
    let etag2 = s3c
        .head_object()
        .bucket(&env.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .to_string();
    let mut ev2 = s3_event.clone();
    ev2["Records"][0]["s3"]["object"]["eTag"] = json!(etag2);
    siphon_s3_ingest::handle(&env.db, env.queue.as_ref(), None, ev2)
        .await
        .unwrap();
    drain(&env).await;
    let f = env.db.loader_file(&id).await.unwrap().unwrap();
    assert_eq!((f.status, f.loaded), (FileStatus::Done, 60));
    assert_eq!(table_count(&env, "patient").await, 60);
}

#[tokio::test]
async fn an_upload_to_the_sample_bucket_is_ingested_through_the_notification() {
    let env = setup().await;
    let s3c = s3().await;
    let key = format!("auto/{}/Condition.ndjson.gz", uuid::Uuid::new_v4().simple());
    put(
        &s3c,
        &var("SIPHON_BUCKET"),
        &key,
        gen::gzip(&gen::ndjson("Condition", 25, 3)),
    )
    .await;
    let events_url = var("SIPHON_EVENTS_QUEUE_URL");
    let id = file_id(&ObjectLocation::new(var("SIPHON_BUCKET"), &key));
    let start = Instant::now();
    let ingest = siphon_s3_ingest::Ingest {
        db: env.db.clone(),
        queue: env.queue.clone(),
        auto: None,
    };
    while env.db.loader_file(&id).await.unwrap().is_none()
        && start.elapsed() < Duration::from_secs(30)
    {
        siphon_local::poll_events_queue(&ingest, env.queue.client(), &events_url, 1).await;
    }
    drain(&env).await;
    let f = env
        .db
        .loader_file(&id)
        .await
        .unwrap()
        .expect("the notification created the LoaderFile");
    assert_eq!((f.status, f.loaded), (FileStatus::Done, 25));
}

fn load_message(
    env: &Env,
    key: &str,
    store: siphon::queue::StoreSpec,
) -> siphon::queue::LoadMessage {
    siphon::queue::LoadMessage {
        loader_file_id: file_id(&ObjectLocation::new(&env.bucket, key)),
        bucket: env.bucket.clone(),
        key: key.into(),
        etag: None,
        store,
    }
}

async fn pending_file(env: &Env, key: &str) {
    let f = siphon::model::loader_file::LoaderFile::pending(
        &ObjectLocation::new(&env.bucket, key),
        None,
        None,
        Default::default(),
    );
    env.db.create_loader_file(&f).await.unwrap();
}

#[tokio::test]
async fn near_the_deadline_the_worker_requeues_the_rest_and_the_next_message_finishes() {
    let mut env = setup().await;
    worker(&mut env).options = LoadOptions {
        batch_rows: 100,
        deadline_margin: Duration::ZERO,
        ..Default::default()
    };
    put(
        &s3().await,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 20_000, 4)),
    )
    .await;
    pending_file(&env, "Patient.ndjson.gz").await;
    let msg = load_message(&env, "Patient.ndjson.gz", Default::default());
    let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
    record.message_id = Some("m-1".into());
    record.body = Some(serde_json::to_string(&msg).unwrap());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let response = env.worker.handle(vec![record], now_ms + 200).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "the message is done with: the rest was re-queued"
    );
    let f = env
        .db
        .loader_file(&msg.loader_file_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.status, FileStatus::InProgress);
    assert!(
        f.loaded > 0 && f.loaded < 20_000,
        "stopped part-way: {}",
        f.loaded
    );
    drain(&env).await;
    let f = env
        .db
        .loader_file(&msg.loader_file_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (f.status, f.loaded, f.failed),
        (FileStatus::Done, 20_000, 0)
    );
    let created: i64 = siphon_tests::connect(&env.db)
        .await
        .query_one("SELECT count(*) FROM patient WHERE status = 'created'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 20_000);
}

#[tokio::test]
async fn a_message_that_keeps_failing_lands_in_the_dead_letter_queue_and_the_file_says_why() {
    // The store is a closed loopback port the allow-list names, so the guard lets the
    // worker try it (and fail for now) every time.
    let mut env = api_harness::setup_with(LoadOptions::default(), |e| {
        let allow = format!("{},127.0.0.1:9", siphon_tests::var("SIPHON_URL_ALLOWLIST"));
        e.with("SIPHON_URL_ALLOWLIST", &allow)
    })
    .await;
    let sqs = env.queue.client().clone();
    let dlq = siphon_tests::fresh_dead_letter_queue(&sqs, env.queue.url(), 2).await;
    worker(&mut env).max_receives = 2;
    worker(&mut env).options = LoadOptions {
        retries: 0,
        ..Default::default()
    };
    pending_file(&env, "Patient.ndjson.gz").await;
    // The store is unreachable (a closed loopback port): a transient failure every time.
    let store = siphon::queue::StoreSpec {
        endpoint_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let msg = load_message(&env, "Patient.ndjson.gz", store);
    siphon::queue::send(env.queue.as_ref(), std::slice::from_ref(&msg), None)
        .await
        .unwrap();
    let start = Instant::now();
    let mut in_dlq = 0;
    while in_dlq == 0 && start.elapsed() < Duration::from_secs(60) {
        siphon_local::poll_load_queue(&env.worker, &sqs, env.queue.url(), 10, 1).await;
        let got = sqs
            .receive_message()
            .queue_url(&dlq)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        in_dlq = got.messages.unwrap_or_default().len();
    }
    assert_eq!(
        in_dlq, 1,
        "the poison message reached the dead-letter queue"
    );
    let f = env
        .db
        .loader_file(&msg.loader_file_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.status, FileStatus::Error);
    assert!(
        f.error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 2 attempts"),
        "{:?}",
        f.error
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn account_credentials_never_reach_logs_postgres_or_responses() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = setup().await;
    put(
        &s3().await,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 10, 1)),
    )
    .await;
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let (status, body) = rpc(&env, "aidbox.bulk/load-from-bucket", json!({
        "bucket": format!("s3://{}", env.bucket), "endpoint-url": var("AWS_ENDPOINT_URL"),
        "account": {"access-key-id": "AKIDEXAMPLE", "secret-access-key": secret, "region": "us-east-1"}})).await;
    assert_eq!(status, 200, "{body}");
    drain(&env).await;
    assert_eq!(
        table_count(&env, "patient").await,
        10,
        "loaded with the given account"
    );
    assert!(!body.to_string().contains(secret));
    let (_, files, _) = call_as(&env, "GET", "/LoaderFile", Some(&admin()), None).await;
    assert!(!files.to_string().contains(secret));
    let stored: Vec<String> = siphon_tests::connect(&env.db)
        .await
        .query("SELECT resource::text FROM loaderfile", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !stored.is_empty() && stored.iter().all(|s| !s.contains(secret)),
        "{stored:?}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("load-from-bucket"),
        "logs were captured: {logs}"
    );
    assert!(!logs.contains(secret), "a secret reached the logs");
    assert!(!logs.contains(&var("SIPHON_ADMIN_CLIENT_SECRET")));
}
