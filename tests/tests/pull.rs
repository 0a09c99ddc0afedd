//! Pull imports (`$import-pnp`): siphon as the Bulk Data client of a remote server on
//! 127.0.0.1 (`bulk_remote`), end to end through the API, the export worker (the pull's
//! planning) and the loader, against real Postgres and LocalStack.

mod api_harness;
mod bulk_remote;
mod console_harness;

use std::collections::HashMap;

use api_harness::{call, count, Env};
use bulk_remote::{Remote, Script, SMART_TOKEN, TOKEN};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;

/// The API and workers, with the remote's `host:port` allow-listed.
async fn setup(remote: &Remote) -> Env {
    let allow = format!("127.0.0.1:4566,{}", remote.addr);
    api_harness::setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
    })
    .await
}

/// As [`setup`], with siphon's own client key set to a new P-384 key (or unset).
async fn setup_keyed(remote: &Remote, keyed: bool) -> Env {
    use base64::Engine;
    let allow = format!("127.0.0.1:4566,{}", remote.addr);
    let key = if keyed {
        base64::engine::general_purpose::STANDARD
            .encode(siphon::auth::jwt::SigningKey::generate_pkcs8())
    } else {
        String::new()
    };
    api_harness::setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
            .with("SIPHON_CLIENT_KEY", &key)
    })
    .await
}

fn smart(client: &str, scope: &str) -> Value {
    json!({"name": "auth", "part": [{"name": "type", "valueCode": "smart"},
                                     {"name": "clientId", "valueString": client},
                                     {"name": "scope", "valueString": scope}]})
}

fn pnp(export_url: &str, extra: Value) -> Value {
    let mut ps = vec![json!({"name": "exportUrl", "valueUrl": export_url})];
    ps.extend(extra.as_array().cloned().unwrap_or_default());
    json!({"resourceType": "Parameters", "parameter": ps})
}

fn bearer() -> Value {
    json!({"name": "auth", "part": [{"name": "type", "valueCode": "bearer"},
                                     {"name": "token", "valueString": TOKEN}]})
}

/// Runs the export and load workers until session `id` is no longer running (at most
/// 120 rounds of one poll each); returns its last view.
async fn run_until_settled(env: &Env, id: &str) -> Value {
    for _ in 0..120 {
        plan_once(env).await;
        siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 10, 0)
            .await;
        let (status, body, _) = call(env, "GET", &format!("/$import/{id}"), None).await;
        if status == 200 {
            return body;
        }
        assert_eq!(status, 202, "{body}");
    }
    panic!("session {id} did not settle");
}

/// One receive of the export queue by the export worker (the pull's planning), as
/// Lambda's event source mapping would hand it a message.
async fn plan_once(env: &Env) {
    siphon_local::poll_export_queue(
        &env.exporter,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        std::time::Duration::from_secs(900),
    )
    .await;
}

/// A `smart` pull (client id `siphon-at-remote`, `scope`) started by the admin against
/// `remote`, which has registered the key siphon publishes, run until its session
/// settles.
async fn smart_pull_settled(remote: &Remote, scope: &str) -> (Env, Value) {
    let env = setup_keyed(remote, true).await;
    let (_, jwks, _) = call(&env, "GET", "/.well-known/jwks.json", None).await;
    remote.trust(jwks);
    let body = pnp(
        &remote.export_url(),
        json!([smart("siphon-at-remote", scope)]),
    );
    let id = start(&env, body).await;
    let session = run_until_settled(&env, &id).await;
    (env, session)
}

