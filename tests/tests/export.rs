//! FHIR Bulk Data `$export` end to end, in process: the API, the export queue and
//! worker, Postgres, LocalStack S3. Every output file is downloaded through its
//! presigned URL and compared line by line with what `$dump` returns for the table.

mod api_harness;
mod export_harness;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{admin, basic, drain_exports, setup, setup_with, Env};
use export_harness::{complete, download, kick_off, load, request, FHIR};
use serde_json::{json, Value};
use siphon::exporting::task::TaskOptions;
use siphon::loading::LoadOptions;
use siphon::ResourceType;
use siphon_tests::{connect, gen, http_get};

/// What `$dump` returns for a type, line by line, sorted.
async fn dumped(env: &Env, ty: &str) -> Vec<String> {
    sorted(api_harness::dump_lines(env, ty).await)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_system_export_writes_every_resource_once_byte_for_byte_as_dump_does() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 300, 1).await;
    load(&env, "Observation", 900, 2).await;
    load(&env, "Encounter", 150, 3).await;
    // A row inserted by hand (no id or resourceType inside), and a system resource that
    // is no FHIR type: the first is exported like any other, the second never.
    connect(&env.db)
        .await
        .batch_execute(
            "INSERT INTO patient (id, txid, status, resource) VALUES ('by-hand', 1, 'created', '{\"name\": [{\"family\": \"Ünïcödé \\\\ \\\"q\\\"\"}]}')",
        )
        .await
        .unwrap();

    let status = kick_off(&env, "/$export").await;
    // Before any worker ran: 202, progress, Retry-After.
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let progress = a.headers["x-progress"].to_str().unwrap();
    assert!(
        progress.len() < 100 && progress.contains("0/3 tasks"),
        "{progress}"
    );
    assert!(a.headers.contains_key("retry-after"));

    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(a.headers["expires"].to_str().unwrap().ends_with(" GMT"));
    let m = &a.body;
    assert_eq!(m["request"], "http://127.0.0.1:8080/$export");
    assert_eq!(m["requiresAccessToken"], false);
    assert!(chrono::DateTime::parse_from_rfc3339(m["transactionTime"].as_str().unwrap()).is_ok());
    assert_eq!(m["error"], json!([]));
    assert!(m.get("deleted").is_none(), "deleted[] only with _since");
    let files = download(m, "output").await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["Encounter", "Observation", "Patient"]
    );
    for (ty, lines) in &files {
        assert_eq!(sorted(lines.clone()), dumped(&env, ty).await, "{ty}");
        // One type per file, in id order.
        let ids: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ty} not in id order");
    }
    assert_eq!(files["Patient"].len(), 301);
    // The links are signed again at every status request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(again.status, 200);
    assert_ne!(again.body["output"][0]["url"], m["output"][0]["url"]);
}

#[tokio::test]
async fn big_types_split_into_ranges_and_files_and_gzip_files_decompress_to_the_same() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_RANGE_ROWS", "400")
            .with("SIPHON_EXPORT_FILE_MAX_RESOURCES", "150")
    })
    .await;
    load(&env, "Observation", 1000, 4).await;
    let status = kick_off(
        &env,
        "/$export?_type=Observation&_outputFormat=application/fhir%2Bndjson%2Bgzip",
    )
    .await;
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let urls: Vec<&str> = a.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["url"].as_str().unwrap())
        .collect();
    // 3 ranges of ~334 rows, 150 per file: 3 files each.
    assert_eq!(urls.len(), 9, "{urls:?}");
    assert!(urls
        .iter()
        .all(|u| u.contains("Observation-") && u.contains(".ndjson.gz")));
    let files = download(&a.body, "output").await;
    assert_eq!(
        sorted(files["Observation"].clone()),
        dumped(&env, "Observation").await
    );
}

