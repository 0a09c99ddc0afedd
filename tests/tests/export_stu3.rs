//! FHIR Bulk Data `$export` as the IG's STU3 and SMART's Bulk Data tester check it, end
//! to end in process (the API, the export queue and worker, Postgres, LocalStack S3):
//! what a client sees in status codes, headers, OperationOutcomes, manifests and files.

mod api_harness;
mod export_harness;

use api_harness::{admin, setup, setup_with, Env};
use export_harness::{complete, download, kick_off, load, request, status_path, Answer, FHIR};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;
use siphon::ResourceType;
use siphon_tests::http_get;

/// The diagnostics of an OperationOutcome answer, checking that it is one.
fn diagnostics(a: &Answer) -> String {
    assert_eq!(a.body["resourceType"], "OperationOutcome", "{}", a.body);
    a.body["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["diagnostics"].as_str().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn group(env: &Env, id: &str, members: &[&str]) {
    let member: Vec<Value> = members
        .iter()
        .map(|m| json!({"entity": {"reference": format!("Patient/{m}")}}))
        .collect();
    env.db
        .upsert(
            &ResourceType::parse("Group").unwrap(),
            id,
            &json!({"type": "person", "actual": true, "member": member}),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_kick_off_without_accept_or_respond_async_is_400_at_every_level() {
    let env = setup(LoadOptions::default()).await;
    let parameters = json!({"resourceType": "Parameters", "parameter": []});
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("prefer", "respond-async")], "Accept header is required"),
        (
            &[("accept", "application/json"), ("prefer", "respond-async")],
            "Accept \"application/json\" is not supported",
        ),
        (
            &[("accept", "application/fhir+json")],
            "Prefer header is required",
        ),
        (
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-sync"),
            ],
            "send Prefer: respond-async",
        ),
        (
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "handling=lenient"),
            ],
            "send Prefer: respond-async",
        ),
    ];
    for path in ["/$export", "/Patient/$export", "/Group/g1/$export"] {
        for (headers, why) in cases {
            for post in [false, true] {
                let (method, body) = if post {
                    ("POST", Some(parameters.clone()))
                } else {
                    ("GET", None)
                };
                let a = request(&env, method, path, headers, body, &admin()).await;
                assert_eq!(a.status, 400, "{method} {path} {headers:?}: {}", a.body);
                assert_eq!(a.headers["content-type"], "application/fhir+json");
                let d = diagnostics(&a);
                assert!(d.contains(why), "{method} {path} {headers:?}: {d}");
                assert!(!a.headers.contains_key("content-location"));
            }
        }
    }
    // Nothing was started.
    let (s, b, _) = api_harness::call(&env, "GET", "/$export-status", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["exports"], json!([]));
}

#[tokio::test]
async fn after_delete_the_status_url_answers_404_with_an_operation_outcome_in_json() {
    // Polls closer than 5 s are throttled: a cancelled export is 404 even then.
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_MIN_POLL_MS", "5000")
    })
    .await;
    load(&env, "Patient", 5, 31).await;
    let status = kick_off(&env, "/$export").await;
    assert_eq!(
        request(&env, "GET", &status, &[], None, &admin())
            .await
            .status,
        202
    );

    // The cancel answers 202 with an OperationOutcome in JSON, as the status URL does.
    let d = request(&env, "DELETE", &status, &[], None, &admin()).await;
    assert_eq!(d.status, 202, "{}", d.body);
    assert_eq!(d.headers["content-type"], "application/json");
    assert!(diagnostics(&d).contains("cancelled"));

    // A client that asks for nothing (or application/json) gets application/json,
    // one that asks for FHIR JSON gets application/fhir+json; both an OperationOutcome.
    for (accept, media) in [
        (None, "application/json"),
        (Some("application/json"), "application/json"),
        (Some("application/fhir+json"), "application/fhir+json"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        for method in ["GET", "DELETE"] {
            let a = request(&env, method, &status, &headers, None, &admin()).await;
            assert_eq!(a.status, 404, "{method} {accept:?}: {}", a.body);
            assert_eq!(a.headers["content-type"], media, "{method} {accept:?}");
            assert_eq!(a.body["issue"][0]["code"], "not-found");
            assert!(diagnostics(&a).contains("cancelled"), "{method} {accept:?}");
        }
    }
}