/// Aborts session `id` as its owner.
async fn abort(env: &Env, id: &str) {
    let body = json!({"resource": {"id": id, "action": "abort"}});
    let (status, answer, _) = call(env, "POST", "/$import", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Starts a pull; returns the session id.
async fn start(env: &Env, body: Value) -> String {
    let (status, answer, headers) = call(env, "POST", "/$import-pnp", Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let location = headers["content-location"].to_str().unwrap();
    assert!(location.ends_with(&format!("/$import/{id}")), "{location}");
    id
}

fn patients(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"resourceType": "Patient", "id": format!("p{i}"), "gender": "other"}).to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test]
async fn pulls_every_page_of_a_remote_export_with_its_token() {
    let observations = [
        json!({"resourceType": "Observation", "id": "o1", "status": "final"}).to_string(),
        "{not json".to_string(),
        json!({"resourceType": "Observation", "id": "o2", "status": "final"}).to_string(),
    ]
    .join("\n");
    let remote = Remote::start(Script {
        working_polls: 2,
        unavailable_polls: 1,
        pages: vec![
            vec![("Patient", "Patient.ndjson")],
            vec![("Observation", "Observation.ndjson")],
        ],
        files: HashMap::from([
            ("Patient.ndjson", patients(3)),
            ("Observation.ndjson", observations),
        ]),
        requires_token: true,
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let body = pnp(
        &remote.export_url(),
        json!([bearer(),
               {"name": "_type", "valueString": "Patient,Observation"},
               {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"},
               {"name": "_typeFilter", "valueString": "Observation?status=final"}]),
    );
    let id = start(&env, body).await;
    let session = run_until_settled(&env, &id).await;

    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(
        (session["loaded"].as_u64(), session["failed"].as_u64()),
        (Some(5), Some(1)),
        "{session}"
    );
    assert_eq!(session["inputs"].as_array().unwrap().len(), 2, "{session}");
    let pull = &session["pull"];
    assert_eq!(
        (pull["pages"].as_u64(), pull["files"].as_u64()),
        (Some(2), Some(2)),
        "{session}"
    );
    assert_eq!(pull["requiresToken"], true);
    assert_eq!(pull["auth"], "bearer");
    assert!(
        !session.to_string().contains(TOKEN),
        "the token is never shown: {session}"
    );
    assert_eq!(count(&env.db, "patient").await, 3);
    assert_eq!(count(&env.db, "observation").await, 2);

    let seen = remote.seen();
    let kick_off = seen.iter().find(|s| s.path == "/fhir/$export").unwrap();
    assert!(
        kick_off.query.contains("_type=Patient%2CObservation"),
        "{kick_off:?}"
    );
    assert!(
        kick_off.query.contains("_since=2026-01-01T00%3A00%3A00Z"),
        "{kick_off:?}"
    );
    assert!(
        kick_off
            .query
            .contains("_typeFilter=Observation%3Fstatus%3Dfinal"),
        "{kick_off:?}"
    );
    assert_eq!(
        seen.iter().filter(|s| s.path == "/fhir/$export").count(),
        1,
        "kicked off once"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.path == "/status/1" && s.method == "GET")
            .count(),
        4,
        "two 202s, one 503, the manifest"
    );
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{s:?}"
        );
    }
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.starts_with("/files/"))
            .count(),
        2,
        "each file read once"
    );

    // The malformed line is listed on its file.
    let obs = session["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "Observation")
        .unwrap();
    let (status, errors, _) = call(
        &env,
        "GET",
        &format!(
            "/LoaderFile/{}/$errors",
            obs["loaderFile"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 200, "{errors}");
    assert_eq!(errors["errors"][0]["line"], 2, "{errors}");
}

#[tokio::test]
async fn pulls_with_http_basic_and_never_shows_the_password() {
    // RFC 7617: base64("siphon-pull:s3cret pass") (the password may hold a space).
    let credential = "Basic c2lwaG9uLXB1bGw6czNjcmV0IHBhc3M=";
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "Patient.ndjson")]],
        files: HashMap::from([("Patient.ndjson", patients(4))]),
        requires_token: true,
        credential: Some(credential.into()),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let auth = json!({"name": "auth", "part": [
        {"name": "type", "valueCode": "basic"},
        {"name": "username", "valueString": "siphon-pull"},
        {"name": "password", "valueString": "s3cret pass"}]});
    let id = start(&env, pnp(&remote.export_url(), json!([auth]))).await;
    let session = run_until_settled(&env, &id).await;

    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(session["loaded"].as_u64(), Some(4), "{session}");
    assert_eq!(session["pull"]["auth"], "basic", "{session}");
    assert_eq!(count(&env.db, "patient").await, 4);
    let seen = remote.seen();
    assert!(
        seen.iter().any(|s| s.path.starts_with("/files/")),
        "{seen:?}"
    );
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(credential), "{s:?}");
    }
    // Neither the session, nor the session list, nor the export list shows it.
    let (_, exports, _) = call(&env, "GET", "/$export-status", None).await;
    let (_, sessions, _) = call(&env, "GET", "/$import", None).await;
    assert!(
        exports.to_string().contains(&remote.export_url()),
        "{exports}"
    );
    for shown in [
        session.to_string(),
        exports.to_string(),
        sessions.to_string(),
    ] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("c2lwaG9uLXB1bGw6"), "{shown}");
    }
}