#[tokio::test]
async fn json_lines_output_is_ndjson_in_jsonl_files() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 120, 5).await;
    let status = kick_off(
        &env,
        "/$export?_type=Patient&_outputFormat=application/jsonl%2Bgzip",
    )
    .await;
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let urls: Vec<&str> = a.body["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["url"].as_str().unwrap())
        .collect();
    assert!(
        !urls.is_empty() && urls.iter().all(|u| u.contains("Patient-1-001.jsonl.gz")),
        "{urls:?}"
    );
    let files = download(&a.body, "output").await;
    assert_eq!(
        sorted(files["Patient"].clone()),
        dumped(&env, "Patient").await
    );
    // Parquet is never gzip-compressed as a whole.
    let r = request(
        &env,
        "GET",
        "/$export?_outputFormat=parquet%2Bgzip",
        FHIR,
        None,
        &admin(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.to_string().contains("_outputFormat"), "{}", r.body);
}

#[tokio::test]
async fn parquet_output_is_read_back_by_pyarrow_and_duckdb_with_the_filter_applied() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_FILE_MAX_RESOURCES", "150")
    })
    .await;
    load(&env, "Patient", 50, 21).await;
    load(&env, "Encounter", 600, 22).await;
    let status = kick_off(
        &env,
        "/Patient/$export?_type=Patient,Encounter&_typeFilter=Encounter%3Fstatus%3Dfinished\
         &_outputFormat=application/vnd.apache.parquet",
    )
    .await;
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // What $dump gives for each type, keeping the Encounters the filter keeps.
    let mut want: std::collections::BTreeMap<(String, String), Value> = Default::default();
    for ty in ["Patient", "Encounter"] {
        for line in dumped(&env, ty).await {
            let v: Value = serde_json::from_str(&line).unwrap();
            if ty == "Encounter" && v["status"] != "finished" {
                continue;
            }
            want.insert((ty.to_string(), v["id"].as_str().unwrap().to_string()), v);
        }
    }
    let encounters = want.keys().filter(|(t, _)| t == "Encounter").count();
    assert!((100..400).contains(&encounters), "{encounters} finished");
    let mut got: std::collections::BTreeMap<(String, String), Value> = Default::default();
    let mut files = 0;
    for entry in a.body["output"].as_array().unwrap() {
        let (ty, url) = (
            entry["type"].as_str().unwrap(),
            entry["url"].as_str().unwrap(),
        );
        assert!(
            url.split('?').next().unwrap().ends_with(".parquet"),
            "{url}"
        );
        let body = http_get(url).await;
        assert_eq!(body.status, 200, "{url}");
        assert_eq!(
            body.headers.get("content-type").map(String::as_str),
            Some("application/vnd.apache.parquet")
        );
        let path = std::env::temp_dir().join(format!("siphon-{}.parquet", uuid::Uuid::new_v4()));
        std::fs::write(&path, &body.body).unwrap();
        let read = siphon_tests::read_back("parquet_rows.py", &[&path]);
        std::fs::remove_file(&path).ok();
        files += 1;
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
        assert_eq!(
            read["duckdb_rows"], read["rows"],
            "DuckDB reads what pyarrow reads"
        );
        let rows = read["rows"].as_array().unwrap();
        assert_eq!(rows.len() as u64, entry["count"].as_u64().unwrap(), "{url}");
        for row in rows {
            assert_eq!(row[1], ty, "{row}");
            let resource: Value = serde_json::from_str(row[4].as_str().unwrap()).unwrap();
            let id = row[0].as_str().unwrap().to_string();
            assert_eq!(resource["id"], id.as_str());
            assert!(got.insert((ty.to_string(), id), resource).is_none(), "once");
        }
    }
    assert!(files >= 3, "Encounters over 150 split into files: {files}");
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "every resource, as $dump has it, and only those"
    );
}