#[tokio::test]
async fn lenient_handling_names_each_ignored_parameter_in_the_manifest_error_array() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 12, 32).await;
    let a = request(
        &env,
        "GET",
        "/$export?_type=Patient&_typeFilter=Patient%3Factive%3Dtrue%26_sort%3Dname&frobnicate=1",
        &[
            ("accept", "application/fhir+json"),
            ("prefer", "respond-async,handling=lenient"),
        ],
        None,
        &admin(),
    )
    .await;
    let m = complete(&env, &status_path(&a)).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(download(&m.body, "output").await["Patient"].len(), 12);

    // In the manifest itself: an OperationOutcome naming each ignored parameter ...
    let errors = m.body["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", m.body);
    let outcomes: Vec<&Value> = errors
        .iter()
        .filter(|e| e["resourceType"] == "OperationOutcome")
        .collect();
    assert_eq!(outcomes.len(), 1, "{}", m.body);
    let text = outcomes[0]["issue"].to_string();
    assert!(text.contains("_typeFilter"), "{text}");
    assert!(text.contains("frobnicate"), "{text}");
    // ... which is also a file item: type, url, count, the file holding the same.
    assert_eq!(errors[0]["type"], "OperationOutcome");
    assert_eq!(errors[0]["count"], 2);
    let file = http_get(errors[0]["url"].as_str().unwrap()).await;
    assert_eq!(file.status, 200);
    let lines: Vec<Value> = String::from_utf8(file.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|o| o["resourceType"] == "OperationOutcome"
                && o["issue"][0]["severity"] == "warning")
    );
    assert!(lines[0].to_string().contains("_typeFilter"));
    assert!(lines[1].to_string().contains("frobnicate"));

    // Without lenient handling the same request is refused, naming the parameter.
    let a = request(
        &env,
        "GET",
        "/$export?_type=Patient&frobnicate=1",
        FHIR,
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(diagnostics(&a).contains("frobnicate"));
}

#[tokio::test]
async fn include_associated_data_is_accepted_at_every_level_and_reported_as_not_applied() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 4, 33).await;
    group(&env, "g1", &["pat-00000000", "pat-00000001"]).await;
    for (path, patients) in [
        ("/$export?_type=Patient", 4),
        ("/Patient/$export?_type=Patient", 4),
        ("/Group/g1/$export?_type=Patient", 2),
    ] {
        let path = format!(
            "{path}&includeAssociatedData=LatestProvenanceResources,RelevantProvenanceResources\
             &includeAssociatedData=LatestProvenanceResources"
        );
        // No lenient handling needed: the IG's values are accepted.
        let a = request(&env, "GET", &path, FHIR, None, &admin()).await;
        let m = complete(&env, &status_path(&a)).await;
        assert_eq!(m.status, 200, "{path}: {}", m.body);
        let files = download(&m.body, "output").await;
        assert_eq!(files.keys().collect::<Vec<_>>(), ["Patient"], "{path}");
        assert_eq!(files["Patient"].len(), patients, "{path}");
        let issues = m.body["error"][0]["issue"].as_array().unwrap().clone();
        assert_eq!(issues.len(), 2, "{path}: {}", m.body);
        for (issue, value) in issues
            .iter()
            .zip(["LatestProvenanceResources", "RelevantProvenanceResources"])
        {
            assert_eq!(issue["severity"], "information");
            let d = issue["diagnostics"].as_str().unwrap();
            assert!(
                d.starts_with(&format!(
                    "includeAssociatedData {value} accepted but not applied"
                )),
                "{d}"
            );
        }
    }
    // A value the IG does not define is refused (400) without lenient handling.
    let a = request(
        &env,
        "GET",
        "/$export?includeAssociatedData=_mine",
        FHIR,
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(diagnostics(&a).contains("includeAssociatedData \"_mine\""));
}

