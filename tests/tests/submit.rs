//! `$bulk-submit` and `$bulk-submit-status` (Bulk Data IG 4.0.0): siphon as the Data
//! Consumer of manifests served by Data Providers on 127.0.0.1 (`bulk_remote`), end to
//! end through the API, the export workers (reading the manifests) and the loader,
//! against real Postgres and LocalStack.

mod api_harness;
mod bulk_remote;

use std::collections::HashMap;

use api_harness::{call, Env};
use bulk_remote::{Remote, Script};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;

/// The API and workers, with the providers' `host:port`s allow-listed.
async fn setup(remotes: &[&Remote]) -> Env {
    let mut allow = vec!["127.0.0.1:4566".to_string()];
    allow.extend(remotes.iter().map(|r| r.addr.to_string()));
    let allow = allow.join(",");
    api_harness::setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
    })
    .await
}

/// A provider serving one manifest (`/manifest/0`, its pages linked) of these files.
async fn provider(
    pages: Vec<Vec<(&'static str, &'static str)>>,
    files: &[(&'static str, String)],
) -> Remote {
    Remote::start(Script {
        pages,
        files: files.iter().cloned().collect::<HashMap<_, _>>(),
        ..Script::default()
    })
    .await
}

fn manifest_url(r: &Remote) -> String {
    format!("http://{}/manifest/0", r.addr)
}

fn lines(ty: &str, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            json!({"resourceType": ty, "id": id, "meta": {"versionId": "7"}}).to_string() + "\n"
        })
        .collect()
}

fn submission(id: &str, extra: Value) -> Value {
    let mut p = vec![
        json!({"name": "submitter", "valueIdentifier": {"system": "http://example.org/providers", "value": "provider-a"}}),
        json!({"name": "submissionId", "valueString": id}),
    ];
    p.extend(extra.as_array().cloned().unwrap_or_default());
    json!({"resourceType": "Parameters", "parameter": p})
}

fn manifest(url: &str) -> Value {
    json!([{"name": "manifestUrl", "valueUrl": url},
           {"name": "fhirBaseUrl", "valueUrl": "http://provider.example/fhir"}])
}

fn status(code: &str) -> Value {
    json!({"name": "submissionStatus", "valueCoding": {"system": "http://hl7.org/fhir/event-status", "code": code}})
}

async fn submit(env: &Env, body: Value) -> (u16, Value) {
    let (s, b, _) = Box::pin(call(env, "POST", "/$bulk-submit", Some(body))).await;
    (s, b)
}

/// One round of the workers: a receive of the export queue, then of the load queue.
async fn round(env: &Env) {
    Box::pin(siphon_local::poll_export_queue(
        &env.exporter,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        std::time::Duration::from_secs(900),
    ))
    .await;
    Box::pin(siphon_local::poll_load_queue(
        &env.worker,
        env.queue.client(),
        env.queue.url(),
        10,
        0,
    ))
    .await;
}