#[tokio::test]
async fn patient_and_group_exports_keep_only_the_compartments() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 20, 5).await;
    load(&env, "Observation", 200, 6).await;
    // An Organization is in no Patient compartment; an Observation without a subject
    // belongs to nobody.
    let db = &env.db;
    db.upsert(
        &ResourceType::parse("Organization").unwrap(),
        "org-1",
        &json!({"name": "x"}),
    )
    .await
    .unwrap();
    db.upsert(
        &ResourceType::parse("Observation").unwrap(),
        "no-subject",
        &json!({"status": "final", "code": {}}),
    )
    .await
    .unwrap();
    db.upsert(
        &ResourceType::parse("Group").unwrap(),
        "g1",
        &json!({"type": "person", "actual": true, "member": [
            {"entity": {"reference": "Patient/pat-00000000"}},
            {"entity": {"reference": "Patient/pat-00000001"}},
            {"entity": {"reference": "Patient/pat-00000002"}, "inactive": true}]}),
    )
    .await
    .unwrap();
    let c = connect(db).await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as usize }
    };

    // Patient level: every Patient and every resource referencing one.
    let status = kick_off(&env, "/Patient/$export").await;
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    // The Group is in the compartment too: its members reference Patients.
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["Group", "Observation", "Patient"]
    );
    assert_eq!(files["Patient"].len(), 20);
    assert_eq!(files["Observation"].len(), count("SELECT count(*) FROM observation WHERE resource->'subject'->>'reference' LIKE 'Patient/%'").await);
    assert!(!files["Observation"]
        .iter()
        .any(|l| l.contains("\"no-subject\"")));

    // Group level: the active members only.
    let status = kick_off(&env, "/Group/g1/$export").await;
    let a = complete(&env, &status).await;
    let files = download(&a.body, "output").await;
    let ids = |lines: &Vec<String>| -> BTreeSet<String> {
        lines
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        ids(&files["Patient"]),
        ["pat-00000000", "pat-00000001"].map(String::from).into()
    );
    let expected = count("SELECT count(*) FROM observation WHERE resource->'subject'->>'reference' IN ('Patient/pat-00000000', 'Patient/pat-00000001')").await;
    assert_eq!(files.get("Observation").map_or(0, Vec::len), expected);
    assert!(expected > 0);

    // POST with `patient`: narrowed further.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/pat-00000001"}},
        {"name": "_type", "valueString": "Patient"}]});
    let a = request(
        &env,
        "POST",
        "/Group/g1/$export",
        FHIR,
        Some(body),
        &admin(),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let status = a.headers["content-location"]
        .to_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:8080")
        .to_string();
    let a = complete(&env, &status).await;
    let files = download(&a.body, "output").await;
    assert_eq!(ids(&files["Patient"]), ["pat-00000001".to_string()].into());

    // Members written as Synthea writes them (`urn:uuid:<id>`) and as absolute URLs are
    // the Patients of those ids; a member of another type is not.
    db.upsert(
        &ResourceType::parse("Group").unwrap(),
        "g2",
        &json!({"type": "person", "actual": true, "member": [
            {"entity": {"reference": "urn:uuid:pat-00000003"}},
            {"entity": {"reference": "https://ehr.example/fhir/Patient/pat-00000004"}},
            {"entity": {"reference": "urn:uuid:pat-00000005", "type": "Device"}}]}),
    )
    .await
    .unwrap();
    let status = kick_off(&env, "/Group/g2/$export?_type=Patient").await;
    let a = complete(&env, &status).await;
    let files = download(&a.body, "output").await;
    assert_eq!(
        ids(&files["Patient"]),
        ["pat-00000003", "pat-00000004"].map(String::from).into()
    );

    // An unknown Group: 404 with an OperationOutcome.
    let a = request(&env, "GET", "/Group/nope/$export", FHIR, None, &admin()).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn refusals_are_400_operation_outcomes_and_lenient_handling_names_what_it_ignored() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 10, 7).await;
    for (path, headers, why) in [
        ("/$export?_outputFormat=text/csv", FHIR, "_outputFormat"),
        ("/$export?_type=Patient,Nope", FHIR, "Nope"),
        ("/$export?_since=yesterday", FHIR, "instant"),
        ("/$export?_since=2999-01-01T00:00:00Z", FHIR, "future"),
        (
            "/$export?_typeFilter=Patient%3F_sort%3Dname",
            FHIR,
            "_typeFilter",
        ),
        (
            "/$export?includeAssociatedData=_custom",
            FHIR,
            "includeAssociatedData",
        ),
        ("/$export?patient=Patient/1", FHIR, "system-level"),
        ("/$export?_elements=name.family", FHIR, "root elements"),
        ("/Patient/$export?_type=Organization", FHIR, "compartment"),
        (
            "/$export",
            &[("accept", "application/xml"), ("prefer", "respond-async")][..],
            "Accept",
        ),
        (
            "/$export",
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-sync"),
            ][..],
            "respond-async",
        ),
    ] {
        let a = request(&env, "GET", path, headers, None, &admin()).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/fhir+json", "{path}");
        assert_eq!(a.body["resourceType"], "OperationOutcome");
        let d = a.body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(d.contains(why), "{path}: {d}");
    }
    // Missing headers are refused too (export_stu3.rs checks every level).
    let a = request(&env, "GET", "/$export?_type=Patient", &[], None, &admin()).await;
    assert_eq!(a.status, 400, "{}", a.body);
    // Lenient: unsupported parameters are ignored and named in the error file.
    let a = request(
        &env,
        "GET",
        "/$export?_type=Patient,Nope&_typeFilter=Patient%3F_sort%3Dname",
        &[
            ("accept", "application/fhir+json"),
            ("prefer", "respond-async, handling=lenient"),
        ],
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let status = a.headers["content-location"]
        .to_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:8080")
        .to_string();
    let a = complete(&env, &status).await;
    assert_eq!(download(&a.body, "output").await["Patient"].len(), 10);
    let errors = http_get(a.body["error"][0]["url"].as_str().unwrap()).await;
    let text = String::from_utf8(errors.body).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let o: Value = serde_json::from_str(line).unwrap();
        assert_eq!(o["resourceType"], "OperationOutcome");
    }
    assert!(text.contains("Nope") && text.contains("_typeFilter"));
}

