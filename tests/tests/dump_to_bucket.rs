//! `aidbox.bulk/dump-to-bucket` end to end, in process: the API, the export queue and
//! worker, Postgres, LocalStack S3. Every file is downloaded and read back by a reader
//! nobody here wrote (pyarrow and DuckDB for Parquet, Python's csv module, Postgres'
//! COPY for TSV, psql for the `sql` script, serde_json for ndjson and `_bulk`) and
//! compared value by value with the table.

mod api_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{call, call_as, drain_exports, setup, setup_with, Env};
use serde_json::{json, Value};
use siphon::exporting::task::TaskOptions;
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::{FileOptions, LoaderFile, ObjectLocation};
use siphon::sources::memory::MemorySource;
use siphon_tests::{connect, fresh_bucket, gen, read_back, var};

/// Loads `count` generated resources of `ty` through the loader.
async fn load(env: &Env, ty: &str, count: u64, seed: u64) {
    let source = MemorySource::new();
    let loc = ObjectLocation::new("mem", format!("{ty}-{seed}.ndjson"));
    source.put(loc.clone(), gen::ndjson(ty, count, seed));
    let (file, _) = env
        .db
        .create_loader_file(&LoaderFile::pending(
            &loc,
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    let loader = Loader::new(env.db.clone(), Arc::new(source), LoadOptions::default());
    let outcome = loader.load(&file.id, None).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Done { failed: 0, .. }),
        "{outcome:?}"
    );
}

/// Starts a dump; answers the job's path (`/$dump-to-bucket/{id}`).
async fn start(env: &Env, params: Value) -> String {
    let (status, body, headers) = dump_rpc(env, params).await;
    assert_eq!(status, 202, "{body}");
    let location = headers["content-location"].to_str().unwrap();
    let id = body["result"]["id"].as_str().unwrap();
    assert!(
        location.ends_with(&format!("/$dump-to-bucket/{id}")),
        "{location}"
    );
    format!("/$dump-to-bucket/{id}")
}

async fn dump_rpc(env: &Env, params: Value) -> (u16, Value, lambda_http::http::HeaderMap) {
    call(
        env,
        "POST",
        "/rpc",
        Some(json!({"method": "aidbox.bulk/dump-to-bucket", "params": params})),
    )
    .await
}

/// Runs the export worker until the job ends; answers its final view.
async fn finish(env: &Env, job: &str) -> Value {
    let start = Instant::now();
    loop {
        drain_exports(env).await;
        let (status, body, headers) = call(env, "GET", job, None).await;
        if status != 202 {
            assert_eq!(status, 200, "{body}");
            assert!(headers.contains_key("x-progress"));
            return body;
        }
        assert!(headers["x-progress"]
            .to_str()
            .unwrap()
            .contains("tasks done"));
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the dump never ended: {body}"
        );
    }
}

async fn object(env: &Env, bucket: &str, key: &str) -> Vec<u8> {
    env.s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

async fn keys(env: &Env, bucket: &str) -> BTreeSet<String> {
    env.s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Every file of a finished job, downloaded (gzip undone), in key order.
async fn files(env: &Env, bucket: &str, view: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for f in view["files"].as_array().unwrap() {
        let key = f["key"].as_str().unwrap().to_string();
        let bytes = object(env, bucket, &key).await;
        let bytes = if key.ends_with(".gz") {
            gunzip(&bytes)
        } else {
            bytes
        };
        out.push((key, bytes));
    }
    out.sort();
    out
}

/// Writes `bytes` to a temporary file for a reader process.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("siphon-{}-{name}", uuid::Uuid::new_v4()));
    std::fs::write(&path, bytes).unwrap();
    path
}

const HOSTILE: &[&str] = &[
    "tab\there",
    "new\nline",
    "quote \" and 'single'",
    "back\\slash \\N",
    "unicode é 中 😀",
    "",
    "cr\rlf",
    ",comma,\"",
    "NULL",
];

/// A table of every column kind, hostile text, big numerics and a row of NULLs.
async fn typed_table(env: &Env) {
    let c = connect(&env.db).await;
    c.batch_execute(
        "CREATE TABLE typed (id text, small int2, n int4, big int8, num numeric, ok boolean,
             at timestamptz, local timestamp, day date, r float8, doc jsonb, v text);
         GRANT SELECT ON typed TO siphon_reader;",
    )
    .await
    .unwrap();
    for (i, v) in HOSTILE.iter().enumerate() {
        let i = i as i64 + 1;
        c.execute(
            "INSERT INTO typed VALUES ($1, $2::int8::int2, $2::int8::int4, $2::int8 * 1000000000000,
                 12345678901234567890.123456789 * $2 - 7.5, $2 % 2 = 0,
                 timestamptz '2024-02-29 23:59:59.123456+00' + $2 * interval '1 day 1 hour',
                 timestamp '1969-12-31 12:00:00.5' + $2 * interval '1 minute',
                 date '2000-02-29' + $2::int, $2 / 3.0::float8, jsonb_build_object('v', $3::text, 'n', $2, 'deep', jsonb_build_array(1.5, null, true)), $3)",
            &[&format!("r{i:02}"), &i, v],
        )
        .await
        .unwrap();
    }
    c.batch_execute("INSERT INTO typed (id) VALUES ('r99-nulls')")
        .await
        .unwrap();
}