#[tokio::test]
async fn the_capability_statement_lists_every_type_its_search_parameters_and_the_operations() {
    let env = setup(LoadOptions::default()).await;
    let m = request(&env, "GET", "/metadata", &[], None, "Basic bm9uZQ==").await;
    assert_eq!(m.status, 200, "no credentials needed");
    assert_eq!(m.headers["content-type"], "application/fhir+json");
    let rest = &m.body["rest"][0];
    let ops = |v: &Value| -> Vec<String> {
        v["operation"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ops(rest), ["export", "bulk-submit", "bulk-submit-status"]);
    let resources = rest["resource"].as_array().unwrap();
    let types: Vec<&str> = resources
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    let r4: Vec<&str> = siphon::fhir::resource_types()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(types, r4, "every R4 resource type, each once");
    for ty in ["Patient", "Condition", "Observation", "Encounter"] {
        assert!(types.contains(&ty), "{ty}");
    }
    let of = |ty: &str| resources.iter().find(|r| r["type"] == ty).unwrap();
    assert_eq!(ops(of("Patient")), ["patient-export"]);
    assert_eq!(ops(of("Group")), ["group-export"]);
    assert!(ops(of("Observation")).is_empty());
    for r in resources {
        let ty = r["type"].as_str().unwrap();
        let listed: Vec<(String, String)> = r["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let evaluated: Vec<(String, String)> = siphon::fhir::search::params_of(ty)
            .into_iter()
            .map(|(n, k)| (n.to_string(), k.as_str().to_string()))
            .collect();
        assert_eq!(listed, evaluated, "{ty}");
    }
    let observation: Vec<&str> = of("Observation")["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["_id", "_lastUpdated", "category", "code", "date", "subject"] {
        assert!(observation.contains(&p), "Observation {p}");
    }
}

#[tokio::test]
async fn until_keeps_resources_updated_at_or_before_it_and_with_since_a_window() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 6, 34).await;
    // Two Patients last updated in each of 2023, 2024 and 2025 (ids 0-1, 2-3, 4-5).
    let c = siphon_tests::connect(&env.db).await;
    for (n, ts) in [
        "2023-03-01T00:00:00Z",
        "2023-03-01T00:00:00Z",
        "2024-03-01T00:00:00Z",
        "2024-06-30T12:00:00Z",
        "2025-03-01T00:00:00Z",
        "2025-03-01T00:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        c.execute(
            "UPDATE patient SET ts = $1::text::timestamptz WHERE id = $2",
            &[ts, &siphon_tests::gen::id_of("Patient", n as u64)],
        )
        .await
        .unwrap();
    }
    let ids = |lines: &[String]| -> Vec<u64> {
        let mut v: Vec<u64> = lines
            .iter()
            .map(|l| {
                let id = serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (0..6)
                    .find(|n| siphon_tests::gen::id_of("Patient", *n) == id)
                    .unwrap()
            })
            .collect();
        v.sort();
        v
    };
    for (query, expected) in [
        // At or before: the instant itself is in.
        ("_until=2024-06-30T12:00:00Z", vec![0, 1, 2, 3]),
        ("_until=2024-06-30T11:59:59.999Z", vec![0, 1, 2]),
        (
            "_since=2024-01-01T00:00:00Z&_until=2024-12-31T23:59:59%2B00:00",
            vec![2, 3],
        ),
        ("_until=2022-01-01T00:00:00Z", vec![]),
    ] {
        let status = kick_off(&env, &format!("/$export?_type=Patient&{query}")).await;
        let m = complete(&env, &status).await;
        assert_eq!(m.status, 200, "{query}: {}", m.body);
        let files = download(&m.body, "output").await;
        let got = files.get("Patient").map(|l| ids(l)).unwrap_or_default();
        assert_eq!(got, expected, "{query}");
    }
    for (query, why) in [
        (
            "_until=2024-06-30",
            "_until \"2024-06-30\" is not a FHIR instant",
        ),
        (
            "_since=2024-02-01T00:00:00Z&_until=2024-01-01T00:00:00Z",
            "before _since",
        ),
    ] {
        let a = request(
            &env,
            "GET",
            &format!("/$export?{query}"),
            FHIR,
            None,
            &admin(),
        )
        .await;
        assert_eq!(a.status, 400, "{query}");
        assert!(
            diagnostics(&a).contains(why),
            "{query}: {}",
            diagnostics(&a)
        );
    }
}