#[tokio::test]
async fn elements_project_with_a_subsetted_tag_and_since_reports_deletions() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 50, 8).await;
    let status = kick_off(
        &env,
        "/$export?_type=Observation&_elements=effectiveDateTime,Patient.name",
    )
    .await;
    let a = complete(&env, &status).await;
    let files = download(&a.body, "output").await;
    for line in &files["Observation"] {
        let o: Value = serde_json::from_str(line).unwrap();
        let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        // Asked for, plus what FHIR requires of an Observation (status, code).
        assert_eq!(
            keys,
            [
                "code",
                "effectiveDateTime",
                "id",
                "meta",
                "resourceType",
                "status"
            ]
            .into(),
            "{line}"
        );
        assert_eq!(
            o["meta"]["tag"].as_array().unwrap().last().unwrap()["code"],
            "SUBSETTED"
        );
    }

    // _since: changed rows, and the deleted ones as DELETE entries.
    let before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let obs = ResourceType::parse("Observation").unwrap();
    env.db
        .upsert(
            &obs,
            "obs-00000003",
            &json!({"status": "amended", "code": {}}),
        )
        .await
        .unwrap();
    assert!(env.db.delete(&obs, "obs-00000004").await.unwrap());
    assert!(env.db.delete(&obs, "obs-00000005").await.unwrap());
    env.db
        .upsert(
            &obs,
            "obs-00000005",
            &json!({"status": "final", "code": {}}),
        )
        .await
        .unwrap();
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let status = kick_off(
        &env,
        &format!(
            "/$export?_type=Observation&_since={}",
            since.replace('+', "%2B")
        ),
    )
    .await;
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    let ids: BTreeSet<String> = files["Observation"]
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        ["obs-00000003", "obs-00000005"].map(String::from).into()
    );
    let deleted = download(&a.body, "deleted").await;
    assert_eq!(deleted["Bundle"].len(), 1, "{:?}", deleted);
    let bundle: Value = serde_json::from_str(&deleted["Bundle"][0]).unwrap();
    assert_eq!(bundle["type"], "transaction");
    assert_eq!(
        bundle["entry"][0]["request"],
        json!({"method": "DELETE", "url": "Observation/obs-00000004"})
    );
}