#[tokio::test]
async fn a_remote_refusal_ends_the_session_in_error_with_the_remotes_words() {
    let remote = Remote::start(Script {
        kick_off_error: Some((400, "unknown _type Foo")),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "error", "{session}");
    let error = session["error"].as_str().unwrap();
    assert!(
        error.contains("kick-off answered HTTP 400: unknown _type Foo"),
        "{error}"
    );
}

#[tokio::test]
async fn force_resume_runs_a_failed_pull_again_from_a_new_kick_off() {
    // The remote refuses the first kick-off (its operator fixes something), then works.
    let remote = Remote::start(Script {
        kick_off_error: Some((403, "siphon is not yet allowed to export")),
        kick_off_failures: 1,
        pages: vec![vec![("Patient", "a.ndjson")]],
        files: HashMap::from([("a.ndjson", patients(4))]),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let failed = run_until_settled(&env, &id).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not yet allowed"),
        "{failed}"
    );
    let body = json!({"resource": {"id": id, "action": "force-resume"}});
    let (status, resumed, _) = call(&env, "POST", "/$import", Some(body)).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["status"], "active", "{resumed}");
    assert_eq!(resumed["pull"]["stage"], "kick-off", "{resumed}");
    assert!(resumed.get("error").is_none(), "{resumed}");
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(count(&env.db, "patient").await, 4);
    let kick_offs = remote
        .seen()
        .iter()
        .filter(|s| s.path == "/fhir/$export")
        .count();
    assert_eq!(kick_offs, 2, "kicked off again, once");
    // A second force-resume of the finished session is refused as for every session.
    let body = json!({"resource": {"id": id, "action": "force-resume"}});
    let (status, refused, _) = call(&env, "POST", "/$import", Some(body)).await;
    assert_eq!(status, 406, "{refused}");
}

#[tokio::test]
async fn without_the_token_the_remote_answers_401_and_the_session_says_so() {
    let remote = Remote::start(Script {
        requires_token: true,
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "error", "{session}");
    assert!(
        session["error"].as_str().unwrap().contains("HTTP 401"),
        "{session}"
    );
}

#[tokio::test]
async fn a_missing_file_fails_its_input_and_names_it() {
    let remote = Remote::start(Script {
        pages: vec![vec![
            ("Patient", "Patient.ndjson"),
            ("Patient", "Gone.ndjson"),
        ]],
        files: HashMap::from([("Patient.ndjson", patients(2))]),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "error", "{session}");
    let error = session["error"].as_str().unwrap();
    assert!(
        error.contains("Gone.ndjson") && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(count(&env.db, "patient").await, 2);
}

#[tokio::test]
async fn a_remote_that_stays_unavailable_is_given_up_saying_why() {
    let remote = Remote::start(Script {
        unavailable_polls: usize::MAX,
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "error", "{session}");
    let error = session["error"].as_str().unwrap();
    assert!(
        error.contains("failed 8 times in a row") && error.contains("HTTP 503"),
        "{error}"
    );
}

#[tokio::test]
async fn abort_stops_the_pull_and_cancels_the_remote_export() {
    let remote = Remote::start(Script {
        working_polls: usize::MAX,
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    // Kick-off and a first poll: the remote is exporting.
    for _ in 0..20 {
        plan_once(&env).await;
        if remote.seen().iter().any(|s| s.path == "/status/1") {
            break;
        }
    }
    let (_, view, headers) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert!(
        headers["x-progress"]
            .to_str()
            .unwrap()
            .contains("pulling (exporting"),
        "{view}"
    );
    abort(&env, &id).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "aborted", "{session}");
    let deletes = until_released(&env, &remote).await;
    assert_eq!(deletes.len(), 1, "the remote export is cancelled once");
    assert_eq!(deletes[0].path, "/status/1");
}

/// Runs the pull's planning (the export queue only) until the remote has seen a
/// `DELETE`, and a few runs more (a second would show then); the `DELETE`s it saw.
async fn until_released(env: &Env, remote: &Remote) -> Vec<bulk_remote::Seen> {
    let deletes = || -> Vec<bulk_remote::Seen> {
        remote
            .seen()
            .into_iter()
            .filter(|s| s.method == "DELETE")
            .collect()
    };
    let mut extra = 0;
    for _ in 0..60 {
        if !deletes().is_empty() {
            extra += 1;
            if extra > 3 {
                break;
            }
        }
        plan_once(env).await;
    }
    deletes()
}

#[tokio::test]
async fn when_every_file_has_loaded_siphon_tells_the_remote_it_is_done() {
    // Bulk Data lets a client DELETE a completed export's status URL, which a server may
    // take as the signal to drop its files: siphon does, once, after the last file.
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "a.ndjson")], vec![("Patient", "b.ndjson")]],
        files: HashMap::from([("a.ndjson", patients(2)), ("b.ndjson", patients(5))]),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(count(&env.db, "patient").await, 5);
    let deletes = until_released(&env, &remote).await;
    assert_eq!(deletes.len(), 1, "told once: {deletes:?}");
    assert_eq!(deletes[0].path, "/status/1");
    let seen = remote.seen();
    let released = seen.iter().position(|s| s.method == "DELETE").unwrap();
    let last_file = seen
        .iter()
        .rposition(|s| s.path.starts_with("/files/"))
        .unwrap();
    assert!(last_file < released, "after every file was read: {seen:?}");
    // The pull's task ended: the session stays done, nothing is queued any more.
    let (status, after, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
    assert_eq!((status, &after["status"]), (200, &json!("done")), "{after}");
    // Its runs were recorded as the planning's metrics (this process's sums: run by
    // `cargo test`, other tests' pulls may add to them, never take away).
    let metrics = siphon::metrics::prometheus();
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("operation=\"pull\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(figure("siphon_tasks_done_total") >= 1.0, "{metrics}");
    assert!(
        figure("siphon_rows_total") >= 2.0,
        "two files queued: {metrics}"
    );
    // Two runs at least: the one that kicked off and read the manifest, the one that
    // found the session done and released the remote.
    assert!(figure("siphon_task_seconds_count") >= 2.0, "{metrics}");
}

#[tokio::test]
async fn abort_once_every_file_is_queued_still_cancels_the_remote_export() {
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "a.ndjson")]],
        files: HashMap::from([("a.ndjson", patients(3))]),
        ..Script::default()
    })
    .await;
    let env = setup(&remote).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    // The planning alone (no loader): until every file is an input of the session.
    let mut queued = false;
    for _ in 0..30 {
        plan_once(&env).await;
        let (_, view, _) = call(&env, "GET", &format!("/$import/{id}"), None).await;
        if view["pull"]["done"] == json!(true) {
            queued = true;
            break;
        }
    }
    assert!(queued, "the manifest's file was queued");
    assert!(remote.seen().iter().all(|s| s.method != "DELETE"));
    abort(&env, &id).await;
    let deletes = until_released(&env, &remote).await;
    assert_eq!(deletes.len(), 1, "cancelled once: {deletes:?}");
    assert_eq!(deletes[0].path, "/status/1");
    // The queued file's message is still on the load queue: the loader must not load it.
    siphon_local::poll_load_queue(&env.worker, env.queue.client(), env.queue.url(), 10, 0).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "aborted", "{session}");
    assert_eq!(
        count(&env.db, "patient").await,
        0,
        "nothing of an aborted pull loads"
    );
    assert!(
        remote.seen().iter().all(|s| !s.path.starts_with("/files/")),
        "the file was never read"
    );
}