/// The rows of `typed` in Postgres' COPY text form (UTC, ISO), NULL as None.
async fn typed_text(env: &Env) -> Vec<Vec<Option<String>>> {
    let c = connect(&env.db).await;
    c.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
        .await
        .unwrap();
    c.query(
        // Booleans as COPY (and psql's \\copy) write them: t / f.
        "SELECT id, small::text, n::text, big::text, num::text, left(ok::text, 1), at::text, local::text,
                day::text, r::text, doc::text, v FROM typed ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (0..12).map(|i| r.get::<_, Option<String>>(i)).collect())
    .collect()
}

/// `12.500` and `12.5` are the same decimal.
fn decimal(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Checks Parquet rows (as tests/readers/parquet_rows.py prints them) against `typed`.
async fn assert_parquet_matches_typed(env: &Env, read: &Value) {
    let types: Vec<&str> = read["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "string");
    assert_eq!(&types[1..4], ["int16", "int32", "int64"]);
    assert!(types[4].starts_with("decimal128("), "{types:?}");
    assert_eq!(types[5], "bool");
    assert_eq!(types[6], "timestamp[us, tz=UTC]");
    assert_eq!(types[7], "timestamp[us]");
    assert_eq!(types[8], "date32[day]");
    assert_eq!(types[9], "double");
    assert_eq!(&types[10..], ["string", "string"]);
    assert_eq!(read["compression"], json!(["SNAPPY"]));
    let c = connect(&env.db).await;
    let want = c
        .query(
            "SELECT id, small::int8, n::int8, big, num::text, ok,
                    (extract(epoch FROM at) * 1000000)::int8, (extract(epoch FROM local) * 1000000)::int8,
                    day::text, r, doc::text, v FROM typed ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let rows = read["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    assert_eq!(
        read["duckdb_rows"], read["rows"],
        "DuckDB reads what pyarrow reads"
    );
    let mut rows = rows.clone();
    rows.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
    for (got, w) in rows.iter().zip(&want) {
        let id: String = w.get(0);
        assert_eq!(got[0], json!(id));
        for (i, col) in [(1, "small"), (2, "n"), (3, "big")] {
            assert_eq!(got[i], json!(w.get::<_, Option<i64>>(i)), "{id} {col}");
        }
        assert_eq!(
            got[4].as_str().map(decimal),
            w.get::<_, Option<String>>(4).as_deref().map(decimal),
            "{id} num"
        );
        assert_eq!(got[5], json!(w.get::<_, Option<bool>>(5)), "{id} ok");
        for i in [6, 7] {
            assert_eq!(
                got[i]["micros"].as_i64(),
                w.get::<_, Option<i64>>(i),
                "{id} column {i}"
            );
        }
        assert_eq!(got[8], json!(w.get::<_, Option<String>>(8)), "{id} day");
        assert_eq!(got[9].as_f64(), w.get::<_, Option<f64>>(9), "{id} r");
        let doc: Option<String> = w.get(10);
        assert_eq!(
            got[10]
                .as_str()
                .map(|s| serde_json::from_str::<Value>(s).unwrap()),
            doc.map(|s| serde_json::from_str::<Value>(&s).unwrap()),
            "{id} doc"
        );
        assert_eq!(got[11], json!(w.get::<_, Option<String>>(11)), "{id} v");
    }
}

/// Runs `script` (an `INSERT` script) with psql into the test database.
fn psql_file(env: &Env, script: &[u8]) {
    let file = temp_file("script.sql", script);
    let out = std::process::Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-X", "-f"])
        .arg(&file)
        .arg(siphon_tests::fresh_db_url_of(&env.db))
        .output()
        .expect("psql runs");
    std::fs::remove_file(&file).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn same_as_typed(env: &Env, table: &str) -> bool {
    connect(&env.db)
        .await
        .query_one(
            &format!(
                "SELECT (SELECT array_agg(t ORDER BY id) FROM typed t)::text
                      = (SELECT array_agg(t ORDER BY id) FROM {table} t)::text"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn every_format_of_a_query_reads_back_value_by_value() {
    let env = setup(LoadOptions::default()).await;
    typed_table(&env).await;
    let query = "select * from typed order by id";
    let text = typed_text(&env).await;
    let c = connect(&env.db).await;
    for (format, gzip) in [
        ("parquet", false),
        ("csv", true),
        ("tsv", false),
        ("ndjson", true),
        ("sql", false),
        ("elastic-bulk", false),
    ] {
        let bucket = fresh_bucket(&env.s3).await;
        let job = start(
            &env,
            json!({"bucket": format!("s3://{bucket}/exports/{format}"), "query": query,
                   "format": format, "gzip": gzip, "table": "typed_back"}),
        )
        .await;
        let view = finish(&env, &job).await;
        assert_eq!(view["status"], "done", "{view}");
        assert_eq!(
            view["tables"]["query"]["count"],
            json!(HOSTILE.len() + 1),
            "{view}"
        );
        let got = files(&env, &bucket, &view).await;
        assert_eq!(got.len(), 1, "{format}: {view}");
        let (key, bytes) = &got[0];
        let ext = match format {
            "elastic-bulk" => "bulk.ndjson",
            f => f,
        };
        assert!(
            key.starts_with(&format!("exports/{format}/query/"))
                && key.ends_with(&format!(".1_00001.{ext}{}", if gzip { ".gz" } else { "" })),
            "{key}"
        );
        // The marker, written last, lists the files, counts, query and format.
        let marker_key = view["marker"].as_str().unwrap();
        assert_eq!(
            marker_key,
            format!(
                "exports/{format}/_siphon_loads/{}.json",
                view["loadId"].as_str().unwrap()
            )
        );
        let marker: Value =
            serde_json::from_slice(&object(&env, &bucket, marker_key).await).unwrap();
        assert_eq!(marker["status"], "done");
        assert_eq!(marker["query"], query);
        assert_eq!(marker["format"], format);
        assert_eq!(marker["files"][0]["key"], json!(key));
        assert_eq!(marker["files"][0]["count"], json!(HOSTILE.len() + 1));
        match format {
            "parquet" => {
                let file = temp_file("x.parquet", bytes);
                let read = read_back("parquet_rows.py", &[&file]);
                std::fs::remove_file(&file).ok();
                assert_parquet_matches_typed(&env, &read).await;
            }
            "csv" => {
                let file = temp_file("x.csv", bytes);
                let read = read_back("csv_rows.py", &[&file]);
                std::fs::remove_file(&file).ok();
                let rows = read.as_array().unwrap();
                assert_eq!(
                    rows[0],
                    json!([
                        "id", "small", "n", "big", "num", "ok", "at", "local", "day", "r", "doc",
                        "v"
                    ])
                );
                assert_eq!(rows.len(), text.len() + 1);
                for (got, want) in rows[1..].iter().zip(&text) {
                    // CSV has no NULL: an empty field.
                    let want: Vec<String> =
                        want.iter().map(|v| v.clone().unwrap_or_default()).collect();
                    assert_eq!(got, &json!(want));
                }
            }
            "tsv" => {
                c.batch_execute("CREATE TABLE back_tsv (LIKE typed)")
                    .await
                    .unwrap();
                let sink = c
                    .copy_in::<_, bytes::Bytes>("COPY back_tsv FROM STDIN")
                    .await
                    .unwrap();
                futures::pin_mut!(sink);
                futures::SinkExt::send(&mut sink, bytes::Bytes::from(bytes.clone()))
                    .await
                    .unwrap();
                sink.finish().await.unwrap();
                assert!(
                    same_as_typed(&env, "back_tsv").await,
                    "TSV loads back equal"
                );
            }
            "ndjson" => {
                let want: Vec<Value> = c
                    .query("SELECT row_to_json(t)::text FROM typed t ORDER BY id", &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
                    .collect();
                let got: Vec<Value> = std::str::from_utf8(bytes)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(got, want);
            }
            "sql" => {
                c.batch_execute("CREATE TABLE typed_back (LIKE typed)")
                    .await
                    .unwrap();
                psql_file(&env, bytes);
                assert!(
                    same_as_typed(&env, "typed_back").await,
                    "psql runs the script into an equal table"
                );
            }
            "elastic-bulk" => {
                let text = std::str::from_utf8(bytes).unwrap();
                assert!(text.ends_with('\n'));
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let want: Vec<Value> = c
                    .query("SELECT row_to_json(t)::text FROM typed t ORDER BY id", &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
                    .collect();
                assert_eq!(lines.len(), 2 * want.len());
                for (pair, row) in lines.chunks(2).zip(&want) {
                    assert_eq!(
                        pair[0],
                        json!({"index": {"_index": "typed_back", "_id": row["id"]}})
                    );
                    assert_eq!(&pair[1], row);
                }
            }
            _ => unreachable!(),
        }
    }
    // The query's table is gone once the jobs ended.
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'siphon_dump'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// The `$dump` lines of `ty`, by id.
async fn dumped(env: &Env, ty: &str) -> BTreeMap<String, String> {
    api_harness::dump_lines(env, ty)
        .await
        .into_iter()
        .map(|l| {
            let v: Value = serde_json::from_str(&l).unwrap();
            (v["id"].as_str().unwrap().to_string(), l)
        })
        .collect()
}

/// The JSON lines of `files`, by their `id`.
fn by_id(files: &[(String, Vec<u8>)]) -> BTreeMap<String, String> {
    files
        .iter()
        .flat_map(|(_, b)| {
            String::from_utf8(b.clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|l| {
            let v: Value = serde_json::from_str(&l).unwrap();
            (v["id"].as_str().unwrap().to_string(), l)
        })
        .collect()
}

#[tokio::test]
async fn resource_tables_as_parquet_and_gzip_ndjson_hold_what_dump_returns() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 700, 1).await;
    load(&env, "Observation", 400, 2).await;
    let patients = dumped(&env, "Patient").await;
    let observations = dumped(&env, "Observation").await;
    // No types: every resource table but siphon's own (LoaderFile, Client).
    let bucket = fresh_bucket(&env.s3).await;
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}"), "format": "parquet"}),
    )
    .await;
    let view = finish(&env, &job).await;
    assert_eq!(view["status"], "done", "{view}");
    let tables: BTreeSet<&String> = view["tables"].as_object().unwrap().keys().collect();
    assert_eq!(
        tables,
        BTreeSet::from([&"observation".to_string(), &"patient".to_string()])
    );
    let c = connect(&env.db).await;
    for (table, want) in [("patient", &patients), ("observation", &observations)] {
        let mut paths = Vec::new();
        for f in view["files"].as_array().unwrap() {
            if f["table"] == table {
                let key = f["key"].as_str().unwrap();
                assert!(
                    key.starts_with(&format!("{table}/")) && key.ends_with(".parquet"),
                    "{key}"
                );
                paths.push(temp_file("t.parquet", &object(&env, &bucket, key).await));
            }
        }
        let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        let read = read_back("parquet_rows.py", &refs);
        for p in &paths {
            std::fs::remove_file(p).ok();
        }
        assert_eq!(
            read["schema"],
            json!([
                ["id", "string"],
                ["resource_type", "string"],
                ["ts", "timestamp[us, tz=UTC]"],
                ["txid", "int64"],
                ["resource", "string"]
            ])
        );
        assert_eq!(read["duckdb_rows"], read["rows"]);
        let rows = read["rows"].as_array().unwrap();
        assert_eq!(rows.len(), want.len());
        let stored: BTreeMap<String, (i64, i64)> = c
            .query(
                &format!("SELECT id, (extract(epoch FROM ts) * 1000000)::int8, txid FROM {table}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        for row in rows {
            let id = row[0].as_str().unwrap();
            assert_eq!(row[1].as_str().unwrap().to_ascii_lowercase(), table);
            assert_eq!(
                (row[2]["micros"].as_i64().unwrap(), row[3].as_i64().unwrap()),
                stored[id]
            );
            // The resource exactly as $dump returns it.
            assert_eq!(row[4].as_str().unwrap(), want[id], "{id}");
        }
    }
    // gzip ndjson of one type, `_since` in the future: no rows, still a marker.
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}/nd"), "types": ["Patient"], "gzip": true}),
    )
    .await;
    let view = finish(&env, &job).await;
    let got = files(&env, &bucket, &view).await;
    assert_eq!(&by_id(&got), &patients);
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}/later"), "types": ["Patient"], "_since": "2999-01-01"}),
    )
    .await;
    let view = finish(&env, &job).await;
    assert_eq!(view["tables"]["patient"]["count"], 0, "{view}");
    assert!(keys(&env, &bucket)
        .await
        .contains(view["marker"].as_str().unwrap()));
}

/// The `Content-Type` S3 stored for `key`.
async fn content_type(env: &Env, bucket: &str, key: &str) -> String {
    env.s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .content_type()
        .unwrap_or_default()
        .to_string()
}

/// JSON Lines, the format added through the format registry: `.jsonl` files holding the
/// lines ndjson would, for a table and for a query; and an elastic-bulk dump of a table
/// names its index after the table.
#[tokio::test]
async fn jsonl_files_hold_the_ndjson_lines_and_a_table_is_its_own_index() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 300, 7).await;
    let patients = dumped(&env, "Patient").await;
    let bucket = fresh_bucket(&env.s3).await;
    // A table, gzip-compressed.
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}/t"), "types": ["Patient"], "format": "jsonl", "gzip": true}),
    )
    .await;
    let view = finish(&env, &job).await;
    assert_eq!(view["status"], "done", "{view}");
    let got = files(&env, &bucket, &view).await;
    assert!(
        got.iter()
            .all(|(k, _)| k.starts_with("t/patient/") && k.ends_with(".jsonl.gz")),
        "{got:?}"
    );
    assert_eq!(
        content_type(&env, &bucket, &got[0].0).await,
        "application/jsonl"
    );
    assert_eq!(by_id(&got), patients);
    // A query: its rows as objects, as ndjson writes them.
    let query = "select id, resource->'gender' as gender from patient";
    let mut lines = Vec::new();
    for format in ["jsonl", "ndjson"] {
        let job = start(
            &env,
            json!({"bucket": format!("s3://{bucket}/q-{format}"), "query": query, "format": format}),
        )
        .await;
        let view = finish(&env, &job).await;
        assert_eq!(view["tables"]["query"]["count"], 300, "{view}");
        let got = files(&env, &bucket, &view).await;
        assert!(got[0].0.ends_with(&format!(".{format}")), "{got:?}");
        lines.push(got[0].1.clone());
    }
    assert_eq!(lines[0], lines[1]);
    let first: Value =
        serde_json::from_slice(lines[0].split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert!(
        first["id"].is_string() && first.get("gender").is_some(),
        "{first}"
    );
    // elastic-bulk of a table without `table`: the index is the table's name.
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}/es"), "types": ["Patient"], "format": "elastic-bulk"}),
    )
    .await;
    let view = finish(&env, &job).await;
    let got = files(&env, &bucket, &view).await;
    let action: Value =
        serde_json::from_slice(got[0].1.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(action["index"]["_index"], "patient", "{action}");
}