async fn ids(env: &Env, table: &str) -> Vec<String> {
    if api_harness::count(&env.db, table).await == 0 {
        return Vec::new();
    }
    siphon_tests::connect(&env.db)
        .await
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Runs the workers until `ids(table)` is `want` (at most 90 rounds).
async fn until_rows(env: &Env, table: &str, want: &[&str]) {
    for _ in 0..90 {
        if ids(env, table).await == want {
            return;
        }
        round(env).await;
    }
    panic!("{table}: {:?}, wanted {want:?}", ids(env, table).await);
}

/// Polls the submission's status URL (running the workers) until it answers 200.
async fn final_status(env: &Env, id: &str) -> Value {
    let (s, b, h) = call(
        env,
        "POST",
        "/$bulk-submit-status",
        Some(submission(id, json!([]))),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let location = h["content-location"].to_str().unwrap().to_string();
    let path = location[location.find("/$bulk-submit-status/").unwrap()..].to_string();
    for _ in 0..90 {
        let (s, b, h) = call(env, "GET", &path, None).await;
        if s == 200 {
            return b;
        }
        assert_eq!(s, 202, "{b}");
        assert!(h.contains_key("x-progress"));
        round(env).await;
    }
    panic!("submission {id} did not end");
}

async fn outcome_file(env: &Env, url: &str) -> String {
    let path = &url[url.find("/$bulk-submit-status/").unwrap()..];
    let (s, b, _) = call(env, "GET", path, None).await;
    assert_eq!(s, 200, "{b}");
    // One line parses as JSON; more stay text.
    match b {
        Value::String(text) => text,
        one => one.to_string(),
    }
}

#[tokio::test]
async fn a_submission_loads_its_manifests_replaces_one_and_reports_each() {
    Box::pin(life_cycle()).await
}

/// The body of the test above (boxed: its future is large).
async fn life_cycle() {
    // Provider manifests: A (two pages, Patients and Observations), B (Patients, one
    // line invalid), C (replaces B).
    let a = provider(
        vec![
            vec![("Patient", "pa.ndjson")],
            vec![("Observation", "oa.ndjson")],
        ],
        &[
            ("pa.ndjson", lines("Patient", &["a1", "a2"])),
            ("oa.ndjson", lines("Observation", &["o1"])),
        ],
    )
    .await;
    let b = provider(
        vec![vec![("Patient", "pb.ndjson")]],
        &[("pb.ndjson", lines("Patient", &["b1", "b2"]) + "{not json\n")],
    )
    .await;
    let c = provider(
        vec![vec![("Patient", "pc.ndjson")]],
        &[("pc.ndjson", lines("Patient", &["c1"]))],
    )
    .await;
    let env = setup(&[&a, &b, &c]).await;

    let (s, answer) = submit(&env, submission("s-1", manifest(&manifest_url(&a)))).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["resourceType"], "OperationOutcome");
    // The IG: one submission of a submitter at a time.
    let (s, answer) = submit(&env, submission("s-2", manifest(&manifest_url(&c)))).await;
    assert_eq!(s, 429, "{answer}");
    assert!(answer.to_string().contains("s-1"), "{answer}");
    let (s, answer) = submit(&env, submission("s-1", manifest(&manifest_url(&b)))).await;
    assert_eq!(s, 200, "{answer}");
    // The same manifest again (a retried request) adds nothing.
    let (s, answer) = submit(&env, submission("s-1", manifest(&manifest_url(&b)))).await;
    assert_eq!(s, 200, "{answer}");
    assert!(answer.to_string().contains("already"), "{answer}");

    until_rows(&env, "patient", &["a1", "a2", "b1", "b2"]).await;
    // Still in progress: more manifests may come.
    let (s, _, h) = call(
        &env,
        "POST",
        "/$bulk-submit-status",
        Some(submission("s-1", json!([]))),
    )
    .await;
    assert_eq!(s, 202);
    let loc = h["content-location"].to_str().unwrap().to_string();
    let (s, _, _) = call(
        &env,
        "GET",
        &loc[loc.find("/$bulk-submit-status/").unwrap()..],
        None,
    )
    .await;
    assert_eq!(s, 202, "an in-progress submission is not final");

    // B is replaced by C, and the submission completes.
    let mut extra = manifest(&manifest_url(&c)).as_array().unwrap().clone();
    extra.push(json!({"name": "replacesManifestUrl", "valueUrl": manifest_url(&b)}));
    extra.push(status("completed"));
    let (s, answer) = submit(&env, submission("s-1", Value::Array(extra))).await;
    assert_eq!(s, 200, "{answer}");

    let manifest_answer = final_status(&env, "s-1").await;
    assert_eq!(
        ids(&env, "patient").await,
        ["a1", "a2", "c1"],
        "B's rows went, C's came"
    );
    assert_eq!(ids(&env, "observation").await, ["o1"]);
    // Lines keep their meta as sent.
    let client = siphon_tests::connect(&env.db).await;
    let v: Value = client
        .query_one("SELECT resource FROM patient WHERE id = 'c1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v["meta"]["versionId"], "7");

    assert_eq!(manifest_answer["submissionId"], "s-1");
    assert_eq!(
        manifest_answer["manifestType"],
        "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkSubmitStatusManifest"
    );
    assert_eq!(manifest_answer["requiresAccessToken"], true);
    let outcomes = manifest_answer["outcome"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3, "{manifest_answer}");
    let by_manifest: HashMap<String, &Value> = outcomes
        .iter()
        .map(|o| (o["manifestUrl"].as_str().unwrap().to_string(), o))
        .collect();
    let file_a = outcome_file(
        &env,
        by_manifest[&manifest_url(&a)]["url"].as_str().unwrap(),
    )
    .await;
    assert!(file_a.contains("successfully imported"), "{file_a}");
    assert!(file_a.contains("2 Patient resources loaded"), "{file_a}");
    for line in file_a.lines() {
        let o: Value = serde_json::from_str(line).unwrap();
        assert_eq!(o["resourceType"], "OperationOutcome");
    }
    let file_b = outcome_file(
        &env,
        by_manifest[&manifest_url(&b)]["url"].as_str().unwrap(),
    )
    .await;
    assert!(
        file_b.contains("was replaced by") && file_b.contains("were removed"),
        "{file_b}"
    );
    let file_c = outcome_file(
        &env,
        by_manifest[&manifest_url(&c)]["url"].as_str().unwrap(),
    )
    .await;
    assert!(file_c.contains("1 Patient resources loaded"), "{file_c}");

    // Completed: it takes no more requests, and the transactions recorded to remove
    // its rows are forgotten.
    let (s, answer) = submit(&env, submission("s-1", json!([status("stopped")]))).await;
    assert_eq!(s, 409, "{answer}");
    assert_eq!(recorded_txids(&env).await, 0);
}

/// The transactions recorded per submitted file (`siphon_file_txid`) in the database.
async fn recorded_txids(env: &Env) -> i64 {
    siphon_tests::connect(&env.db)
        .await
        .query_one("SELECT count(*) FROM siphon_file_txid", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_stopped_submission_removes_what_it_loaded_and_keeps_what_others_wrote() {
    let a = provider(
        vec![vec![("Patient", "pa.ndjson")]],
        &[("pa.ndjson", lines("Patient", &["k1", "s1", "s2"]))],
    )
    .await;
    let env = setup(&[&a]).await;
    let (s, answer) = submit(&env, submission("stop-me", manifest(&manifest_url(&a)))).await;
    assert_eq!(s, 200, "{answer}");
    until_rows(&env, "patient", &["k1", "s1", "s2"]).await;
    assert!(recorded_txids(&env).await > 0, "the batches are recorded");
    // Another load overwrites k1 afterwards: it is not the submission's row any more.
    let (s, answer, _) = call(
        &env,
        "PUT",
        "/",
        Some(json!([{"resourceType": "Patient", "id": "k1", "gender": "female"}])),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {answer}");

    let (s, answer) = submit(&env, submission("stop-me", json!([status("stopped")]))).await;
    assert_eq!(s, 200, "{answer}");
    assert!(answer.to_string().contains("2 resources"), "{answer}");
    assert_eq!(
        ids(&env, "patient").await,
        ["k1"],
        "only the submission's own rows went"
    );
    assert_eq!(recorded_txids(&env).await, 0, "and the records with them");

    let done = final_status(&env, "stop-me").await;
    let url = done["outcome"][0]["url"].as_str().unwrap().to_string();
    assert!(outcome_file(&env, &url).await.contains("stopped"));
    // A new submission of the same submitter is taken now.
    let (s, answer) = submit(&env, submission("next", json!([status("in-progress")]))).await;
    assert_eq!(s, 200, "{answer}");

    // DELETE on the status URL: 202, then 404.
    let id = &url[url.find("/$bulk-submit-status/").unwrap() + "/$bulk-submit-status/".len()..];
    let id = id.split('/').next().unwrap();
    let (s, _, _) = call(&env, "DELETE", &format!("/$bulk-submit-status/{id}"), None).await;
    assert_eq!(s, 202);
    let (s, body, _) = call(&env, "GET", &format!("/$bulk-submit-status/{id}"), None).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn hostile_or_unsupported_submissions_are_refused_before_anything_is_fetched() {
    let a = provider(
        vec![vec![("Patient", "pa.ndjson")]],
        &[("pa.ndjson", lines("Patient", &["x"]))],
    )
    .await;
    let env = setup(&[&a]).await;
    for (extra, says) in [
        // A private address the allow-list does not name.
        (manifest("http://10.1.2.3/manifest.json"), "manifestUrl"),
        (
            manifest("http://169.254.169.254/latest/meta-data/"),
            "manifestUrl",
        ),
        (
            json!([{"name": "fileEncryptionKey", "part": [{"name": "value", "valueString": "jwe"}]}]),
            "fileEncryptionKey",
        ),
        (
            json!([{"name": "manifestUrl", "valueUrl": manifest_url(&a)},
                   {"name": "fhirBaseUrl", "valueUrl": "http://provider.example/fhir"},
                   {"name": "oauthMetadataUrl", "valueUrl": format!("http://{}/.well-known/smart-configuration", a.addr)}]),
            "oauthMetadataUrl: client",
        ),
    ] {
        let (s, answer) = submit(&env, submission("h-1", extra.clone())).await;
        assert_eq!(s, 400, "{extra}: {answer}");
        assert_eq!(answer["resourceType"], "OperationOutcome", "{answer}");
        assert!(answer.to_string().contains(says), "{answer}");
    }
    assert!(a.seen().is_empty(), "nothing was fetched");
    // A replacement of a manifest the submission does not have.
    let (s, _) = submit(&env, submission("h-1", manifest(&manifest_url(&a)))).await;
    assert_eq!(s, 200);
    let (s, answer) = submit(
        &env,
        submission("h-1", json!([{"name": "replacesManifestUrl", "valueUrl": "http://127.0.0.1:9/other"}, status("in-progress")])),
    )
    .await;
    assert_eq!(s, 400, "{answer}");
    // Another client sees none of it.
    let (s, _, _) = api_harness::call_as(
        &env,
        "POST",
        "/$bulk-submit-status",
        Some("Basic bm9ib2R5Om5vcGU="),
        Some(submission("h-1", json!([]))),
    )
    .await;
    assert_eq!(s, 401);
}

/// siphon's own key, as `SIPHON_CLIENT_KEY` holds it.
fn client_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(siphon::auth::jwt::SigningKey::generate_pkcs8())
}

/// Client `provider-a` (secret `s3cret`, writes Patients), with `registration` as its
/// `bulkSubmit` (none when null); its Basic credential.
async fn provider_client(env: &Env, registration: Value) -> String {
    let mut client = json!({"resourceType": "Client", "id": "provider-a", "secret": "s3cret"});
    if !registration.is_null() {
        client["bulkSubmit"] = registration;
    }
    let (s, b, _) = call(
        env,
        "PUT",
        "/",
        Some(json!([client, {"resourceType": "AccessPolicy", "id": "provider-a",
            "scope": "system/Patient.cruds", "link": [{"id": "provider-a", "resourceType": "Client"}]}])),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    api_harness::basic("provider-a", "s3cret")
}

fn file_header(name: &str, value: &str) -> Value {
    json!({"name": "fileRequestHeader", "part": [
        {"name": "headerName", "valueString": name}, {"name": "headerValue", "valueString": value}]})
}

#[tokio::test]
async fn a_provider_behind_oauth_is_read_with_a_token_from_its_registered_server_and_its_headers() {
    Box::pin(oauth_provider()).await
}

/// The body of the test above (boxed: its future is large).
async fn oauth_provider() {
    // Files elsewhere (a CDN the provider redirects to) take no credential at all.
    let cdn = provider(vec![], &[("pc.ndjson", lines("Patient", &["c1"]))]).await;
    let a = Remote::start(Script {
        pages: vec![vec![("Patient", "pa.ndjson"), ("Patient", "pc.ndjson")]],
        files: HashMap::from([("pa.ndjson", lines("Patient", &["a1", "a2"]))]),
        redirects: HashMap::from([("pc.ndjson", format!("http://{}/files/pc.ndjson", cdn.addr))]),
        requires_token: true,
        credential: Some(format!("Bearer {}", bulk_remote::SMART_TOKEN)),
        smart_client: Some("siphon-at-provider-a"),
        required_header: Some(("x-provider-key", "k1")),
        ..Script::default()
    })
    .await;
    let allow = format!("127.0.0.1:4566,{},{}", a.addr, cdn.addr);
    let key = client_key();
    let env = api_harness::setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
            .with("SIPHON_CLIENT_KEY", &key)
    })
    .await;
    let (_, jwks, _) = call(&env, "GET", "/.well-known/jwks.json", None).await;
    a.trust(jwks);
    // RFC 9728 metadata naming the provider's authorization server.
    let metadata = format!("http://{}/.well-known/oauth-protected-resource", a.addr);
    let registration = json!({"oauthMetadataUrl": metadata, "clientId": "siphon-at-provider-a",
                              "scope": "system/Patient.rs"});
    let provider_a = provider_client(&env, registration).await;
    let as_provider = |body: Value| {
        let provider_a = provider_a.clone();
        let env = &env;
        async move {
            let (s, b, _) = Box::pin(api_harness::call_as(
                env,
                "POST",
                "/$bulk-submit",
                Some(&provider_a),
                Some(body),
            ))
            .await;
            (s, b)
        }
    };

    // Another metadata URL than the registered one (Pathling's CVE-2026-47660: a
    // caller-chosen one steers siphon's assertion and token), a manifest on another
    // origin than the registered server's: 400, nothing fetched.
    let mut extra = manifest(&manifest_url(&a)).as_array().unwrap().clone();
    extra.push(json!({"name": "oauthMetadataUrl", "valueUrl": format!("http://{}/.well-known/oauth-protected-resource", cdn.addr)}));
    let (s, b) = as_provider(submission("o-1", Value::Array(extra))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("not the one registered"), "{b}");
    let mut extra = manifest(&manifest_url(&cdn)).as_array().unwrap().clone();
    extra.push(json!({"name": "oauthMetadataUrl", "valueUrl": metadata}));
    let (s, b) = as_provider(submission("o-1", Value::Array(extra))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("origin"), "{b}");
    // The admin has no registration.
    let mut extra = manifest(&manifest_url(&a)).as_array().unwrap().clone();
    extra.push(json!({"name": "oauthMetadataUrl", "valueUrl": metadata}));
    let (s, b) = submit(&env, submission("o-1", Value::Array(extra.clone()))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("no bulkSubmit registration"), "{b}");
    assert!(
        a.seen().is_empty() && cdn.seen().is_empty(),
        "nothing was fetched"
    );

    // The registered URL, the provider's header: everything loads.
    extra.push(file_header("X-Provider-Key", "k1"));
    extra.push(status("completed"));
    let (s, b) = as_provider(submission("o-1", Value::Array(extra))).await;
    assert_eq!(s, 200, "{b}");
    until_rows(&env, "patient", &["a1", "a2", "c1"]).await;

    // siphon signed as the registered client for the registered scope, once per worker.
    let requests = a.token_requests();
    assert!(!requests.is_empty(), "a token was fetched");
    for (form, claims) in &requests {
        let claims = claims.as_ref().expect("the assertion verified");
        assert_eq!(form["scope"], "system/Patient.rs");
        assert_eq!(claims["iss"], "siphon-at-provider-a");
    }
    let seen = a.seen();
    let token = format!("Bearer {}", bulk_remote::SMART_TOKEN);
    for s in seen
        .iter()
        .filter(|s| s.path.starts_with("/manifest/") || s.path.starts_with("/files/"))
    {
        assert_eq!(s.authorization.as_deref(), Some(token.as_str()), "{s:?}");
        assert_eq!(
            s.headers.get("x-provider-key").map(String::as_str),
            Some("k1"),
            "{s:?}"
        );
    }
    assert!(
        seen.iter().any(|s| s.path == "/files/pc.ndjson"),
        "{seen:?}"
    );
    // Discovery and the token request carry neither.
    for s in seen
        .iter()
        .filter(|s| s.path.contains("well-known") || s.path == "/auth/token")
    {
        assert_eq!(s.authorization, None, "{s:?}");
        assert!(!s.headers.contains_key("x-provider-key"), "{s:?}");
    }
    // The redirect to the CDN went without the token and the provider's header.
    let at_cdn = cdn.seen();
    assert_eq!(at_cdn.len(), 1, "{at_cdn:?}");
    assert_eq!(at_cdn[0].authorization, None);
    assert!(
        !at_cdn[0].headers.contains_key("x-provider-key"),
        "{at_cdn:?}"
    );
}

#[tokio::test]
async fn a_provider_header_is_required_and_a_hostile_one_is_refused() {
    let a = Remote::start(Script {
        pages: vec![vec![("Patient", "pa.ndjson")]],
        files: HashMap::from([("pa.ndjson", lines("Patient", &["h1"]))]),
        required_header: Some(("x-provider-key", "k1")),
        ..Script::default()
    })
    .await;
    let env = setup(&[&a]).await;
    for (header, says) in [
        (
            file_header("X-Key", "a\r\nHost: evil.example"),
            "visible ASCII",
        ),
        (file_header("Host", "evil.example"), "set by siphon itself"),
        (
            file_header("Transfer-Encoding", "chunked"),
            "set by siphon itself",
        ),
    ] {
        let mut extra = manifest(&manifest_url(&a)).as_array().unwrap().clone();
        extra.push(header);
        let (s, b) = submit(&env, submission("hh-1", Value::Array(extra))).await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains(says), "{b}");
    }
    assert!(a.seen().is_empty(), "nothing was fetched");
    // Without the header the provider refuses the manifest, and the outcome says so.
    let (s, b) = submit(&env, submission("hh-1", manifest(&manifest_url(&a)))).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = submit(&env, submission("hh-1", json!([status("completed")]))).await;
    assert_eq!(s, 200, "{b}");
    let done = final_status(&env, "hh-1").await;
    let outcome = outcome_file(&env, done["outcome"][0]["url"].as_str().unwrap()).await;
    assert!(outcome.contains("401"), "{outcome}");
    assert_eq!(api_harness::count(&env.db, "patient").await, 0);
    // With it, a new submission loads.
    let mut extra = manifest(&manifest_url(&a)).as_array().unwrap().clone();
    extra.push(file_header("X-Provider-Key", "k1"));
    extra.push(status("completed"));
    let (s, b) = submit(&env, submission("hh-2", Value::Array(extra))).await;
    assert_eq!(s, 200, "{b}");
    until_rows(&env, "patient", &["h1"]).await;
    let seen = a.seen();
    let with: Vec<_> = seen
        .iter()
        .filter(|s| s.headers.contains_key("x-provider-key"))
        .collect();
    assert!(with.len() >= 2, "the manifest and the file: {seen:?}");
}

/// The pull job of the submission's first manifest, and its session.
async fn first_manifest_job(env: &Env) -> (String, String) {
    let job: String = siphon_tests::connect(&env.db)
        .await
        .query_one(
            "SELECT id FROM siphon_export WHERE kind = 'pull' AND id LIKE '%.m0'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let session = job.strip_suffix(".m0").unwrap().to_string();
    (job, session)
}

#[tokio::test]
async fn a_worker_killed_after_stopping_a_replaced_manifests_files_is_taken_over() {
    Box::pin(killed_mid_withdraw(false)).await
}

#[tokio::test]
async fn a_worker_killed_after_removing_a_replaced_manifests_rows_is_taken_over() {
    Box::pin(killed_mid_withdraw(true)).await
}

/// A manifest is replaced and the worker withdrawing it dies, after its first step (its
/// files stopped) or its second (their rows removed and the manifest marked removed, in
/// one transaction), before it ends its task. No crash can be injected into that worker
/// at a line, so the test leaves the state such a death leaves, through the same storage
/// calls, under a lease that runs out; the real workers then take over.
async fn killed_mid_withdraw(rows_removed: bool) {
    use siphon::storage::submissions;
    let b = provider(
        vec![vec![("Patient", "pb.ndjson")]],
        &[("pb.ndjson", lines("Patient", &["b1", "b2"]))],
    )
    .await;
    let c = provider(
        vec![vec![("Patient", "pc.ndjson")]],
        &[("pc.ndjson", lines("Patient", &["c1"]))],
    )
    .await;
    let env = setup(&[&b, &c]).await;
    let (s, answer) = submit(&env, submission("w-1", manifest(&manifest_url(&b)))).await;
    assert_eq!(s, 200, "{answer}");
    until_rows(&env, "patient", &["b1", "b2"]).await;
    let mut extra = manifest(&manifest_url(&c)).as_array().unwrap().clone();
    extra.push(json!({"name": "replacesManifestUrl", "valueUrl": manifest_url(&b)}));
    extra.push(status("completed"));
    let (s, answer) = submit(&env, submission("w-1", Value::Array(extra))).await;
    assert_eq!(s, 200, "{answer}");

    // A worker takes B's pull task (woken by the replacement) and dies mid-withdraw.
    let (job, session) = first_manifest_job(&env).await;
    let task = format!("{job}/0");
    // It is parked, its lease held until its next wake-up (at most LOADED_POLL, 10 s).
    let parked_until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match env
            .db
            .claim_export_task(&task, "doomed", 0.3, None)
            .await
            .unwrap()
        {
            siphon::lease::Claim::Held { .. } => break,
            siphon::lease::Claim::Busy { .. } if std::time::Instant::now() < parked_until => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            _ => panic!("the replaced manifest's task is not free to take"),
        }
    }
    let mut client = siphon_tests::connect(&env.db).await;
    let stopped = submissions::move_manifest_files(
        &client,
        &session,
        0,
        &["pending", "paused", "in-progress"],
        "aborted",
    )
    .await
    .unwrap();
    assert_eq!(stopped, 0, "B's file had loaded");
    if rows_removed {
        let tx = client.transaction().await.unwrap();
        let files = submissions::manifest_files(&tx, &session, 0).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(submissions::remove_rows(&tx, &files).await.unwrap(), 2);
        submissions::forget_files(&tx, &files).await.unwrap();
        submissions::patch_manifest(&tx, &session, 0, &json!({"removed": true}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(ids(&env, "patient").await.is_empty());
    } else {
        assert_eq!(ids(&env, "patient").await, ["b1", "b2"]);
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    // The next worker finishes the withdraw once, C loads, the submission completes.
    let done = final_status(&env, "w-1").await;
    assert_eq!(
        ids(&env, "patient").await,
        ["c1"],
        "B's rows went, C's came"
    );
    let outcomes = done["outcome"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{done}");
    let b_outcome = outcomes
        .iter()
        .find(|o| o["manifestUrl"] == manifest_url(&b).as_str())
        .unwrap();
    let text = outcome_file(&env, b_outcome["url"].as_str().unwrap()).await;
    assert!(
        text.contains("was replaced by") && text.contains("were removed"),
        "{text}"
    );
    let status: String = siphon_tests::connect(&env.db)
        .await
        .query_one(
            "SELECT status FROM siphon_export_task WHERE id = $1",
            &[&task],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status, "cancelled",
        "the withdraw's task ended once, as withdrawn"
    );
    assert_eq!(recorded_txids(&env).await, 0);
}