#[tokio::test]
async fn a_kick_off_url_the_guard_refuses_is_400_before_anything_is_fetched() {
    let remote = Remote::start(Script::default()).await;
    let env = setup(&remote).await;
    // Another loopback port: not allow-listed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}/fhir/$export", listener.local_addr().unwrap());
    let (status, body, _) = call(&env, "POST", "/$import-pnp", Some(pnp(&other, json!([])))).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("exportUrl"),
        "{body}"
    );
    let (status, body, _) = call(
        &env,
        "POST",
        "/$import-pnp",
        Some(pnp(
            &remote.export_url(),
            json!([{"name": "mode", "valueCode": "overwrite"}]),
        )),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(remote.seen().is_empty(), "nothing was fetched");
}

#[tokio::test]
async fn pulls_with_smart_backend_services_signing_with_the_key_it_publishes() {
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "Patient.ndjson")]],
        files: HashMap::from([("Patient.ndjson", patients(4))]),
        requires_token: true,
        credential: Some(format!("Bearer {SMART_TOKEN}")),
        smart_client: Some("siphon-at-remote"),
        ..Script::default()
    })
    .await;
    let env = setup_keyed(&remote, true).await;

    // siphon publishes the public half of its key (no credentials needed); the remote
    // registers it.
    let (status, jwks, _) =
        api_harness::call_as(&env, "GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(status, 200, "{jwks}");
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(
        (&keys[0]["kty"], &keys[0]["crv"], &keys[0]["alg"]),
        (&json!("EC"), &json!("P-384"), &json!("ES384"))
    );
    assert!(keys[0].get("d").is_none(), "never the private part: {jwks}");
    remote.trust(jwks.clone());

    let body = pnp(
        &remote.export_url(),
        json!([smart("siphon-at-remote", "system/Patient.read")]),
    );
    let id = start(&env, body).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(session["loaded"].as_u64(), Some(4), "{session}");
    assert_eq!(session["pull"]["auth"], "smart", "{session}");
    assert_eq!(count(&env.db, "patient").await, 4);
    assert!(!session.to_string().contains(SMART_TOKEN), "{session}");

    // One token per worker (the planning task's, the loader's), each held for its
    // lifetime: every poll and the file went with one of them.
    let requests = remote.token_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let mut jtis = Vec::new();
    for (form, claims) in &requests {
        let claims = claims.as_ref().expect("the assertion verified");
        assert_eq!(form["scope"], "system/Patient.read");
        assert_eq!(claims["iss"], "siphon-at-remote");
        assert_eq!(claims["aud"], remote.token_url());
        jtis.push(claims["jti"].as_str().unwrap().to_string());
    }
    assert_ne!(jtis[0], jtis[1], "a new jti for every assertion");
    let seen = remote.seen();
    let protected: Vec<_> = seen
        .iter()
        .filter(|s| {
            s.path == "/fhir/$export"
                || s.path.starts_with("/status/")
                || s.path.starts_with("/files/")
        })
        .collect();
    assert!(protected.len() >= 3, "{seen:?}");
    for s in protected {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {SMART_TOKEN}").as_str()),
            "{s:?}"
        );
    }
    // Discovery and the token request carry no credential of siphon's.
    for s in seen
        .iter()
        .filter(|s| s.path.contains("well-known") || s.path == "/auth/token")
    {
        assert_eq!(s.authorization, None, "{s:?}");
    }
}