#[tokio::test]
async fn layouts_fill_every_placeholder_and_unknown_ones_are_refused_by_name() {
    use chrono::{Datelike, Timelike};
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 20, 3).await;
    let bucket = fresh_bucket(&env.s3).await;
    let layouts = [
        "{schema_name}/{table_name}/{YYYY}/{MM}/{DD}/{HH}/{mm}/{ss}/{timestamp}/{timestamp_ms}/{load_id}.{file_id}.{ext}",
        "{curr_date}/{YY}-{Y}-{MMMM}-{MMM}-{M}-{D}-{H}-{m}-{s}-{SSSS}-{SSS}-{SS}-{S}/{dddd}-{ddd}-{dd}-{d}-q{Q}/{load_package_timestamp}-{load_package_timestamp_ms}/{table_name}",
    ];
    for (n, layout) in layouts.iter().enumerate() {
        let job = start(
            &env,
            json!({"bucket": format!("s3://{bucket}/l{n}"), "types": ["Patient"], "format": "csv", "gzip": true, "layout": layout}),
        )
        .await;
        let view = finish(&env, &job).await;
        let t = chrono::DateTime::parse_from_rfc3339(view["started"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        let load_id = view["loadId"].as_str().unwrap();
        assert_eq!(
            load_id,
            format!("{}.{:06}", t.timestamp(), t.timestamp_subsec_micros())
        );
        let ns = t.timestamp_subsec_nanos();
        let want = if n == 0 {
            format!(
                "l0/public/patient/{}/{:02}/{:02}/{:02}/{:02}/{:02}/{}/{}/{load_id}.1_00001.csv.gz",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.timestamp(),
                t.timestamp_millis()
            )
        } else {
            // `{ext}` is appended when the layout lacks it; without `{file_id}` a table is
            // one file.
            format!(
                "l1/{}/{:02}-{}-{}-{}-{}-{}-{}-{}-{}-{:04}-{:03}-{:02}-{}/{}-{}-{}-{}-q{}/{}-{}/patient.csv.gz",
                t.format("%Y-%m-%d"), t.year() % 100, t.year(),
                t.format("%B").to_string().to_lowercase(), t.format("%b").to_string().to_lowercase(),
                t.month(), t.day(), t.hour(), t.minute(), t.second(),
                ns / 100_000, ns / 1_000_000, ns / 10_000_000, ns / 100_000_000,
                t.format("%A").to_string().to_lowercase(), t.format("%a").to_string().to_lowercase(),
                &t.format("%a").to_string().to_lowercase()[..2], t.weekday().num_days_from_sunday(),
                t.month0() / 3 + 1, t.timestamp(), t.timestamp_millis()
            )
        };
        assert_eq!(view["files"][0]["key"], json!(want), "{layout}");
        let csv = gunzip(&object(&env, &bucket, &want).await);
        assert_eq!(
            String::from_utf8(csv).unwrap().lines().count(),
            21,
            "header + 20 rows"
        );
    }
    for (layout, words) in [
        ("{table_name}/{nope}.{ext}", "{nope} is unknown"),
        ("{table_name/{ext}", "without its }"),
        ("../{table_name}", "relative path"),
        ("/{table_name}", "relative path"),
        ("", "1 to 512"),
    ] {
        let (s, b, _) = dump_rpc(
            &env,
            json!({"bucket": format!("s3://{bucket}"), "types": ["Patient"], "layout": layout}),
        )
        .await;
        assert_eq!(s, 400, "{layout}: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(words),
            "{layout}: {b}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_url_store_is_reached_through_the_allow_list_and_unsafe_ones_are_refused() {
    // LocalStack under another name: `localhost`, allow-listed as such.
    let endpoint = url::Url::parse(&var("AWS_ENDPOINT_URL")).unwrap();
    let port = endpoint.port().unwrap();
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_URL_ALLOWLIST", &format!("localhost:{port}"))
    })
    .await;
    load(&env, "Patient", 30, 4).await;
    let bucket = fresh_bucket(&env.s3).await;
    // LocalStack takes any key; this one is unique enough to be looked for.
    let secret = "wJalrXUtnFEMI-K7MDENG-dumpToBucketSECRET".to_string();
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}/other"), "types": ["Patient"],
               "endpoint-url": format!("http://localhost:{port}"),
               "account": {"access-key-id": var("AWS_ACCESS_KEY_ID"), "secret-access-key": secret, "region": "us-east-1"}}),
    )
    .await;
    let view = finish(&env, &job).await;
    assert_eq!(view["status"], "done", "{view}");
    let got = files(&env, &bucket, &view).await;
    assert_eq!(
        got.iter()
            .map(|(_, b)| b.iter().filter(|&&c| c == b'\n').count())
            .sum::<usize>(),
        30
    );
    // The secret is nowhere but in the queue message that carried it.
    assert!(!view.to_string().contains(&secret));
    let stored: String = connect(&env.db)
        .await
        .query_one(
            "SELECT coalesce(string_agg(request::text, ''), '') FROM siphon_export",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains(&secret));
    for (endpoint, why) in [
        ("http://127.0.0.1:9/".to_string(), "https"),
        ("https://127.0.0.1:9/".to_string(), "loopback"),
        ("https://[::1]:9/".to_string(), "loopback"),
        ("http://169.254.169.254/".to_string(), "https"),
        ("https://169.254.169.254/".to_string(), "link-local"),
        (format!("http://127.0.0.1:{port}/"), "https"),
    ] {
        let (s, b, _) = dump_rpc(
            &env,
            json!({"bucket": format!("s3://{bucket}"), "types": ["Patient"], "endpoint-url": endpoint}),
        )
        .await;
        assert_eq!(s, 400, "{endpoint}: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(why),
            "{endpoint}: {b}"
        );
    }
}