#[tokio::test]
async fn cancel_stops_and_removes_files_and_only_the_owner_sees_an_export() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 30, 9).await;
    // Another client with its policy.
    request(&env, "PUT", "/", &[("content-type", "application/json")], Some(json!([
        {"resourceType": "Client", "id": "other", "secret": "pw"},
        {"resourceType": "AccessPolicy", "id": "other", "engine": "allow", "link": [{"id": "other", "resourceType": "Client"}]}])), &admin()).await;
    let other = basic("other", "pw");

    // Complete, then deleted: its files are gone and the status is 404.
    let status = kick_off(&env, "/$export").await;
    assert_eq!(
        request(&env, "GET", &status, &[], None, &other)
            .await
            .status,
        404
    );
    assert_eq!(
        request(&env, "DELETE", &status, &[], None, &other)
            .await
            .status,
        404
    );
    let a = complete(&env, &status).await;
    let url = a.body["output"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(http_get(&url).await.status, 200);
    let d = request(&env, "DELETE", &status, &[], None, &admin()).await;
    assert_eq!(d.status, 202, "{}", d.body);
    let g = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(g.status, 404);
    assert_eq!(g.body["resourceType"], "OperationOutcome");
    assert_eq!(http_get(&url).await.status, 404, "the file was removed");

    // Cancelled before any worker ran: the workers find nothing to do.
    let status = kick_off(&env, "/$export").await;
    assert_eq!(
        request(&env, "DELETE", &status, &[], None, &admin())
            .await
            .status,
        202
    );
    drain_exports(&env).await;
    assert_eq!(
        request(&env, "GET", &status, &[], None, &admin())
            .await
            .status,
        404
    );
    assert_eq!(
        request(&env, "DELETE", &status, &[], None, &admin())
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn polling_too_often_gets_429_and_metadata_describes_the_operations() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_MIN_POLL_MS", "5000")
    })
    .await;
    load(&env, "Patient", 5, 10).await;
    let status = kick_off(&env, "/$export").await;
    assert_eq!(
        request(&env, "GET", &status, &[], None, &admin())
            .await
            .status,
        202
    );
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.body["resourceType"], "OperationOutcome");

    let m = request(&env, "GET", "/metadata", &[], None, "Basic bm9uZQ==").await;
    assert_eq!(m.status, 200, "no credentials needed");
    assert_eq!(m.body["resourceType"], "CapabilityStatement");
    assert_eq!(
        m.body["instantiates"][0],
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    );
    let text = m.body.to_string();
    for op in [
        "OperationDefinition/export",
        "OperationDefinition/patient-export",
        "OperationDefinition/group-export",
    ] {
        assert!(text.contains(op), "{op}");
    }
}

/// Runs one export task message by hand with `options`, deadline `budget` away.
async fn run_task_message(env: &Env, options: TaskOptions, budget: Duration) -> usize {
    let worker = siphon::workers::ExportWorker::new(
        env.db.clone(),
        env.export_queue.clone(),
        env.exporter.sink.clone(),
        options,
        5,
    );
    siphon_local::poll_export_queue(
        &worker,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        budget,
    )
    .await
}

fn five_mib_parts() -> TaskOptions {
    TaskOptions {
        part_bytes: 5 << 20,
        ..TaskOptions::default()
    }
}

#[tokio::test]
async fn a_task_hands_over_before_its_deadline_and_the_next_invocation_finishes_exactly() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 11).await; // ~25 MB: several 5 MiB parts
    let status = kick_off(&env, "/$export?_type=Observation").await;
    // The deadline is 30 s away, the task's margin is 30 s: every invocation hands over
    // after its first committed part.
    let mut invocations = 0;
    let start = Instant::now();
    while run_task_message(&env, five_mib_parts(), Duration::from_secs(30)).await > 0 {
        invocations += 1;
        assert!(start.elapsed() < Duration::from_secs(120));
    }
    // ~18 MB in 5 MiB parts: 3 parts handed over, then the rest and the completion.
    assert!(invocations >= 4, "{invocations} invocations");
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    assert_eq!(files["Observation"].len(), 20_000);
    assert_eq!(
        sorted(files["Observation"].clone()),
        dumped(&env, "Observation").await
    );
}