#[tokio::test]
async fn a_token_the_remote_stops_taking_mid_pull_is_replaced() {
    // The remote revokes every token it handed out when the second manifest page is
    // asked for: the planning (and the loader, if it reads a file after that) must fetch
    // a new token and go on, not fail the pull.
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "a.ndjson")], vec![("Patient", "b.ndjson")]],
        files: HashMap::from([("a.ndjson", patients(2)), ("b.ndjson", patients(5))]),
        requires_token: true,
        credential: Some(format!("Bearer {SMART_TOKEN}")),
        smart_client: Some("siphon-at-remote"),
        revoke_tokens_at: Some("/manifest/1"),
        ..Script::default()
    })
    .await;
    let (env, session) = smart_pull_settled(&remote, "system/Patient.read").await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(count(&env.db, "patient").await, 5);
    let seen = remote.seen();
    let page2: Vec<_> = seen.iter().filter(|s| s.path == "/manifest/1").collect();
    assert_eq!(
        page2.len(),
        2,
        "refused once, then read with a new token: {seen:?}"
    );
    assert_eq!(
        page2[0].authorization.as_deref(),
        Some(format!("Bearer {SMART_TOKEN}").as_str())
    );
    let renewed = page2[1].authorization.clone().unwrap();
    assert!(
        renewed.starts_with(&format!("Bearer {SMART_TOKEN}-")),
        "{renewed}"
    );
    let requests = remote.token_requests();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(requests.iter().all(|(_, claims)| claims.is_some()));
    assert!(!session.to_string().contains(SMART_TOKEN), "{session}");
}