#[tokio::test]
async fn refusals_are_400s_that_say_why_and_other_clients_cannot_see_a_job() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 5, 5).await;
    let bucket = fresh_bucket(&env.s3).await;
    let b = format!("s3://{bucket}");
    for (params, status, words) in [
        (
            json!({"bucket": b, "query": "delete from patient"}),
            400,
            "only one read query",
        ),
        (
            json!({"bucket": b, "query": "select pg_read_file('/etc/passwd')"}),
            403,
            "pg_read_file",
        ),
        (
            json!({"bucket": b, "query": "select * from nowhere"}),
            400,
            "nowhere",
        ),
        (
            json!({"bucket": b, "query": "select 1 as a, 2 as a"}),
            400,
            "appears more than once",
        ),
        (
            json!({"bucket": b, "types": ["Patient"], "format": "xml"}),
            400,
            "unknown format",
        ),
        (
            json!({"bucket": b, "types": ["Patient"], "format": "parquet", "gzip": true}),
            400,
            "Parquet",
        ),
        (
            json!({"bucket": b, "types": ["Patient"], "format": "sql"}),
            400,
            "needs `table`",
        ),
        (
            json!({"bucket": b, "types": ["Patient"], "query": "select 1"}),
            400,
            "not both",
        ),
        (
            json!({"bucket": b, "query": "select 1 as x", "format": "elastic-bulk"}),
            400,
            "`id` column",
        ),
        (
            json!({"bucket": b, "types": ["Nothing"]}),
            404,
            "no resources of type Nothing",
        ),
        (
            json!({"bucket": b, "types": ["Patient"], "_since": "yesterday"}),
            400,
            "_since",
        ),
        (json!({"bucket": "not-a-bucket"}), 400, "s3://name"),
        (
            json!({"bucket": "s3://siphon-no-such-bucket-here"}),
            400,
            "NoSuchBucket",
        ),
        (
            json!({"bucket": b, "tpyes": ["Patient"]}),
            400,
            "unknown field",
        ),
    ] {
        let (s, body, _) = dump_rpc(&env, params.clone()).await;
        assert_eq!(s, status, "{params}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(words),
            "{params}: {body}"
        );
    }
    assert!(
        keys(&env, &bucket).await.is_empty(),
        "a refusal writes nothing"
    );
    let job = start(&env, json!({"bucket": b, "types": ["Patient"]})).await;
    let other = api_harness::basic("nobody", "wrong");
    let (s, _, _) = call_as(&env, "GET", &job, Some(&other), None).await;
    assert_eq!(s, 401);
    let (s, body, _) = call(&env, "GET", "/$dump-to-bucket/no-such-job", None).await;
    assert_eq!(s, 404, "{body}");
    let view = finish(&env, &job).await;
    assert_eq!(view["status"], "done");
    let (s, body, _) = call(&env, "DELETE", &job, None).await;
    assert_eq!(s, 409, "a finished dump's files stay: {body}");
}

