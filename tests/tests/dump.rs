//! Dumps against a real Postgres: the seed's 100,000-patient demo byte for byte,
//! `_since`, gzip, auth, the `$dump-sql` formats with hostile values and its refusal list,
//! and a stream cut by a database failure.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use lambda_http::{Body, Request};
use serde_json::{json, Value};
use siphon::loading::{LoadOptions, Loader};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::sources::memory::MemorySource;
use siphon::sources::ObjectLocation;
use siphon::storage::Db;
use siphon::ResourceType;
use siphon_tests::{connect, corpus, fresh_db, gen, var};

fn admin() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            var("SIPHON_ADMIN_CLIENT_ID"),
            var("SIPHON_ADMIN_CLIENT_SECRET")
        ))
    )
}

async fn app() -> (Db, siphon_dump::App) {
    for k in ["SIPHON_ADMIN_CLIENT_ID", "SIPHON_ADMIN_CLIENT_SECRET"] {
        unsafe { std::env::set_var(k, var(k)) };
    }
    let db = fresh_db().await;
    let config = siphon_dump::Config::from_env(&siphon_tests::config_env()).unwrap();
    let mut app = siphon_dump::App::new(&config, db.clone());
    app.sql_timeout_ms = 1000;
    (db, app)
}

/// Sends a request; returns status, content type, and the body (or the error that cut it).
async fn send(
    app: &siphon_dump::App,
    method: &str,
    uri: &str,
    auth: Option<String>,
    body: Option<Value>,
) -> (u16, String, Result<Vec<u8>, String>) {
    let mut req = lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req: Request = req
        .body(
            body.map(|b| Body::Text(b.to_string()))
                .unwrap_or(Body::Empty),
        )
        .unwrap();
    let resp = siphon_dump::handle(app, req).await;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => out.extend_from_slice(&f.into_data().unwrap_or_default()),
            Err(e) => return (status, ct, Err(e.to_string())),
        }
    }
    (status, ct, Ok(out))
}