#[tokio::test]
async fn a_redelivered_message_of_a_task_that_got_further_is_swapped_for_a_fresh_one() {
    // The receive count is the queue's guard against a task that kills its worker at the
    // same place every time. A message received again after its task got further (its
    // last worker moved it on, then died or handed over) starts a fresh count instead;
    // one received again after a worker that got nowhere keeps counting.
    use siphon::workers::runtime::{Delivery, Disposition, Job};
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 16).await; // ~25 MB: several 5 MiB parts
    let status = kick_off(&env, "/$export?_type=Observation").await;
    let task_id = format!("{}/0", status.rsplit('/').next().unwrap());
    // One invocation commits a part, then hands over (deadline 30 s, margin 30 s).
    assert_eq!(
        run_task_message(&env, five_mib_parts(), Duration::from_secs(30)).await,
        1
    );
    let worker = siphon::workers::ExportWorker::new(
        env.db.clone(),
        env.export_queue.clone(),
        env.exporter.sink.clone(),
        five_mib_parts(),
        5,
    );
    let message = siphon::exporting::ExportMessage {
        task: task_id.clone(),
        store: Default::default(),
    };
    let delivery = |receives| Delivery {
        receipt: None,
        receives,
        deadline: Instant::now() + Duration::from_secs(300),
    };
    match worker.run(&message, delivery(2)).await {
        Disposition::Requeue { delay: None, why } => assert!(why.contains("continue"), "{why}"),
        other => panic!("a second receive after progress: a fresh message, not {other:?}"),
    }
    // The swap gave the lease back at once and moved nothing: received a second time
    // again, the message is now worked on, to the end.
    match worker.run(&message, delivery(2)).await {
        Disposition::Done => {}
        other => panic!("a second receive after no progress works: {other:?}"),
    }
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    assert_eq!(
        sorted(files["Observation"].clone()),
        dumped(&env, "Observation").await,
        "every row once"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_upload_is_redelivered_by_the_sweep_and_a_duplicate_delivery_changes_nothing(
) {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 12).await;
    let status = kick_off(&env, "/$export?_type=Observation").await;
    let task_id = format!("{}/0", status.rsplit('/').next().unwrap());
    // The same task delivered twice.
    siphon::queue::send(
        &*env.export_queue,
        &[siphon::exporting::ExportMessage {
            task: task_id.clone(),
            store: Default::default(),
        }],
        None,
    )
    .await
    .unwrap();
    let short = TaskOptions {
        lease: Duration::from_millis(1500),
        heartbeat: Duration::from_millis(300),
        ..five_mib_parts()
    };
    // Two workers at once: one works, the other finds it busy.
    let (a, b) = {
        let e = &env;
        let s = short.clone();
        let worker = siphon::workers::ExportWorker::new(
            e.db.clone(),
            e.export_queue.clone(),
            e.exporter.sink.clone(),
            s.clone(),
            5,
        );
        let worker2 = siphon::workers::ExportWorker::new(
            e.db.clone(),
            e.export_queue.clone(),
            e.exporter.sink.clone(),
            s,
            5,
        );
        let q = e.export_queue.clone();
        let doomed = tokio::spawn(async move {
            siphon_local::poll_export_queue(
                &worker,
                q.client(),
                q.url(),
                1,
                Duration::from_secs(900),
            )
            .await
        });
        // Wait for the first part to be committed, then kill the worker.
        let c = connect(&e.db).await;
        let start = Instant::now();
        loop {
            let parts: i64 = c
                .query_one("SELECT coalesce(jsonb_array_length(checkpoint->'file'->'parts'), 0)::bigint FROM siphon_export_task WHERE id = $1", &[&task_id])
                .await
                .unwrap()
                .get(0);
            if parts >= 1 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no part committed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let q = e.export_queue.clone();
        let second = siphon_local::poll_export_queue(
            &worker2,
            q.client(),
            q.url(),
            1,
            Duration::from_secs(900),
        )
        .await;
        doomed.abort();
        (second, 0)
    };
    assert_eq!((a, b), (1, 0), "the duplicate was received and backed off");
    // The dead worker's lease runs out; the sweep makes its message visible again.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let sweeper = siphon::sweep::Sweeper::new(
        env.db.clone(),
        env.queue.clone(),
        siphon::sweep::SweepOptions {
            grace: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .with_export_queue(env.export_queue.clone());
    let report = sweeper.pass().await.unwrap();
    assert_eq!(report.export_tasks, 1, "{report:?}");
    let a = complete(&env, &status).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    assert_eq!(files["Observation"].len(), 20_000);
    assert_eq!(
        sorted(files["Observation"].clone()),
        dumped(&env, "Observation").await
    );
    // One file: the duplicate wrote nothing of its own.
    assert_eq!(a.body["output"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_task_whose_workers_keep_dying_before_a_part_ends_the_export_in_error_not_in_a_loop() {
    // Workers that die right after claiming the task (out of memory on its first rows,
    // say), one after another: the sweep delivers it again twice, then gives up.
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 2_000, 14).await;
    let status = kick_off(&env, "/$export?_type=Observation").await;
    let task_id = format!("{}/0", status.rsplit('/').next().unwrap());
    let sweeper = siphon::sweep::Sweeper::new(
        env.db.clone(),
        env.queue.clone(),
        siphon::sweep::SweepOptions {
            grace: Duration::from_millis(100),
            give_up_after: 3,
            give_up_stuck: Duration::ZERO,
            ..Default::default()
        },
    )
    .with_export_queue(env.export_queue.clone());
    let mut first_since = None;
    for death in 1..=3u32 {
        // A worker claims the task, as a run does, and dies: its lease is never renewed.
        let claim = env
            .db
            .claim_export_task(&task_id, &format!("doomed-{death}"), 0.3, None)
            .await
            .unwrap();
        assert!(
            matches!(claim, siphon::lease::Claim::Held { .. }),
            "death {death}"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let report = sweeper.pass().await.unwrap();
        let expected = if death < 3 { (1, 0) } else { (0, 1) };
        assert_eq!(
            (report.export_tasks, report.export_tasks_given_up),
            expected,
            "death {death}: {report:?}"
        );
        // Stuck since the first dead worker's claim, however many follow.
        let (barren, since): (Option<i32>, Option<String>) = {
            let c = connect(&env.db).await;
            let r = c
                .query_one(
                    "SELECT (recovery->>'barren')::int, recovery->>'stuck_since' FROM siphon_export_task WHERE id = $1",
                    &[&task_id],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        if death < 3 {
            assert_eq!(barren, Some(death as i32));
            assert!(since.is_some());
            if death == 1 {
                first_since = since;
            } else {
                assert_eq!(since, first_since);
            }
        }
    }
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(
        a.body.to_string().contains("3 workers in a row"),
        "{}",
        a.body
    );
    // Nothing left to sweep; the messages the sweep queued find the task ended.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sweeper.pass().await.unwrap(), Default::default());
    drain_exports(&env).await;
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 500, "{}", a.body);
}

#[tokio::test]
async fn rows_updated_during_an_export_appear_exactly_once() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 6_000, 13).await;
    let status = kick_off(&env, "/$export?_type=Observation").await;
    let db = env.db.clone();
    let writer = tokio::spawn(async move {
        let obs = ResourceType::parse("Observation").unwrap();
        let mut n = 0u64;
        loop {
            let id = gen::id_of("Observation", (n * 7919) % 6000);
            db.upsert(
                &obs,
                &id,
                &json!({"status": "amended", "code": {}, "note": [{"text": n.to_string()}]}),
            )
            .await
            .unwrap();
            n += 1;
            tokio::task::yield_now().await;
        }
    });
    let a = complete(&env, &status).await;
    writer.abort();
    assert_eq!(a.status, 200, "{}", a.body);
    let files = download(&a.body, "output").await;
    let lines = &files["Observation"];
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(lines.len(), 6_000);
    assert_eq!(ids.len(), 6_000);
}

#[tokio::test]
async fn a_cancel_mid_export_stops_the_worker_aborts_its_upload_and_leaves_no_object() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Observation", 20_000, 14).await;
    let status = kick_off(&env, "/$export?_type=Observation").await;
    let export_id = status.rsplit('/').next().unwrap().to_string();
    // A worker writing 5 MiB parts, throttled by a slow store: cancel lands mid-file.
    let sink = Arc::new(SlowSink(env.exporter.sink.clone()));
    let worker = siphon::workers::ExportWorker::new(
        env.db.clone(),
        env.export_queue.clone(),
        sink,
        five_mib_parts(),
        5,
    );
    let q = env.export_queue.clone();
    let running = tokio::spawn(async move {
        siphon_local::poll_export_queue(&worker, q.client(), q.url(), 1, Duration::from_secs(900))
            .await
    });
    let c = connect(&env.db).await;
    let start = Instant::now();
    loop {
        let parts: i64 = c
            .query_one("SELECT coalesce(jsonb_array_length(checkpoint->'file'->'parts'), 0)::bigint FROM siphon_export_task WHERE export_id = $1", &[&export_id])
            .await
            .unwrap()
            .get(0);
        if parts >= 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no part committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        request(&env, "DELETE", &status, &[], None, &admin())
            .await
            .status,
        202
    );
    let stopped = Instant::now();
    assert_eq!(running.await.unwrap(), 1);
    println!(
        "the worker stopped {:.2} s after the cancel",
        stopped.elapsed().as_secs_f64()
    );
    let task_status: String = c
        .query_one(
            "SELECT status FROM siphon_export_task WHERE export_id = $1",
            &[&export_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(task_status, "cancelled");
    let s3 = siphon_tests::s3().await;
    let bucket = siphon_tests::var("SIPHON_EXPORT_BUCKET");
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("{export_id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "{:?}", listed.contents());
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .prefix(format!("{export_id}/"))
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    assert_eq!(
        request(&env, "GET", &status, &[], None, &admin())
            .await
            .status,
        404
    );
}

/// A store that takes 300 ms per part (so a cancel arrives while a file is open).
struct SlowSink(Arc<dyn siphon::sinks::ObjectSink>);

impl siphon::sinks::ObjectSink for SlowSink {
    fn put<'a>(
        &'a self,
        key: &'a str,
        meta: &'a siphon::sinks::ObjectMeta,
        bytes: bytes::Bytes,
    ) -> futures::future::BoxFuture<'a, Result<(), siphon::sinks::SinkError>> {
        self.0.put(key, meta, bytes)
    }
    fn start_upload<'a>(
        &'a self,
        key: &'a str,
        meta: &'a siphon::sinks::ObjectMeta,
    ) -> futures::future::BoxFuture<'a, Result<String, siphon::sinks::SinkError>> {
        self.0.start_upload(key, meta)
    }
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        bytes: bytes::Bytes,
    ) -> futures::future::BoxFuture<'a, Result<siphon::sinks::Part, siphon::sinks::SinkError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.0.upload_part(key, upload_id, number, bytes).await
        })
    }
    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [siphon::sinks::Part],
    ) -> futures::future::BoxFuture<'a, Result<(), siphon::sinks::SinkError>> {
        self.0.complete_upload(key, upload_id, parts)
    }
    fn abort_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), siphon::sinks::SinkError>> {
        self.0.abort_upload(key, upload_id)
    }
    fn size<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<u64>, siphon::sinks::SinkError>> {
        self.0.size(key)
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), siphon::sinks::SinkError>> {
        self.0.delete(key)
    }
    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> futures::future::BoxFuture<'a, Result<String, siphon::sinks::SinkError>> {
        self.0.presign_get(key, ttl)
    }
}