/// Runs one export-queue message with `options`, its deadline `budget` away.
async fn run_one(env: &Env, options: TaskOptions, budget: Duration) -> usize {
    let worker = siphon::workers::ExportWorker::new(
        env.db.clone(),
        env.export_queue.clone(),
        env.exporter.sink.clone(),
        options,
        5,
    )
    .with_own_client(siphon::sources::s3::S3Source::new(env.s3.clone()));
    siphon_local::poll_export_queue(
        &worker,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        budget,
    )
    .await
}

/// 5 MiB parts, 1 MiB row groups: with the deadline 30 s away and a 30 s margin, every
/// invocation hands over after its first part.
fn handing_over() -> TaskOptions {
    TaskOptions {
        part_bytes: 5 << 20,
        row_group_bytes: 1 << 20,
        ..TaskOptions::default()
    }
}

#[tokio::test]
async fn a_forced_hand_over_mid_file_and_a_duplicate_delivery_write_each_row_once() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 6).await; // ~25 MB of JSON
    let want = dumped(&env, "Observation").await;
    for format in ["ndjson", "parquet"] {
        let bucket = fresh_bucket(&env.s3).await;
        let (query, types) = if format == "parquet" {
            (
                // Hex noise that Snappy cannot shrink, so the file spans several parts.
                json!("select id, resource, (select string_agg(md5(o.id || g::text), '') from generate_series(1, 40) g) as noise from observation o"),
                Value::Null,
            )
        } else {
            (Value::Null, json!(["Observation"]))
        };
        let mut params = json!({"bucket": format!("s3://{bucket}"), "format": format});
        if !query.is_null() {
            params["query"] = query;
        }
        if !types.is_null() {
            params["types"] = types;
        }
        let job = start(&env, params).await;
        let id = job.rsplit('/').next().unwrap().to_string();
        // The same task delivered twice.
        siphon::queue::send(
            &*env.export_queue,
            &[siphon::exporting::ExportMessage {
                task: format!("{id}/0"),
                store: Default::default(),
            }],
            None,
        )
        .await
        .unwrap();
        let mut invocations = 0;
        let start = Instant::now();
        while run_one(&env, handing_over(), Duration::from_secs(30)).await > 0 {
            invocations += 1;
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{format}: never ended"
            );
        }
        assert!(invocations >= 3, "{format}: {invocations} invocations");
        let view = finish(&env, &job).await;
        assert_eq!(view["status"], "done", "{view}");
        let got = files(&env, &bucket, &view).await;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        if format == "ndjson" {
            assert_eq!(got.len(), 1, "a text file resumes mid-file: {view}");
            for line in String::from_utf8(got[0].1.clone()).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let old = seen.insert(v["id"].as_str().unwrap().to_string(), line.to_string());
                assert!(old.is_none(), "written twice: {line}");
            }
        } else {
            assert!(
                got.len() >= 2,
                "a Parquet file is closed at each hand-over: {view}"
            );
            let paths: Vec<PathBuf> = got.iter().map(|(_, b)| temp_file("h.parquet", b)).collect();
            let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
            let read = read_back("parquet_rows.py", &refs);
            for p in &paths {
                std::fs::remove_file(p).ok();
            }
            for row in read["rows"].as_array().unwrap() {
                let id = row[0].as_str().unwrap().to_string();
                let old = seen.insert(id.clone(), row[1].as_str().unwrap().to_string());
                assert!(old.is_none(), "written twice: {id}");
            }
        }
        assert_eq!(seen.len(), want.len(), "{format}");
        for (id, line) in &seen {
            let got: Value = serde_json::from_str(line).unwrap();
            let expected: Value = serde_json::from_str(&want[id]).unwrap();
            if format == "ndjson" {
                assert_eq!(line, &want[id]);
            } else {
                // The query's `resource` column is the stored jsonb, without the id and
                // resourceType $dump adds back.
                assert_eq!(got["status"], expected["status"], "{id}");
                assert_eq!(got["code"], expected["code"], "{id}");
            }
        }
        // Keys in the bucket: exactly the listed files and the marker; no stray upload.
        let mut listed: BTreeSet<String> = got.iter().map(|(k, _)| k.clone()).collect();
        listed.insert(view["marker"].as_str().unwrap().to_string());
        assert_eq!(keys(&env, &bucket).await, listed);
        let uploads = env
            .s3
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    }
}