async fn expected_lines(db: &Db, table: &str) -> Vec<String> {
    let mut lines: Vec<String> = connect(db)
        .await
        .query(&format!("SELECT (resource || jsonb_build_object('resourceType', resource_type, 'id', id))::text FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.sort();
    lines
}

fn sorted_lines(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with('\n') || text.is_empty());
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn the_seed_demo_100k_hand_inserted_patients_dump_exactly() {
    let (db, app) = app().await;
    db.upsert(&ResourceType::parse("Patient").unwrap(), "seed", &json!({}))
        .await
        .unwrap();
    let c = connect(&db).await;
    c.batch_execute(
        "DELETE FROM patient; INSERT INTO patient (id,txid, status, resource)
        SELECT g.id, g.id, 'created', '{\"name\": [{\"family\": \"John\"}]}'
        FROM generate_series(1, 100000) AS g (id);",
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let (status, ct, body) = send(&app, "GET", "/Patient/$dump", Some(admin()), None).await;
    println!(
        "dumped 100,000 patients in {:.3}s (debug build)",
        start.elapsed().as_secs_f64()
    );
    assert_eq!((status, ct.as_str()), (200, "application/ndjson"));
    let body = body.unwrap();
    let lines = sorted_lines(&body);
    assert_eq!(lines.len(), 100_000);
    assert_eq!(
        lines,
        expected_lines(&db, "patient").await,
        "byte for byte what the table holds"
    );
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        first,
        json!({"id": "1", "name": [{"family": "John"}], "resourceType": "Patient"})
    );
}

#[tokio::test]
async fn loaded_resources_with_hostile_escapes_dump_as_stored_and_gzip_and_since_work() {
    let (db, app) = app().await;
    let source = MemorySource::new();
    let loc = ObjectLocation::new("mem", "Patient.ndjson.gz");
    let mut body = corpus::escaping_traps().join("\n").into_bytes();
    body.push(b'\n');
    body.extend(gen::ndjson("Patient", 500, 9));
    source.put(loc.clone(), gen::gzip(&body));
    let file = LoaderFile::pending(&loc, None, None, FileOptions::default());
    db.create_loader_file(&file).await.unwrap();
    Loader::new(db.clone(), Arc::new(source), LoadOptions::default())
        .load(&file.id, None)
        .await
        .unwrap();
    let (status, _, plain) = send(&app, "GET", "/Patient/$dump", Some(admin()), None).await;
    assert_eq!(status, 200);
    let plain = plain.unwrap();
    assert_eq!(sorted_lines(&plain), expected_lines(&db, "patient").await);
    for trap in corpus::escaping_traps() {
        let want: Value = serde_json::from_str(trap).unwrap();
        assert!(
            plain
                .split(|&b| b == b'\n')
                .any(|l| serde_json::from_slice::<Value>(l).ok().as_ref() == Some(&want)),
            "{trap}"
        );
    }
    // gzip=true: the same bytes, gzip-encoded.
    let (status, _, gz) = send(&app, "GET", "/Patient/$dump?gzip=true", Some(admin()), None).await;
    assert_eq!(status, 200);
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz.unwrap()[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    // _since: only rows changed after the instant.
    let c = connect(&db).await;
    c.batch_execute("UPDATE patient SET ts = '2020-01-01T00:00:00Z'; UPDATE patient SET ts = '2025-06-01T00:00:00Z' WHERE id IN ('esc-1', 'esc-2')").await.unwrap();
    let (status, _, since) = send(
        &app,
        "GET",
        "/Patient/$dump?_since=2025-01-01T00:00:00Z",
        Some(admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<String> = sorted_lines(&since.unwrap())
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["esc-1", "esc-2"]);
    let (status, _, err) = send(
        &app,
        "GET",
        "/Patient/$dump?_since=yesterday",
        Some(admin()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{err:?}");
}

#[tokio::test]
async fn dump_errors_and_auth() {
    let (db, app) = app().await;
    db.upsert(&ResourceType::parse("Patient").unwrap(), "p", &json!({}))
        .await
        .unwrap();
    assert_eq!(send(&app, "GET", "/Patient/$dump", None, None).await.0, 401);
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:nope")
    );
    assert_eq!(
        send(&app, "GET", "/Patient/$dump", Some(wrong), None)
            .await
            .0,
        401
    );
    let (s, _, body) = send(&app, "GET", "/Medication/$dump", Some(admin()), None).await;
    assert_eq!(s, 404, "{body:?}");
    assert_eq!(
        send(&app, "GET", "/pg_catalog/$dump", Some(admin()), None)
            .await
            .0,
        400
    );
    assert_eq!(
        send(&app, "GET", "/Patient/$nothing", Some(admin()), None)
            .await
            .0,
        404
    );
}

async fn hostile_table(db: &Db) {
    db.upsert(&ResourceType::parse("Patient").unwrap(), "seed", &json!({}))
        .await
        .unwrap();
    connect(db).await.batch_execute(
        "CREATE TABLE hostile (id int, v text);
         INSERT INTO hostile VALUES (1, E'tab\\there'), (2, E'new\\nline'), (3, 'quote \" and ''single'''),
           (4, E'back\\\\slash \\\\N'), (5, 'unicode é 中 😀'), (6, NULL), (7, E'cr\\rlf'), (8, ',comma,');
         GRANT SELECT ON hostile TO siphon_reader;").await.unwrap();
}

#[tokio::test]
async fn dump_sql_formats_round_trip_hostile_values() {
    let (db, app) = app().await;
    hostile_table(&db).await;
    let c = connect(&db).await;
    c.batch_execute(
        "CREATE TABLE back_tsv (id int, v text); CREATE TABLE back_csv (id int, v text);",
    )
    .await
    .unwrap();
    let query = json!({"query": "select id, v from hostile order by id"});
    let (s, ct, tsv) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(query.clone()),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "text/tab-separated-values"));
    let tsv = tsv.unwrap();
    assert!(
        tsv.starts_with(b"1\ttab\\there\n"),
        "{}",
        String::from_utf8_lossy(&tsv)
    );
    let (s, ct, csv) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": query["query"], "format": "csv"})),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "text/csv"));
    let csv = csv.unwrap();
    assert!(csv.starts_with(b"id,v\n"));
    // Loading each output back gives the same values.
    for (table, data, opts) in [
        ("back_tsv", tsv, ""),
        ("back_csv", csv, " (FORMAT csv, HEADER true)"),
    ] {
        let sink = c
            .copy_in::<_, Bytes>(&format!("COPY {table} FROM STDIN{opts}"))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        futures::SinkExt::send(&mut sink, Bytes::from(data))
            .await
            .unwrap();
        sink.finish().await.unwrap();
        let same: bool = c.query_one(&format!("SELECT (SELECT array_agg((id, v) ORDER BY id) FROM hostile) IS NOT DISTINCT FROM (SELECT array_agg((id, v) ORDER BY id) FROM {table})"), &[]).await.unwrap().get(0);
        assert!(same, "{table} round-trips");
    }
    let (s, ct, nd) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": query["query"], "format": "ndjson"})),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "application/ndjson"));
    let nd = nd.unwrap();
    // JSON Lines: the same lines under their own media type.
    let (s, ct, jsonl) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": query["query"], "format": "jsonl"})),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "application/jsonl"));
    assert_eq!(jsonl.unwrap(), nd);
    let rows: Vec<Value> = std::str::from_utf8(&nd)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0], json!({"id": 1, "v": "tab\there"}));
    assert_eq!(rows[3], json!({"id": 4, "v": "back\\slash \\N"}));
    assert_eq!(rows[4], json!({"id": 5, "v": "unicode é 中 😀"}));
    assert_eq!(rows[5], json!({"id": 6, "v": null}));
    // The seed's BigQuery example: id, ts and a path into the resource.
    let (s, _, out) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": "select id, ts, resource#>>'{name,0,family}' from patient"})),
    )
    .await;
    assert_eq!(s, 200, "{out:?}");
    assert_eq!(out.unwrap().iter().filter(|&&b| b == b'\t').count(), 2);
}

/// The `sql` script, run by `psql` (a client nobody here wrote) into an equal table,
/// and the `elastic-bulk` actions, parsed as `_bulk` reads them: an action line naming
/// `_index` and `_id`, then the document.
#[tokio::test]
async fn dump_sql_writes_insert_scripts_psql_runs_back_and_bulk_actions() {
    let (db, app) = app().await;
    hostile_table(&db).await;
    let c = connect(&db).await;
    c.batch_execute(
        "CREATE TABLE typed (id text, n bigint, num numeric, ok boolean, at timestamptz, doc jsonb, v text);
         INSERT INTO typed SELECT 'r' || h.id, h.id * 1000000000000, 12345678901234567890.123456789 * h.id,
             h.id % 2 = 0, timestamptz '2024-02-29 23:59:59.123456+00' + h.id * interval '1 day',
             jsonb_build_object('v', h.v, 'n', h.id), h.v FROM hostile h;
         INSERT INTO typed VALUES ('nulls', NULL, NULL, NULL, NULL, NULL, NULL);
         GRANT SELECT ON typed TO siphon_reader;
         CREATE TABLE typed_back (LIKE typed);",
    )
    .await
    .unwrap();
    let query = "select * from typed order by id";
    let (s, ct, script) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": query, "format": "sql", "table": "typed_back"})),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "application/sql"));
    let script = script.unwrap();
    let text = String::from_utf8(script.clone()).unwrap();
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(text.lines().all(|l| l.starts_with("INSERT INTO \"typed_back\" (\"id\", \"n\", \"num\", \"ok\", \"at\", \"doc\", \"v\") VALUES (")));
    let file = std::env::temp_dir().join(format!("siphon-script-{}.sql", uuid::Uuid::new_v4()));
    std::fs::write(&file, &script).unwrap();
    let out = std::process::Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-X", "-f"])
        .arg(&file)
        .arg(siphon_tests::fresh_db_url_of(&db))
        .output()
        .expect("psql runs");
    std::fs::remove_file(&file).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same: bool = c
        .query_one(
            "SELECT (SELECT array_agg(t ORDER BY id) FROM typed t)::text
                 = (SELECT array_agg(t ORDER BY id) FROM typed_back t)::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "psql ran the script into an equal table");

    let (s, ct, bulk) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": query, "format": "elastic-bulk", "table": "typed-index"})),
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "application/x-ndjson"));
    let bulk = String::from_utf8(bulk.unwrap()).unwrap();
    assert!(bulk.ends_with('\n'), "_bulk bodies end with a newline");
    let lines: Vec<Value> = bulk
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 18);
    let expected: Vec<Value> = c
        .query("SELECT row_to_json(t)::text FROM typed t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect();
    for (pair, row) in lines.chunks(2).zip(&expected) {
        assert_eq!(
            pair[0],
            json!({"index": {"_index": "typed-index", "_id": row["id"]}})
        );
        assert_eq!(&pair[1], row);
    }
    // Refusals: no table for sql, a table name that is not a name, no id column.
    for (params, status, words) in [
        (
            json!({"query": query, "format": "sql"}),
            400,
            "needs `table`",
        ),
        (
            json!({"query": query, "format": "sql", "table": "x; drop table typed"}),
            400,
            "not a plain name",
        ),
        (
            json!({"query": "select v from typed", "format": "elastic-bulk"}),
            400,
            "`id` column",
        ),
        (
            json!({"query": query, "format": "xml"}),
            400,
            "unknown format",
        ),
    ] {
        let (s, _, body) = send(&app, "POST", "/$dump-sql", Some(admin()), Some(params)).await;
        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
        assert_eq!(s, status, "{body}");
        assert!(body.contains(words), "{words}: {body}");
    }
}