#[tokio::test]
async fn a_token_the_remote_stops_taking_at_a_file_is_replaced_by_the_loader() {
    // The revocation hits the first file's request itself: only the loader reads files,
    // so only its renewal (once per file) can get the rows in.
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "a.ndjson")]],
        files: HashMap::from([("a.ndjson", patients(3))]),
        requires_token: true,
        credential: Some(format!("Bearer {SMART_TOKEN}")),
        smart_client: Some("siphon-at-remote"),
        revoke_tokens_at: Some("/files/a.ndjson"),
        ..Script::default()
    })
    .await;
    let (env, session) = smart_pull_settled(&remote, "system/Patient.read").await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(count(&env.db, "patient").await, 3);
    let reads: Vec<_> = remote
        .seen()
        .into_iter()
        .filter(|s| s.path == "/files/a.ndjson")
        .collect();
    assert_eq!(reads.len(), 2, "refused once, then read again: {reads:?}");
    assert_eq!(
        reads[0].authorization.as_deref(),
        Some(format!("Bearer {SMART_TOKEN}").as_str())
    );
    let renewed = reads[1].authorization.clone().unwrap();
    assert!(
        renewed.starts_with(&format!("Bearer {SMART_TOKEN}-")),
        "a new token: {renewed}"
    );
    assert_eq!(session["inputs"][0]["status"], "done", "{session}");
    assert!(!session.to_string().contains(SMART_TOKEN), "{session}");
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_siphon_ends_the_pull_saying_why() {
    // The remote registered another client id: siphon's assertion is refused.
    let remote = Remote::start(Script {
        pages: vec![vec![("Patient", "Patient.ndjson")]],
        files: HashMap::from([("Patient.ndjson", patients(2))]),
        requires_token: true,
        credential: Some(format!("Bearer {SMART_TOKEN}")),
        smart_client: Some("someone-else"),
        ..Script::default()
    })
    .await;
    let (env, session) = smart_pull_settled(&remote, "system/*.read").await;
    assert_eq!(session["status"], "error", "{session}");
    let message = session.to_string();
    assert!(message.contains("invalid_client"), "{message}");
    assert!(message.contains("unknown client"), "{message}");
    assert!(
        !remote.seen().iter().any(|s| s.path == "/fhir/$export"),
        "nothing is kicked off without a token"
    );
    assert_eq!(count(&env.db, "patient").await, 0);
}

#[tokio::test]
async fn without_a_client_key_a_smart_pull_is_400_and_no_key_is_published() {
    let remote = Remote::start(Script::default()).await;
    let env = setup_keyed(&remote, false).await;
    let (status, jwks, _) = call(&env, "GET", "/.well-known/jwks.json", None).await;
    assert_eq!((status, jwks), (200, json!({"keys": []})));
    let (status, answer, _) = call(
        &env,
        "POST",
        "/$import-pnp",
        Some(pnp(
            &remote.export_url(),
            json!([smart("siphon", "system/*.read")]),
        )),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("SIPHON_CLIENT_KEY"), "{answer}");
    assert!(remote.seen().is_empty(), "nothing fetched");
}