#[tokio::test]
async fn cancel_mid_file_removes_every_partial_and_finished_file() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 7).await;
    load(&env, "Patient", 50, 8).await;
    let bucket = fresh_bucket(&env.s3).await;
    let job = start(
        &env,
        json!({"bucket": format!("s3://{bucket}"), "types": ["Patient", "Observation"]}),
    )
    .await;
    // Patient is done; Observation hands over mid-file with one part uploaded.
    let mut runs = 0;
    loop {
        run_one(&env, handing_over(), Duration::from_secs(30)).await;
        runs += 1;
        let (_, view, _) = call(&env, "GET", &job, None).await;
        let open = view["progress"]
            .as_str()
            .unwrap()
            .contains(": 1/2 tasks done");
        let uploading = !env
            .s3
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty();
        if open && uploading {
            break;
        }
        assert!(runs < 10, "{view}");
    }
    assert!(
        !keys(&env, &bucket).await.is_empty(),
        "Patient's file is written"
    );
    let (s, body, _) = call(&env, "DELETE", &job, None).await;
    assert_eq!(s, 202, "{body}");
    drain_exports(&env).await;
    let (s, view, _) = call(&env, "GET", &job, None).await;
    assert_eq!(
        (s, view["status"].as_str()),
        (200, Some("cancelled")),
        "{view}"
    );
    assert!(
        keys(&env, &bucket).await.is_empty(),
        "every file removed, no marker"
    );
    let uploads = env
        .s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}
