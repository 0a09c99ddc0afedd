//! No path around the boundary: every class of hostile input an ordinary client can
//! send, tried against the API and the workers it reaches (real Postgres, LocalStack,
//! servers on 127.0.0.1 only; names resolve through a table, never DNS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsMessage;
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;
use siphon::model::{LoaderFile, ObjectLocation};
use siphon_tests::{gen, put};

mod api_harness;

use api_harness::*;

async fn raw(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = lambda_http::http::Request::builder()
        .method(method)
        .uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req: Request = req
        .body(if body.is_empty() {
            Body::Empty
        } else {
            Body::Binary(body.to_vec())
        })
        .unwrap();
    let resp = siphon_api::handle(&env.app, req).await;
    let status = resp.status().as_u16();
    let text = String::from_utf8_lossy(resp.body().as_ref()).to_string();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn setup() -> Env {
    api_harness::setup(LoadOptions::default()).await
}

async fn clients(env: &Env) {
    let (s, b, _) = call(
        env,
        "PUT",
        "/",
        Some(json!([
            {"resourceType": "Client", "id": "bulk-client", "secret": "secret"},
            {"resourceType": "AccessPolicy", "id": "bulk-client", "engine": "allow",
             "link": [{"id": "bulk-client", "resourceType": "Client"}]},
        ])),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn secrets_and_their_hashes_never_leave_by_any_path() {
    let env = setup().await;
    clients(&env).await;
    let user = basic("bulk-client", "secret");
    let stored: String = siphon_tests::connect(&env.db)
        .await
        .query_one(
            "SELECT resource->>'secretHash' FROM client WHERE id = 'bulk-client'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$argon2id$"));
    let leaked = |v: &Value| {
        let t = v.to_string();
        t.contains("argon2") || t.contains("secretHash")
    };
    // Reads and lists: the admin gets Clients without hashes, clients get 403.
    for path in ["/Client", "/Client/bulk-client"] {
        let (s, b, _) = call(&env, "GET", path, None).await;
        assert_eq!(s, 200);
        assert!(!leaked(&b), "{path}: {b}");
        let (s, b, _) = call_as(&env, "GET", path, Some(&user), None).await;
        assert_eq!(s, 403, "{b}");
    }
    // A filter on the hash is no oracle.
    let q = format!("/Client?secretHash={}", urlencode(&stored));
    assert_eq!(call(&env, "GET", &q, None).await.0, 400);
    // Dumps, exports, SQL: the Client table is not there for anyone.
    let dump = siphon_dump::App::new(
        &siphon_dump::Config::from_env(&siphon_tests::config_env()).unwrap(),
        env.db.clone(),
    );
    for (who, auth) in [("admin", admin()), ("client", user.clone())] {
        for (method, path, body) in [
            ("GET", "/Client/$dump", ""),
            ("GET", "/CLIENT/$dump", ""),
            (
                "POST",
                "/$dump-sql",
                r#"{"query": "select resource from client"}"#,
            ),
            (
                "POST",
                "/$dump-sql",
                r#"{"query": "select * from public.\"client\""}"#,
            ),
            (
                "POST",
                "/$dump-sql",
                r#"{"query": "select resource from accesspolicy"}"#,
            ),
            (
                "POST",
                "/$dump-sql",
                r#"{"query": "select resource from loaderfile"}"#,
            ),
        ] {
            let req: Request = lambda_http::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::Text(body.to_string()))
                .unwrap();
            let resp = siphon_dump::handle(&dump, req).await;
            let status = resp.status().as_u16();
            assert!(
                status == 404 || status == 403 || status == 400,
                "{who} {method} {path} {body}: {status}"
            );
        }
    }
    let bucket = format!("s3://{}/out/", env.bucket);
    for types in [
        json!(["Client"]),
        json!(["AccessPolicy"]),
        json!(["LoaderFile"]),
    ] {
        let (s, b, _) = call(
            &env,
            "POST",
            "/rpc",
            Some(json!({"method": "aidbox.bulk/dump-to-bucket", "params": {"bucket": bucket, "types": types}})),
        )
        .await;
        assert_eq!(s, 404, "{types}: {b}");
    }
    // An export of everything as the admin carries no Client either.
    let (s, r, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/dump-to-bucket", "params": {"bucket": bucket}})),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    drain_exports(&env).await;
    let objects = env
        .s3
        .list_objects_v2()
        .bucket(&env.bucket)
        .prefix("out/")
        .send()
        .await
        .unwrap();
    for o in objects.contents() {
        let key = o.key().unwrap();
        assert!(!key.to_ascii_lowercase().contains("client"), "{key}");
        let body = env
            .s3
            .get_object()
            .bucket(&env.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = body.body.collect().await.unwrap().into_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("argon2"), "{key}");
    }
    let (s, b, _) = call_with(
        &env,
        "GET",
        "/$export?_type=Client",
        Some(&admin()),
        FHIR_KICK_OFF,
        None,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let why = b["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(why.contains("_type \"Client\""), "{b}");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn fields_only_siphon_sets_cannot_be_written() {
    let env = setup().await;
    clients(&env).await;
    let user = basic("bulk-client", "secret");
    for (who, auth) in [("admin", admin()), ("client", user.clone())] {
        for body in [
            json!([{"resourceType": "LoaderFile", "id": "f1", "file": "k", "bucket": "b", "status": "in-progress",
                    "lease": {"owner": "x", "until": "garbage"}, "store": {"endpoint_url": "http://169.254.169.254"}}]),
            json!([{"resourceType": "Client", "id": "evil", "secretHash": "$argon2id$v=19$m=4194304,t=100,p=1$c2FsdA$aGFzaA"}]),
            json!([{"resourceType": "CLIENT", "id": "evil", "secret": "x"}]),
            json!([{"resourceType": "Loaderfile", "id": "f2", "file": "k", "bucket": "b", "status": "pending"}]),
        ] {
            let (s, b, _) = call_as(&env, "PUT", "/", Some(&auth), Some(body.clone())).await;
            assert!(s == 400 || s == 403, "{who} {body}: {s} {b}");
        }
    }
    assert_eq!(count(&env.db, "loaderfile").await, 0);
    let c = siphon_tests::connect(&env.db).await;
    let clients: i64 = c
        .query_one("SELECT count(*) FROM client", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(clients, 1, "only bulk-client");
    // A hash written behind siphon's back with costs siphon would never use is refused
    // without being run (a 4 GiB Argon2 would take the process down).
    c.execute(
        "UPDATE client SET resource = jsonb_set(resource, '{secretHash}',
           to_jsonb('$argon2id$v=19$m=4194304,t=100,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'::text))
         WHERE id = 'bulk-client'",
        &[],
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (s, _, _) = call_as(&env, "GET", "/$me", Some(&user), None).await;
    assert_eq!(s, 401);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Lines of system types in a file are line errors, never rows, even for the admin.
    let s3 = siphon_tests::s3().await;
    let lines = "{\"resourceType\":\"Client\",\"id\":\"c9\",\"secretHash\":\"x\"}\n{\"resourceType\":\"AccessPolicy\",\"id\":\"p9\",\"engine\":\"allow\"}\n{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n";
    put(
        &s3,
        &env.bucket,
        "mixed.ndjson.gz",
        gen::gzip(lines.as_bytes()),
    )
    .await;
    let (s, b, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": {"bucket": format!("s3://{}", env.bucket)}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    drain(&env.worker, &env.queue).await;
    let f: (i64, i64) = {
        let r = c
            .query_one("SELECT (resource->>'loaded')::bigint, (resource->>'failed')::bigint FROM loaderfile", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(f, (1, 2));
    let clients: i64 = c
        .query_one("SELECT count(*) FROM client", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(clients, 1);
}

#[tokio::test]
async fn caller_sql_runs_on_a_read_only_login_it_cannot_leave() {
    let env = setup().await;
    clients(&env).await;
    let (s, _, _) = call(
        &env,
        "PUT",
        "/",
        Some(json!([{"resourceType": "Patient", "id": "p1"}])),
    )
    .await;
    assert_eq!(s, 200);
    let file = LoaderFile::pending(
        &ObjectLocation::new("b", "Patient.ndjson.gz"),
        None,
        None,
        Default::default(),
    );
    env.db.create_loader_files(&[file]).await.unwrap();
    use futures::StreamExt;
    use siphon::storage::read::CopyFormat;
    // Straight to the database, past siphon's own query check: the role alone must hold.
    let run = |q: &'static str| {
        let db = env.db.clone();
        async move {
            match db.copy_query(q, CopyFormat::Text, 5_000).await {
                Err(e) => Err(e.to_string()),
                Ok(mut stream) => {
                    let mut out = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        match chunk {
                            Ok(b) => out.extend_from_slice(&b),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(String::from_utf8_lossy(&out).to_string())
                }
            }
        }
    };
    assert_eq!(
        run("select current_user").await.unwrap().trim(),
        "siphon_reader"
    );
    assert_eq!(run("select id from patient").await.unwrap().trim(), "p1");
    for (family, q) in [
        ("string-built SQL", "select query_to_xml('select set_config(''role'', ''siphon'', false)', true, false, '')"),
        ("string-built SQL", "select query_to_xml('insert into patient (id, txid, status, resource) values (''x'', 1, ''created'', ''{}'')', true, false, '')"),
        ("string-built SQL", "select ts_stat('select to_tsvector(resource::text) from client')"),
        ("cursor helpers", "select cursor_to_xml('c', 1, true, false, '')"),
        ("XML helpers", "select table_to_xml('client', true, false, '')"),
        ("XML helpers", "select schema_to_xml('public', true, false, '')"),
        ("settings", "select set_config('statement_timeout', '0', false)"),
        ("settings", "select set_config('role', 'siphon', true)"),
        ("large objects", "select lo_from_bytea(0, 'x')"),
        ("large objects", "select lo_import('/etc/passwd')"),
        ("files", "select pg_read_file('/etc/passwd')"),
        ("files", "select pg_ls_dir('.')"),
        ("locks", "select pg_advisory_lock(1)"),
        ("server", "select pg_sleep(0.01)"),
        ("server", "select pg_terminate_backend(pg_backend_pid())"),
        ("server", "select pg_notify('x', 'y')"),
        ("siphon's tables", "select resource from client"),
        ("siphon's tables", "select * from loaderfile"),
        ("siphon's tables", "select * from siphon_import"),
        ("siphon's tables", "select * from siphon_jti"),
        ("writes", "insert into patient (id, txid, status, resource) values ('y', 1, 'created', '{}') returning id"),
        ("writes", "update patient set resource = '{}' returning id"),
    ] {
        let r = run(q).await;
        let e = r.expect_err(&format!("{family}: {q} ran"));
        assert!(
            e.contains("permission denied") || e.contains("not allowed") || e.contains("read-only"),
            "{family}: {q}: {e}"
        );
    }
}

/// A minimal table resolver: every name maps to the addresses given.
struct Table(Vec<std::net::IpAddr>);

impl siphon::sources::http::Resolve for Table {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<std::net::IpAddr>>> {
        let ips = self.0.clone();
        Box::pin(async move { Ok(ips) })
    }
}

#[tokio::test]
async fn every_connection_of_the_aws_clients_goes_through_the_guard() {
    siphon_tests::use_local_aws();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let policy = siphon::sources::http::UrlPolicy::allowing(&["127.0.0.1:4566"]);
    // A name that resolves (here: through the table) to a loopback port nobody allowed.
    let connection = siphon::sources::aws::Connection {
        endpoint_url: Some(format!("https://rebinding.test:{port}")),
        region: Some("us-east-1".into()),
        credentials: Some(("test".into(), "test".into())),
    };
    let to_loopback = Arc::new(Table(vec!["127.0.0.1".parse().unwrap()]));
    let refused = siphon::sources::aws::sdk_config_with(&connection, &policy, to_loopback.clone())
        .await
        .expect_err("the endpoint is checked before anything is built");
    assert!(refused.to_string().contains("loopback"), "{refused}");
    // Allowed when built (the name resolved to a public address then), refused when it
    // connects (it resolves to loopback now): DNS rebinding.
    struct Flip(std::sync::atomic::AtomicUsize);
    impl siphon::sources::http::Resolve for Flip {
        fn resolve<'a>(
            &'a self,
            _host: &'a str,
            _port: u16,
        ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<std::net::IpAddr>>> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ip = if n == 0 { "93.184.215.14" } else { "127.0.0.1" };
            Box::pin(async move { Ok(vec![ip.parse().unwrap()]) })
        }
    }
    let flip = Arc::new(Flip(std::sync::atomic::AtomicUsize::new(0)));
    let conf = siphon::sources::aws::sdk_config_with(&connection, &policy, flip)
        .await
        .expect("a public address passes when the client is built");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    );
    let e = s3
        .list_buckets()
        .send()
        .await
        .expect_err("the connection is refused");
    let shown = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e));
    assert!(
        shown.contains("DNS") || shown.contains("dns") || shown.contains("refused"),
        "{shown}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused address was connected to"
    );
}

#[tokio::test]
async fn workers_refuse_stores_they_are_handed_whatever_carried_them() {
    let env = setup().await;
    // A LoaderFile and a message naming a store at the metadata address: the worker
    // checks it itself and ends the file, however the message got on the queue.
    for (n, endpoint) in [
        "http://169.254.169.254",
        "http://10.1.2.3:9000",
        "https://127.0.0.1:4567",
    ]
    .iter()
    .enumerate()
    {
        let location = ObjectLocation::new("b", format!("k{n}/Patient.ndjson.gz"));
        let mut file = LoaderFile::pending(&location, None, None, Default::default());
        file.store.endpoint_url = Some(endpoint.to_string());
        env.db
            .create_loader_files(std::slice::from_ref(&file))
            .await
            .unwrap();
        let message = json!({"loader_file_id": file.id, "bucket": "b", "key": file.file,
            "store": {"endpoint_url": endpoint, "access_key_id": "AKIA", "secret_access_key": "s"}});
        let mut record = SqsMessage::default();
        record.message_id = Some(format!("m{n}"));
        record.body = Some(message.to_string());
        let deadline = chrono::Utc::now().timestamp_millis() as u64 + 60_000;
        let out = env.worker.handle(vec![record], deadline).await;
        assert!(
            out.batch_item_failures.is_empty(),
            "{endpoint}: the message is done with"
        );
        let stored = env.db.loader_file(&file.id).await.unwrap().unwrap();
        assert_eq!(
            stored.status,
            siphon::model::FileStatus::Error,
            "{endpoint}"
        );
        let why = stored.error.unwrap();
        assert!(
            why.contains("refused") || why.contains("not allowed"),
            "{endpoint}: {why}"
        );
        assert!(!why.contains("AKIA"), "no credential in the error");
    }
}

#[tokio::test]
async fn one_damaged_row_stops_neither_the_sweep_nor_a_list() {
    let env = setup().await;
    let c = siphon_tests::connect(&env.db).await;
    // A real stalled file (its worker died), beside damaged ones.
    let location = ObjectLocation::new(&env.bucket, "Patient.ndjson.gz");
    let file = LoaderFile::pending(&location, None, None, Default::default());
    env.db
        .create_loader_files(std::slice::from_ref(&file))
        .await
        .unwrap();
    c.execute(
        "UPDATE loaderfile SET resource = resource || jsonb_build_object('status', 'in-progress',
            'lease', jsonb_build_object('owner', 'dead', 'until', '2020-01-01T00:00:00Z'))
         WHERE id = $1",
        &[&file.id],
    )
    .await
    .unwrap();
    for (id, doc) in [
        (
            "bad-until",
            json!({"file": "x", "bucket": "b", "status": "in-progress", "lease": {"owner": "o", "until": "not a time"}}),
        ),
        (
            "bad-counts",
            json!({"file": "y", "bucket": "b", "status": "in-progress", "loaded": "many", "lease": {"owner": "o", "until": "2020-01-01T00:00:00Z"}}),
        ),
        (
            "bad-recovery",
            json!({"file": "z", "bucket": "b", "status": "in-progress", "recovery": {"at": 7}, "lease": {"owner": "o", "until": "2020-01-01T00:00:00Z"}}),
        ),
        ("not-an-object", json!(["in-progress"])),
    ] {
        c.execute(
            "INSERT INTO loaderfile (id, txid, status, resource) VALUES ($1, nextval('transaction_id_seq'), 'created', $2)",
            &[&id, &doc],
        )
        .await
        .unwrap();
    }
    let sweeper =
        siphon::sweep::Sweeper::new(env.db.clone(), env.queue.clone(), Default::default());
    let report = sweeper
        .pass()
        .await
        .expect("the pass goes on past damaged rows");
    assert_eq!(report.requeued + report.redelivered, 1, "{report:?}");
    let (s, list, _) = call(&env, "GET", "/LoaderFile", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["entry"].as_array().unwrap().len(), 5);
    let (s, status, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket-status"})),
    )
    .await;
    assert_eq!(s, 200, "{status}");
    // A damaged session is left out of the list, not the others.
    c.execute(
        "INSERT INTO siphon_import (id, status, request) VALUES ('broken', 'active', '7'::jsonb)",
        &[],
    )
    .await
    .unwrap();
    let (s, list, _) = call(&env, "GET", "/$import", None).await;
    assert_eq!(s, 200, "{list}");
}

#[tokio::test]
async fn bodies_nesting_and_yaml_aliases_are_bounded() {
    let env = setup().await;
    let yaml = [
        ("content-type", "text/yaml"),
        ("authorization", &admin()[..]),
    ];
    // 2 MiB: over the 1 MiB default.
    let big = format!(
        "{{\"method\": \"x\", \"pad\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    let json_h = [
        ("content-type", "application/json"),
        ("authorization", &admin()[..]),
    ];
    let (s, b) = raw(&env, "POST", "/rpc", &json_h, big.as_bytes()).await;
    assert_eq!(s, 413, "{b}");
    // Deep nesting.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (s, _) = raw(&env, "PUT", "/", &json_h, deep.as_bytes()).await;
    assert_eq!(s, 400);
    let (s, _) = raw(&env, "PUT", "/", &yaml, "[".repeat(100_000).as_bytes()).await;
    assert_eq!(s, 400);
    // A billion laughs in 1 KiB.
    let mut doc = String::from("method: aidbox.bulk/load-from-bucket-status\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let mut prev = 'a';
    for name in "bcdefghij".chars() {
        doc.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        prev = name;
    }
    let started = Instant::now();
    let (s, b) = raw(&env, "POST", "/rpc", &yaml, doc.as_bytes()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("expands"), "{b}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_gzip_bomb_ends_its_file_in_error_naming_the_ratio() {
    let env = setup().await;
    let s3 = siphon_tests::s3().await;
    // 256 MiB of blank lines in about 250 KiB: a thousand times.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..256 {
        std::io::Write::write_all(&mut gz, &chunk).unwrap();
    }
    let bomb = gz.finish().unwrap();
    put(&s3, &env.bucket, "Patient.ndjson.gz", bomb).await;
    let (s, b, _) = call(
        &env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/load-from-bucket", "params": {"bucket": format!("s3://{}", env.bucket)}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    drain(&env.worker, &env.queue).await;
    let (_, list, _) = call(&env, "GET", "/LoaderFile", None).await;
    let f = &list["entry"][0]["resource"];
    assert_eq!(f["status"], "error", "{f}");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("inflates to more than 100 times"),
        "{f}"
    );
}

#[tokio::test]
async fn posts_a_web_page_can_send_cross_site_start_nothing() {
    let env = setup().await;
    let body = json!({"method": "aidbox.bulk/load-from-bucket", "params": {"bucket": format!("s3://{}", env.bucket)}}).to_string();
    let auth = admin();
    for ct in [
        None,
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let (s, b) = raw(&env, "POST", "/rpc", &h, body.as_bytes()).await;
        assert_eq!(s, 415, "{ct:?}: {b}");
        let (s, _) = raw(
            &env,
            "PUT",
            "/",
            &h,
            b"[{\"resourceType\":\"Patient\",\"id\":\"x\"}]",
        )
        .await;
        assert_eq!(s, 415, "{ct:?}");
        let (s, _) = raw(&env, "POST", "/$dead-letters/x/$retry", &h, b"").await;
        assert_eq!(s, 415, "{ct:?}");
    }
    assert_eq!(count(&env.db, "loaderfile").await, 0);
    assert_eq!(count(&env.db, "patient").await, 0);
    // The kinds the API takes.
    for ct in [
        "application/json",
        "application/fhir+json",
        "text/yaml",
        "application/json; charset=utf-8",
    ] {
        let body = if ct.contains("yaml") {
            "method: aidbox.bulk/load-from-bucket-status\n".to_string()
        } else {
            json!({"method": "aidbox.bulk/load-from-bucket-status"}).to_string()
        };
        let (s, b) = raw(
            &env,
            "POST",
            "/rpc",
            &[("authorization", &auth), ("content-type", ct)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(s, 200, "{ct}: {b}");
    }
}

#[tokio::test]
async fn session_secrets_are_guessed_under_the_same_budget() {
    let env = setup().await;
    let s3 = siphon_tests::s3().await;
    put(
        &s3,
        &env.bucket,
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 5, 1)),
    )
    .await;
    let (s, b, _) = call(
        &env,
        "POST",
        "/$import",
        Some(
            json!({"resource": {"id": "s1", "secret": "right", "inputs": [
            {"type": "Patient", "url": format!("s3://{}/Patient.ndjson.gz", env.bucket)}]}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let mut statuses = Vec::new();
    for n in 0..12 {
        let (s, _, _) = call(
            &env,
            "POST",
            "/$import",
            Some(json!({"resource": {"id": "s1", "action": "pause", "secret": format!("guess-{n}")}})),
        )
        .await;
        statuses.push(s);
    }
    assert!(statuses[..10].iter().all(|s| *s == 403), "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
}