#[tokio::test]
async fn only_the_admin_may_have_siphon_sign_as_itself() {
    // siphon's registration at a remote is the deployment's: a client that may write
    // every type still cannot borrow it, though it may pull with its own credential.
    let remote = Remote::start(Script::default()).await;
    let env = setup_keyed(&remote, true).await;
    let (s, b, _) = call(
        &env,
        "PUT",
        "/",
        Some(json!([
            {"resourceType": "Client", "id": "writer", "secret": "sw"},
            {"resourceType": "AccessPolicy", "id": "writer", "scope": "system/*.cruds",
             "link": [{"id": "writer", "resourceType": "Client"}]}
        ])),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let writer = api_harness::basic("writer", "sw");
    let (status, answer, _) = api_harness::call_as(
        &env,
        "POST",
        "/$import-pnp",
        Some(&writer),
        Some(pnp(
            &remote.export_url(),
            json!([smart("siphon", "system/*.read")]),
        )),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.to_string().contains("admin only"), "{answer}");
    assert!(remote.seen().is_empty(), "nothing fetched");
    let (status, answer, _) = api_harness::call_as(
        &env,
        "POST",
        "/$import-pnp",
        Some(&writer),
        Some(pnp(&remote.export_url(), json!([bearer()]))),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

/// Pulls one manifest page of `files` (name, bytes or redirect) and returns the session
/// and the status and error of its single hostile input, of which nothing loads.
async fn pull_one_hostile(script: Script) -> (Value, Value, Value) {
    let (env, session, file) = pull_one_hostile_with(script, LoadOptions::default()).await;
    assert_eq!(count(&env.db, "patient").await, 0, "nothing of it loads");
    (session, file["status"].clone(), file["error"].clone())
}

/// Pulls one manifest page with the loaders' `options` until the session ends in error;
/// returns the environment, the session and the LoaderFile of its single input.
async fn pull_one_hostile_with(script: Script, options: LoadOptions) -> (Env, Value, Value) {
    let remote = Remote::start(script).await;
    let allow = format!("127.0.0.1:4566,{}", remote.addr);
    let env =
        api_harness::setup_with(options, move |e| e.with("SIPHON_URL_ALLOWLIST", &allow)).await;
    let id = start(&env, pnp(&remote.export_url(), json!([]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "error", "{session}");
    let inputs = session["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "{session}");
    let path = format!("/LoaderFile/{}", inputs[0]["loaderFile"].as_str().unwrap());
    let (status, file, _) = call(&env, "GET", &path, None).await;
    assert_eq!(status, 200, "{file}");
    (env, session, file)
}

#[tokio::test]
async fn a_hostile_remote_cannot_redirect_a_file_elsewhere() {
    // To a loopback port the allow-list does not name: the guard refuses the hop before
    // connecting (and were it not to, nothing would leave this machine).
    let (session, status, error) = pull_one_hostile(Script {
        pages: vec![vec![("Patient", "Away.ndjson")]],
        redirects: HashMap::from([(
            "Away.ndjson",
            "http://127.0.0.1:1/secret.ndjson".to_string(),
        )]),
        ..Script::default()
    })
    .await;
    assert_eq!(status, "error", "{session}");
    let error = error.as_str().unwrap();
    assert!(
        error.contains("redirected: http://127.0.0.1:1/secret.ndjson is refused"),
        "{error}"
    );
}

#[tokio::test]
async fn a_hostile_remote_cannot_bomb_the_loader_with_gzip() {
    // 64 MiB of blank lines in about 64 KiB: a thousand times, past the loader's ratio.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..64 {
        std::io::Write::write_all(&mut gz, &chunk).unwrap();
    }
    let (session, status, error) = pull_one_hostile(Script {
        pages: vec![vec![("Patient", "Bomb.ndjson.gz")]],
        raw_files: HashMap::from([("Bomb.ndjson.gz", gz.finish().unwrap())]),
        ..Script::default()
    })
    .await;
    assert_eq!(status, "error", "{session}");
    let error = error.as_str().unwrap();
    assert!(error.contains("inflates to more than 100 times"), "{error}");
}

#[tokio::test]
async fn a_hostile_remote_cannot_hold_a_loader_with_a_body_that_never_ends() {
    // The remote would send 256 MiB of valid Patients; the loader stops at its 1 MiB
    // (SIPHON_MAX_FILE_BYTES) and closes the connection.
    let (env, session, file) = pull_one_hostile_with(
        Script {
            pages: vec![vec![("Patient", "Endless.ndjson")]],
            endless_files: vec!["Endless.ndjson"],
            ..Script::default()
        },
        LoadOptions {
            max_file_bytes: 1 << 20,
            ..LoadOptions::default()
        },
    )
    .await;
    assert_eq!(file["status"], "error", "{session}");
    let error = file["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "the file is longer than 1048576 bytes, the most SIPHON_MAX_FILE_BYTES allows"
        ),
        "{error}"
    );
    // What came before the cap loads and is counted, as before a corrupt gzip member:
    // fewer than the 1,024 lines of 1 KiB the cap lets in, every one in the table.
    let loaded = file["loaded"].as_i64().unwrap();
    assert!((1..1024).contains(&loaded), "{file}");
    assert_eq!(count(&env.db, "patient").await, loaded, "{file}");
}

#[tokio::test]
async fn a_file_is_read_from_an_offset_with_range_where_the_remote_serves_ranges() {
    use siphon::sources::{Location, Source};
    use tokio::io::AsyncReadExt;
    let body = patients(50);
    let files = HashMap::from([("Patient.ndjson", body.clone())]);
    for ranges in [true, false] {
        let remote = Remote::start(Script {
            files: files.clone(),
            ranges,
            ..Script::default()
        })
        .await;
        let addr = remote.addr.to_string();
        let source =
            siphon::sources::http::HttpSource::new(siphon::sources::http::UrlPolicy::allowing(&[
                addr.as_str(),
            ]));
        let url = Location::Url(format!("http://{addr}/files/Patient.ndjson"));
        for from in [0, 100, body.len() as u64 + 10] {
            let mut opened = source.open_from(&url, None, None, from).await.unwrap();
            let mut got = String::new();
            opened.body.read_to_string(&mut got).await.unwrap();
            // A server that does ranges sends the rest; one that does not, or an offset
            // past the end (416), the whole file, said by the offset.
            let offset = if ranges && from == 100 { 100 } else { 0 };
            assert_eq!(opened.offset, offset, "ranges {ranges}, from {from}");
            assert_eq!(got, body[offset as usize..], "ranges {ranges}, from {from}");
            assert_eq!(
                opened.size,
                Some(body.len() as u64),
                "the whole file's size"
            );
        }
        let asked: Vec<Option<String>> = remote.seen().into_iter().map(|s| s.range).collect();
        let past_end = Some(format!("bytes={}-", body.len() + 10));
        let mut expected = vec![None, Some("bytes=100-".to_string()), past_end];
        if ranges {
            expected.push(None); // 416: the whole file again, without Range
        }
        assert_eq!(asked, expected, "ranges {ranges}");
    }
}

/// Every row of `table` as `(id, resource::text)`, in id order.
async fn rows(db: &siphon::storage::Db, table: &str) -> Vec<(String, String)> {
    siphon_tests::connect(db)
        .await
        .query(
            &format!("SELECT id, resource::text FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_pull_from_another_siphon_brings_every_resource_byte_identical_exactly_once() {
    // The remote is make serve's binary on its own database: its `$export`, its status
    // URL and the files' presigned S3 URLs are what a Bulk Data server nobody wrote for
    // this test answers; siphon pulls with the remote's admin credential (HTTP Basic).
    let remote = console_harness::Stack::start("pull-from-siphon", Default::default()).await;
    for (ty, n, seed) in [("Patient", 40, 61), ("Observation", 120, 62)] {
        let key = format!("in/{ty}.ndjson.gz");
        remote
            .put(
                &key,
                siphon_tests::gen::gzip(&siphon_tests::gen::ndjson(ty, n, seed)),
            )
            .await;
    }
    let (status, answer) = remote
        .admin(
            "POST",
            "/rpc",
            Some(json!({"method": "aidbox.bulk/load-from-bucket",
                        "params": {"bucket": format!("s3://{}/in/", remote.bucket)}})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for ty in ["Patient", "Observation"] {
        remote
            .wait_file(&format!("in/{ty}.ndjson.gz"), "done", |f| {
                f["status"] == "done"
            })
            .await;
    }
    let remote_db =
        siphon::storage::Db::new(siphon::storage::DbConfig::from_url(&remote.db_url).unwrap());
    let host = remote.base.trim_start_matches("http://").to_string();
    let allow = format!("127.0.0.1:4566,{host}");
    let env = api_harness::setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
    })
    .await;
    let auth = json!({"name": "auth", "part": [
        {"name": "type", "valueCode": "basic"},
        {"name": "username", "valueString": siphon_tests::var("SIPHON_ADMIN_CLIENT_ID")},
        {"name": "password", "valueString": siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET")}]});
    let export_url = format!("{}/$export?_type=Patient,Observation", remote.base);
    let id = start(&env, pnp(&export_url, json!([auth]))).await;
    let session = run_until_settled(&env, &id).await;
    assert_eq!(session["status"], "done", "{session}");
    assert_eq!(session["loaded"].as_u64(), Some(160), "{session}");
    assert_eq!(session["failed"].as_u64(), Some(0), "{session}");
    for table in ["patient", "observation"] {
        let (there, here) = (rows(&remote_db, table).await, rows(&env.db, table).await);
        assert_eq!(here.len(), there.len(), "{table}: each resource once");
        assert!(here == there, "{table}: every resource byte-identical");
    }
    // Each output file of the remote's manifest became one input, loaded once.
    let inputs = session["inputs"].as_array().unwrap();
    assert!(inputs.len() >= 2, "{session}");
    assert!(inputs.iter().all(|i| i["status"] == "done"), "{session}");
    let loaded: u64 = inputs.iter().map(|i| i["loaded"].as_u64().unwrap()).sum();
    assert_eq!(loaded, 160);
}