#[tokio::test]
async fn dump_sql_refuses_what_is_not_a_read() {
    let (db, app) = app().await;
    hostile_table(&db).await;
    db.upsert(
        &ResourceType::parse("Client").unwrap(),
        "c",
        &siphon::auth::protect(
            &ResourceType::parse("Client").unwrap(),
            json!({"secret": "s"}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let cases: &[(&str, u16, &str)] = &[
        (
            "insert into hostile values (9, 'x')",
            400,
            "only one read query",
        ),
        ("update hostile set v = 'x'", 400, "only one read query"),
        ("delete from hostile", 400, "only one read query"),
        ("drop table hostile", 400, "only one read query"),
        ("create table x (a int)", 400, "only one read query"),
        ("select 1; select 2", 400, "invalid query"),
        ("select 1; delete from hostile", 400, "invalid query"),
        (
            "copy hostile to program 'touch /tmp/siphon-pwned'",
            400,
            "only one read query",
        ),
        (
            "select * from hostile) to program 'touch /tmp/siphon-pwned' --",
            400,
            "invalid query",
        ),
        (
            "with d as (delete from hostile returning *) select * from d",
            403,
            "not allowed",
        ),
        (
            "select set_config('statement_timeout', '0', false)",
            403,
            "set_config",
        ),
        ("select pg_read_file('/etc/passwd')", 403, "pg_read_file"),
        (
            "select * from dblink('host=127.0.0.1', 'select 1') as t(a int)",
            403,
            "dblink",
        ),
        // Sleeping is not the read-only role's to do; a slow query meets the time limit.
        ("select pg_sleep(5)", 403, "permission denied"),
        (
            "select count(*) from generate_series(1, 10000000000)",
            400,
            "time limit",
        ),
        ("select resource from client", 403, "not allowed"),
        ("select * from siphon_loader_error", 403, "not allowed"),
        ("select secret_hash from siphon_import", 403, "not allowed"),
    ];
    for (query, status, message) in cases {
        let (s, _, body) = send(
            &app,
            "POST",
            "/$dump-sql",
            Some(admin()),
            Some(json!({"query": query})),
        )
        .await;
        let text = String::from_utf8(body.unwrap()).unwrap();
        assert_eq!(s, *status, "{query}: {text}");
        assert!(text.contains(message), "{query}: {text}");
    }
    assert!(!std::path::Path::new("/tmp/siphon-pwned").exists());
    let rows: i64 = connect(&db)
        .await
        .query_one("SELECT count(*) FROM hostile", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 8, "nothing was written");
    // The session is not reused: a normal query still runs as the service afterwards.
    assert_eq!(
        db.count(&ResourceType::parse("Client").unwrap())
            .await
            .unwrap(),
        1
    );
    let (s, _, _) = send(
        &app,
        "POST",
        "/$dump-sql",
        Some(admin()),
        Some(json!({"query": "select 1", "format": "xml"})),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_database_failure_mid_stream_cuts_the_response() {
    let (db, app) = app().await;
    db.upsert(
        &ResourceType::parse("Observation").unwrap(),
        "seed",
        &json!({}),
    )
    .await
    .unwrap();
    connect(&db).await.batch_execute(
        "INSERT INTO observation (id, txid, status, resource)
         SELECT g::text, g, 'created', jsonb_build_object('note', repeat('x', 2000)) FROM generate_series(1, 200000) g").await.unwrap();
    let req: Request = lambda_http::http::Request::builder()
        .method("GET")
        .uri("/Observation/$dump")
        .header("authorization", admin())
        .body(Body::Empty)
        .unwrap();
    let resp = siphon_dump::handle(&app, req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(!first.into_data().unwrap().is_empty());
    let admin_conn = connect(&db).await;
    admin_conn.batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'COPY%' AND pid <> pg_backend_pid()").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let mut bytes = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes += f.into_data().map(|d| d.len()).unwrap_or(0),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(bytes)
    })
    .await
    .unwrap();
    let err = outcome.expect_err("the body must end with an error, not a clean end");
    assert!(err.contains("dump incomplete"), "{err}");
}