/// An Observation with a category (of the IG's `observation-category` system), a status
/// and a LOINC code.
async fn observation(env: &Env, id: &str, category: &str, status: &str, code: &str) {
    env.db
        .upsert(
            &ResourceType::parse("Observation").unwrap(),
            id,
            &json!({
                "status": status,
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": category}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            }),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn type_filter_exports_only_the_matching_resources_of_its_type() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 5, 35).await;
    for (id, category, status, code) in [
        ("lab-final", "laboratory", "final", "1234-5"),
        ("lab-prelim", "laboratory", "preliminary", "1234-5"),
        ("lab-other-code", "laboratory", "final", "9999-9"),
        ("vitals-final", "vital-signs", "final", "8867-4"),
        ("social", "social-history", "final", "72166-2"),
    ] {
        observation(&env, id, category, status, code).await;
    }
    let exported = |files: &std::collections::BTreeMap<String, Vec<String>>, ty: &str| {
        let mut ids: Vec<String> = files
            .get(ty)
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let cat = "http://terminology.hl7.org/CodeSystem/observation-category";
    for (filters, expected) in [
        // One value: its parameters ANDed.
        (
            vec!["Observation?category=laboratory&status=final".to_string()],
            vec!["lab-final", "lab-other-code"],
        ),
        // system|code, and a comma inside a value ORs.
        (
            vec![format!(
                "Observation?category={cat}|vital-signs,{cat}|social-history"
            )],
            vec!["social", "vitals-final"],
        ),
        // Two values for one type: ORed.
        (
            vec![
                "Observation?code=1234-5&status=preliminary".into(),
                "Observation?category=vital-signs".into(),
            ],
            vec!["lab-prelim", "vitals-final"],
        ),
        // :not, and a system that is not the category's matches nothing.
        (
            vec!["Observation?category:not=laboratory".into()],
            vec!["social", "vitals-final"],
        ),
        (
            vec!["Observation?category=http://example.org|laboratory".into()],
            vec![],
        ),
    ] {
        let query: String = filters
            .iter()
            .map(|f| format!("&_typeFilter={}", urlencode(f)))
            .collect();
        let status = kick_off(&env, &format!("/$export?_type=Observation,Patient{query}")).await;
        let m = complete(&env, &status).await;
        assert_eq!(m.status, 200, "{filters:?}: {}", m.body);
        let files = download(&m.body, "output").await;
        assert_eq!(exported(&files, "Observation"), expected, "{filters:?}");
        // A type without a filter is exported whole.
        assert_eq!(exported(&files, "Patient").len(), 5, "{filters:?}");
    }
    // What siphon does not evaluate is a 400 naming it, before anything is exported.
    for (filter, named) in [
        ("Observation?category=laboratory&_sort=date", "_sort"),
        ("Observation?subject.name=x", "subject.name"),
        ("Observation?frobnicate=1", "frobnicate"),
        ("Nope?x=1", "Nope"),
    ] {
        let a = request(
            &env,
            "GET",
            &format!("/$export?_typeFilter={}", urlencode(filter)),
            FHIR,
            None,
            &admin(),
        )
        .await;
        assert_eq!(a.status, 400, "{filter}: {}", a.body);
        let d = diagnostics(&a);
        assert!(
            d.contains("_typeFilter") && d.contains(named),
            "{filter}: {d}"
        );
    }
}

/// A query parameter's value, form-encoded.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_client_over_its_concurrent_export_cap_gets_429_with_retry_after() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_MAX_ACTIVE", "2")
    })
    .await;
    let (s, b, _) = api_harness::call(
        &env,
        "PUT",
        "/",
        Some(json!([
            {"resourceType": "Client", "id": "other", "secret": "so"},
            {"resourceType": "AccessPolicy", "id": "other", "scope": "system/*.rs",
             "link": [{"id": "other", "resourceType": "Client"}]}
        ])),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    load(&env, "Patient", 5, 41).await;

    // No worker runs: the first two stay active; the third is refused, and nothing of
    // it is created.
    let first = kick_off(&env, "/$export").await;
    kick_off(&env, "/Patient/$export").await;
    let refused = request(&env, "GET", "/$export?_type=Patient", FHIR, None, &admin()).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "30");
    assert!(!refused.headers.contains_key("content-location"));
    let d = diagnostics(&refused);
    assert!(d.contains("already has 2 exports running"), "{d}");
    let (_, listed, _) = api_harness::call(&env, "GET", "/$export-status", None).await;
    assert_eq!(listed["exports"].as_array().unwrap().len(), 2, "{listed}");

    // The cap is per client: another client still starts one.
    let other = api_harness::basic("other", "so");
    let theirs = request(&env, "GET", "/$export?_type=Patient", FHIR, None, &other).await;
    assert_eq!(theirs.status, 202, "{}", theirs.body);

    // A cancelled export no longer counts; nor does a completed one.
    let d = request(&env, "DELETE", &first, &[], None, &admin()).await;
    assert_eq!(d.status, 202, "{}", d.body);
    let third = kick_off(&env, "/$export?_type=Patient").await;
    let again = request(&env, "GET", "/$export", FHIR, None, &admin()).await;
    assert_eq!(again.status, 429, "{}", again.body);
    assert_eq!(complete(&env, &third).await.status, 200);
    kick_off(&env, "/$export").await;
}

/// A manifest page's files: (URL without its signature, count).
fn page_files(page: &Value) -> Vec<(String, u64)> {
    page["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let url = o["url"].as_str().unwrap();
            (
                url.split('?').next().unwrap().to_string(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The path of a page's `next` link, if it has one.
fn next_page(page: &Value) -> Option<String> {
    let link = page
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?;
    let url = link["url"].as_str().unwrap();
    Some(url.trim_start_matches("http://127.0.0.1:8080").to_string())
}

/// Every page from the status answer `first` on, following `next` links.
async fn pages_from(env: &Env, first: Value) -> Vec<Value> {
    let mut pages = vec![first];
    while let Some(path) = next_page(pages.last().unwrap()) {
        assert!(path.contains("?page="), "{path}");
        let a = request(env, "GET", &path, &[], None, &admin()).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        pages.push(a.body);
        assert!(pages.len() < 100, "a link loop");
    }
    pages
}

#[tokio::test]
async fn partial_manifests_show_finished_files_mid_export_on_pages_that_never_change() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_RANGE_ROWS", "300")
            .with("SIPHON_EXPORT_FILE_MAX_RESOURCES", "100")
            .with("SIPHON_EXPORT_PAGE_FILES", "2")
            .with("SIPHON_EXPORT_MIN_POLL_MS", "0")
    })
    .await;
    load(&env, "Observation", 900, 31).await;
    let status = kick_off(
        &env,
        "/$export?_type=Observation&allowPartialManifests=true",
    )
    .await;
    // Nothing has finished: 202 without a manifest.
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!((a.status, &a.body), (202, &json!("")), "{}", a.body);
    // One task (an id range of about 300 rows, files of 100) runs to its end.
    let ran = siphon_local::poll_export_queue(
        &env.exporter,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        std::time::Duration::from_secs(900),
    )
    .await;
    assert_eq!(ran, 1);
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(
        a.status, 202,
        "running, with the files finished so far: {}",
        a.body
    );
    assert!(a.headers.contains_key("x-progress"));
    assert_eq!(a.headers["content-type"], "application/json");
    let mid = pages_from(&env, a.body).await;
    let mid_files: Vec<Vec<(String, u64)>> = mid.iter().map(page_files).collect();
    assert_eq!(mid_files[0].len(), 2, "{mid_files:?}");
    assert!(mid_files.iter().all(|p| !p.is_empty() && p.len() <= 2));
    let mid_rows: u64 = mid_files.iter().flatten().map(|f| f.1).sum();
    assert!(
        (250..=350).contains(&mid_rows),
        "one range's rows: {mid_rows}"
    );
    // The rest runs; the status answers 200 with the first page, and every page returned
    // before is as it was (a link may have been added), the new files on new pages.
    api_harness::drain_exports(&env).await;
    let done = complete(&env, &status).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let pages = pages_from(&env, done.body).await;
    let files: Vec<Vec<(String, u64)>> = pages.iter().map(page_files).collect();
    assert_eq!(
        &files[..mid_files.len()],
        &mid_files[..],
        "pages never change"
    );
    assert!(files.len() > mid_files.len(), "later files on new pages");
    assert!(files.iter().all(|p| !p.is_empty() && p.len() <= 2));
    let mut ids = std::collections::BTreeSet::new();
    for page in &pages {
        for line in download(page, "output")
            .await
            .remove("Observation")
            .unwrap_or_default()
        {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_string()),
                "once: {line}"
            );
        }
    }
    assert_eq!(ids.len(), 900, "every resource, on exactly one page");
    // Pages that do not exist, or are not numbers.
    let id = status.rsplit('/').next().unwrap();
    let a = request(
        &env,
        "GET",
        &format!("/$export-status/{id}?page=99"),
        &[],
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);
    let a = request(
        &env,
        "GET",
        &format!("/$export-status/{id}?page=two"),
        &[],
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
}

#[tokio::test]
async fn allow_partial_manifests_must_be_a_boolean() {
    let env = setup(LoadOptions::default()).await;
    let a = request(
        &env,
        "GET",
        "/$export?allowPartialManifests=yes",
        FHIR,
        None,
        &admin(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        diagnostics(&a).contains("allowPartialManifests"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn separate_export_status_answers_200_with_the_export_status_in_x_export_status() {
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_MIN_POLL_MS", "0")
    })
    .await;
    load(&env, "Patient", 5, 31).await;
    let prefer = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async, separate-export-status"),
    ];
    let a = request(&env, "GET", "/$export", &prefer, None, &admin()).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(
        a.headers["preference-applied"],
        "respond-async, separate-export-status"
    );
    let status = status_path(&a);
    // Running: the status request itself succeeded (200); the export is still 202.
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["x-export-status"], "202");
    assert!(a.headers.contains_key("x-progress"));
    // Complete: 200 and X-Export-Status 200, the manifest as the body.
    let done = complete(&env, &status).await;
    assert_eq!(done.status, 200);
    let done = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(
        (
            done.status,
            done.headers["x-export-status"].to_str().unwrap()
        ),
        (200, "200"),
        "{}",
        done.body
    );
    assert_eq!(done.body["output"][0]["type"], "Patient", "{}", done.body);
    // Without the preference nothing changes: 202 while running, no X-Export-Status.
    let a = request(&env, "GET", "/$export", FHIR, None, &admin()).await;
    assert!(!a.headers.contains_key("preference-applied"));
    let status = status_path(&a);
    let a = request(&env, "GET", &status, &[], None, &admin()).await;
    assert_eq!(a.status, 202);
    assert!(!a.headers.contains_key("x-export-status"));
}
