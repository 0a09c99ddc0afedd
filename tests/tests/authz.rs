//! Authorization: SMART Backend Services tokens, scopes on every route, and jobs owned by
//! the client that started them. The API runs in process on real Postgres and
//! LocalStack; client keys are made by ring (ES384) and by `openssl` (RS384), and key
//! sets are served from 127.0.0.1.

use std::time::Duration;

use lambda_http::{Body, Request};
use serde_json::{json, Value};
use siphon::loading::LoadOptions;
use siphon_tests::smart::{claims, token_form, ClientKey, JwksServer};

mod api_harness;

use api_harness::*;

/// Where the in-process API believes it is (no Host header: `localhost`).
const TOKEN_URL: &str = "http://localhost/auth/token";

/// One request with any headers and a raw body.
async fn raw(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value, lambda_http::http::HeaderMap) {
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
            Body::Text(body.to_string())
        })
        .unwrap();
    let resp = siphon_api::handle(&env.app, req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

async fn token_request(env: &Env, form: &str) -> (u16, Value) {
    let (s, b, h) = raw(
        env,
        "POST",
        "/auth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(h["cache-control"], "no-store");
    (s, b)
}

/// Registers Client `id` with `keys` (inline, or `jwks_uri`) and a policy of `scope`.
async fn register(env: &Env, id: &str, keys: Value, scope: &str) {
    let mut client = json!({"resourceType": "Client", "id": id});
    for (k, v) in keys.as_object().unwrap() {
        client[k] = v.clone();
    }
    let (s, b, _) = call(
        env,
        "PUT",
        "/",
        Some(
            json!([client, {"resourceType": "AccessPolicy", "id": format!("{id}-policy"),
            "scope": scope, "link": [{"id": id, "resourceType": "Client"}]}]),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

async fn setup_tokens() -> Env {
    setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_TOKEN_RECHECK_SECONDS", "0.2")
    })
    .await
}

async fn bearer(env: &Env, key: &ClientKey, client: &str, scope: &str) -> String {
    let assertion = key.sign(&claims(client, TOKEN_URL, json!({})), &json!({}));
    let (s, b) = token_request(env, &token_form(&assertion, scope)).await;
    assert_eq!(s, 200, "{b}");
    format!("Bearer {}", b["access_token"].as_str().unwrap())
}

#[tokio::test]
async fn discovery_and_the_capability_statement_name_the_token_endpoint() {
    let env = setup_tokens().await;
    let (s, smart, _) = raw(&env, "GET", "/.well-known/smart-configuration", &[], "").await;
    assert_eq!(s, 200);
    assert_eq!(smart["token_endpoint"], TOKEN_URL);
    assert_eq!(
        smart["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        smart["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    for alg in ["RS384", "ES384"] {
        assert!(
            smart["token_endpoint_auth_signing_alg_values_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(alg)),
            "{alg}"
        );
    }
    for c in [
        "client-confidential-asymmetric",
        "permission-v2",
        "permission-v1",
    ] {
        assert!(smart["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!(c)));
    }
    let (_, cs, _) = raw(&env, "GET", "/metadata", &[], "").await;
    let cs: Value = match cs {
        Value::String(t) => serde_json::from_str(&t).unwrap(),
        v => v,
    };
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    assert_eq!(uris["extension"][0]["url"], "token");
    assert_eq!(uris["extension"][0]["valueUri"], TOKEN_URL);
}

#[tokio::test]
async fn es384_and_rs384_clients_trade_assertions_for_scoped_tokens() {
    let env = setup_tokens().await;
    let es = ClientKey::es384("es-1");
    let rs = ClientKey::rs384("rs-1");
    register(&env, "es-client", json!({"jwks": es.jwks()}), "system/*.rs").await;
    register(
        &env,
        "rs-client",
        json!({"jwks": rs.jwks()}),
        "system/Patient.rs",
    )
    .await;
    for (key, client, asked, granted) in [
        (&es, "es-client", "system/*.read", "system/*.read"),
        (&rs, "rs-client", "system/*.rs", "system/Patient.rs"),
        (
            &es,
            "es-client",
            "system/Patient.read system/Observation.rs",
            "system/Patient.read system/Observation.rs",
        ),
    ] {
        let assertion = key.sign(&claims(client, TOKEN_URL, json!({})), &json!({}));
        let (s, b) = token_request(&env, &token_form(&assertion, asked)).await;
        assert_eq!(s, 200, "{client}: {b}");
        assert_eq!(b["token_type"], "bearer");
        assert_eq!(b["expires_in"], 300);
        assert_eq!(b["scope"], granted);
        assert!(b["access_token"].as_str().unwrap().len() > 40);
    }
    // The token reads what it may, and nothing else.
    let token = bearer(&env, &rs, "rs-client", "system/Patient.rs").await;
    let (s, _, _) = call_as(&env, "GET", "/Patient", Some(&token), None).await;
    assert_eq!(s, 200);
    let (s, b, _) = call_as(&env, "GET", "/Observation", Some(&token), None).await;
    assert_eq!(s, 403, "{b}");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .contains("system/Observation.s"));
    let (s, _, _) = call_as(
        &env,
        "PUT",
        "/",
        Some(&token),
        Some(json!([{"resourceType": "Patient", "id": "p1"}])),
    )
    .await;
    assert_eq!(s, 403);
    let (s, me, _) = call_as(&env, "GET", "/$me", Some(&token), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        me,
        json!({"client_id": "rs-client", "admin": false, "via": "token", "scope": "system/Patient.rs"})
    );
}

#[tokio::test]
async fn every_broken_assertion_is_refused_with_its_spec_code_and_no_more() {
    let env = setup_tokens().await;
    let key = ClientKey::rs384("k1");
    let stranger = ClientKey::rs384("k1");
    let other_kid = ClientKey::rs384("k2");
    register(&env, "c1", json!({"jwks": key.jwks()}), "system/*.rs").await;
    let now = chrono::Utc::now().timestamp();
    let replayed = key.sign(&claims("c1", TOKEN_URL, json!({})), &json!({}));
    let (s, _) = token_request(&env, &token_form(&replayed, "system/*.rs")).await;
    assert_eq!(s, 200, "the first use of an assertion");
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = claims("c1", TOKEN_URL, json!({}));
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            key.sign(
                &claims("c1", TOKEN_URL, json!({"aud": "http://elsewhere/token"})),
                &json!({}),
            ),
        ),
        (
            "expired",
            key.sign(
                &claims("c1", TOKEN_URL, json!({"exp": now - 120})),
                &json!({}),
            ),
        ),
        (
            "exp more than 5 minutes ahead",
            key.sign(
                &claims("c1", TOKEN_URL, json!({"exp": now + 600})),
                &json!({}),
            ),
        ),
        ("replayed jti", replayed),
        (
            "unknown kid",
            other_kid.sign(&claims("c1", TOKEN_URL, json!({})), &json!({})),
        ),
        (
            "unknown client",
            key.sign(
                &claims("c1", TOKEN_URL, json!({"iss": "ghost", "sub": "ghost"})),
                &json!({}),
            ),
        ),
        (
            "bad signature",
            stranger.sign(&claims("c1", TOKEN_URL, json!({})), &json!({})),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "kid": "k1"})),
                b64(good.clone())
            ),
        ),
        (
            "alg HS256 keyed with the public key",
            siphon::auth::jwt::sign_hs256(
                key.public_jwk()["n"].as_str().unwrap().as_bytes(),
                &good,
            ),
        ),
        (
            "jku that is not registered",
            key.sign(
                &claims("c1", TOKEN_URL, json!({})),
                &json!({"jku": "https://evil.example/jwks"}),
            ),
        ),
        ("not a JWT", "undefined".into()),
    ];
    for (why, assertion) in cases {
        let (s, b) = token_request(&env, &token_form(&assertion, "system/*.rs")).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("invalid_client")),
            "{why}: {b}"
        );
        assert_eq!(
            b["error_description"], "client authentication failed",
            "{why}"
        );
    }
    // Scope, grant type, assertion type, content type.
    let fresh = || key.sign(&claims("c1", TOKEN_URL, json!({})), &json!({}));
    for (scope, why) in [
        ("", "empty scope"),
        ("launch fhirUser", "no system scope"),
        ("system/Patient.write", "a write scope for a reader"),
        ("system/Patient.cud", "v2 mutations"),
        ("system/UnknownResource.read", "not a resource type"),
        ("system/Patient.unknownAction", "not an action"),
    ] {
        let (s, b) = token_request(&env, &token_form(&fresh(), scope)).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_scope")),
            "{why}: {b}"
        );
    }
    let form = token_form(&fresh(), "system/*.rs").replace("client_credentials", "password");
    let (s, b) = token_request(&env, &form).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let form = token_form(&fresh(), "system/*.rs").replace("jwt-bearer", "saml2-bearer");
    let (s, b) = token_request(&env, &form).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b, _) = raw(
        &env,
        "POST",
        "/auth/token",
        &[("content-type", "application/json")],
        "",
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
}

#[tokio::test]
async fn keys_at_a_jwks_uri_come_through_the_guard_and_a_new_kid_fetches_them_again() {
    let first = ClientKey::es384("first");
    let served = JwksServer::start(first.jwks()).await;
    let hidden = JwksServer::start(first.jwks()).await;
    let allow = format!("127.0.0.1:4566,{}", served.addr);
    let env = setup_with(LoadOptions::default(), move |e| {
        e.with("SIPHON_URL_ALLOWLIST", &allow)
    })
    .await;
    register(
        &env,
        "by-url",
        json!({"jwks_uri": served.url()}),
        "system/*.rs",
    )
    .await;
    register(
        &env,
        "not-allowed",
        json!({"jwks_uri": hidden.url()}),
        "system/*.rs",
    )
    .await;
    bearer(&env, &first, "by-url", "system/*.rs").await;
    assert_eq!(served.hits(), 1);
    bearer(&env, &first, "by-url", "system/*.rs").await;
    assert_eq!(
        served.hits(),
        1,
        "the key set is kept, not fetched per token"
    );
    // The client rotates its key: the new kid is unknown, so the set is fetched again.
    let second = ClientKey::es384("second");
    *served.set.lock().unwrap() = json!({"keys": [first.public_jwk(), second.public_jwk()]});
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    bearer(&env, &second, "by-url", "system/*.rs").await;
    assert_eq!(served.hits(), 2);
    // A jwks_uri on a loopback address nobody allow-listed is never fetched.
    let assertion = first.sign(&claims("not-allowed", TOKEN_URL, json!({})), &json!({}));
    let (s, b) = token_request(&env, &token_form(&assertion, "system/*.rs")).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(hidden.hits(), 0, "a refused jwks_uri was connected to");
}

#[tokio::test]
async fn a_token_stops_working_when_its_client_changes_or_goes() {
    let env = setup_tokens().await;
    let key = ClientKey::es384("k1");
    register(&env, "c1", json!({"jwks": key.jwks()}), "system/*.rs").await;
    let token = bearer(&env, &key, "c1", "system/*.rs").await;
    assert_eq!(
        call_as(&env, "GET", "/Patient", Some(&token), None).await.0,
        200
    );
    // New keys for the client: its tokens end within the recheck interval (0.2 s here).
    let rotated = ClientKey::es384("k2");
    register(&env, "c1", json!({"jwks": rotated.jwks()}), "system/*.rs").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b, _) = call_as(&env, "GET", "/Patient", Some(&token), None).await;
    assert_eq!(s, 401, "{b}");
    // Deleted.
    let token = bearer(&env, &rotated, "c1", "system/*.rs").await;
    siphon_tests::connect(&env.db)
        .await
        .execute("DELETE FROM client WHERE id = 'c1'", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call_as(&env, "GET", "/Patient", Some(&token), None).await.0,
        401
    );
    // Garbage and expired tokens.
    for t in ["Bearer x", "Bearer invalidToken", "Bearer a.b.c"] {
        let (s, b, _) = call_as(&env, "GET", "/$export-status", Some(t), None).await;
        assert_eq!(s, 401, "{t}");
        assert_eq!(b["resourceType"], "OperationOutcome", "{b}");
    }
}

/// Callers of the route table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    /// `engine: allow` (the seed's demo policy).
    Allow,
    /// A token with `system/*.rs`.
    Reader,
    /// Basic, `system/Patient.cu` only.
    PatientWriter,
    /// Basic, `system/Observation.rs` only.
    ObservationReader,
}

const EVERYONE: &[Who] = &[
    Who::Admin,
    Who::Allow,
    Who::Reader,
    Who::PatientWriter,
    Who::ObservationReader,
];

#[test]
fn every_route_and_rpc_method_needs_its_scope() {
    siphon_tests::on_big_stack(route_table);
}

async fn route_table() {
    use Who::*;
    let env = setup_tokens().await;
    let key = ClientKey::es384("k1");
    register(&env, "reader", json!({"jwks": key.jwks()}), "system/*.rs").await;
    let (s, _, _) = call(
        &env,
        "PUT",
        "/",
        Some(json!([
            {"resourceType": "Client", "id": "allow", "secret": "s1"},
            {"resourceType": "AccessPolicy", "id": "allow", "engine": "allow", "link": [{"id": "allow", "resourceType": "Client"}]},
            {"resourceType": "Client", "id": "pw", "secret": "s2"},
            {"resourceType": "AccessPolicy", "id": "pw", "scope": "system/Patient.cu", "link": [{"id": "pw", "resourceType": "Client"}]},
            {"resourceType": "Client", "id": "or", "secret": "s3"},
            {"resourceType": "AccessPolicy", "id": "or", "scope": ["system/Observation.rs"], "link": [{"id": "or", "resourceType": "Client"}]},
            {"resourceType": "Patient", "id": "p1"},
            {"resourceType": "Observation", "id": "o1", "status": "final"}
        ])),
    )
    .await;
    assert_eq!(s, 200);
    let token = bearer(&env, &key, "reader", "system/*.rs").await;
    let header = |w: Who| match w {
        Admin => admin(),
        Allow => basic("allow", "s1"),
        Reader => token.clone(),
        PatientWriter => basic("pw", "s2"),
        ObservationReader => basic("or", "s3"),
    };
    let bucket = format!("s3://{}", env.bucket);
    let patient_input = json!({"resource": {"inputs": [{"type": "Patient", "url": format!("{bucket}/none.ndjson.gz")}]}});
    // (method, path, body, who may): everyone else must get 403.
    let table: Vec<(&str, String, Option<Value>, &[Who])> = vec![
        ("GET", "/$me".into(), None, EVERYONE),
        ("GET", "/Patient/p1".into(), None, &[Admin, Allow, Reader]),
        ("GET", "/Patient".into(), None, &[Admin, Allow, Reader]),
        (
            "GET",
            "/Observation/o1".into(),
            None,
            &[Admin, Allow, Reader, ObservationReader],
        ),
        (
            "PUT",
            "/".into(),
            Some(json!([{"resourceType": "Patient", "id": "p2"}])),
            &[Admin, Allow, PatientWriter],
        ),
        (
            "PUT",
            "/".into(),
            Some(json!([{"resourceType": "Observation", "id": "o2"}])),
            &[Admin, Allow],
        ),
        (
            "PUT",
            "/".into(),
            Some(json!([{"resourceType": "Client", "id": "x", "secret": "y"}])),
            &[Admin],
        ),
        (
            "PUT",
            "/".into(),
            Some(json!([{"resourceType": "AccessPolicy", "id": "x", "engine": "allow"}])),
            &[Admin],
        ),
        (
            "PUT",
            "/".into(),
            Some(json!([{"resourceType": "Inventory", "id": "x", "bucket": "s3://b"}])),
            &[Admin],
        ),
        ("GET", "/Client".into(), None, &[Admin]),
        ("GET", "/Client/allow".into(), None, &[Admin]),
        ("GET", "/AccessPolicy".into(), None, &[Admin]),
        ("GET", "/Inventory".into(), None, &[Admin]),
        ("GET", "/LoaderFile".into(), None, EVERYONE),
        ("DELETE", "/LoaderFile/nope".into(), None, &[Admin]),
        ("GET", "/$dead-letters".into(), None, &[Admin]),
        (
            "POST",
            "/$dead-letters/nope/$retry".into(),
            Some(json!({})),
            &[Admin],
        ),
        (
            "POST",
            "/rpc".into(),
            Some(
                json!({"method": "aidbox.bulk/load-from-bucket", "params": {"bucket": bucket, "dry-run": true}}),
            ),
            &[Admin, Allow, PatientWriter],
        ),
        (
            "POST",
            "/rpc".into(),
            Some(json!({"method": "aidbox.bulk/load-from-bucket-status"})),
            EVERYONE,
        ),
        (
            "POST",
            "/rpc".into(),
            Some(
                json!({"method": "aidbox.bulk/dump-to-bucket", "params": {"bucket": bucket, "types": ["Patient"]}}),
            ),
            &[Admin, Allow, Reader],
        ),
        (
            "POST",
            "/rpc".into(),
            Some(
                json!({"method": "aidbox.bulk/dump-to-bucket", "params": {"bucket": bucket, "query": "select 1 as id"}}),
            ),
            &[Admin, Allow],
        ),
        (
            "GET",
            "/$export?_type=Patient".into(),
            None,
            &[Admin, Allow, Reader],
        ),
        (
            "GET",
            "/$export?_type=Observation".into(),
            None,
            &[Admin, Allow, Reader, ObservationReader],
        ),
        (
            "GET",
            "/$export".into(),
            None,
            &[Admin, Allow, Reader, ObservationReader],
        ),
        (
            "GET",
            "/Group/g1/$export".into(),
            None,
            &[Admin, Allow, Reader],
        ),
        ("GET", "/$export-status".into(), None, EVERYONE),
        (
            "POST",
            "/$import".into(),
            Some(patient_input.clone()),
            &[Admin, Allow, PatientWriter],
        ),
        ("GET", "/$import".into(), None, EVERYONE),
        (
            "POST",
            "/Patient/$load".into(),
            Some(json!({"source": format!("{bucket}/none.ndjson")})),
            &[Admin, Allow, PatientWriter],
        ),
        (
            "POST",
            "/Observation/$load".into(),
            Some(json!({"source": format!("{bucket}/none.ndjson")})),
            &[Admin, Allow],
        ),
    ];
    for (method, path, body, allowed) in &table {
        for who in EVERYONE {
            let mut headers = vec![("authorization", header(*who))];
            if path.contains("$export") && !path.contains("status") {
                headers.push(("accept", "application/fhir+json".into()));
                headers.push(("prefer", "respond-async".into()));
            }
            if body.is_some() {
                headers.push(("content-type", "application/json".into()));
            }
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let text = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
            let (s, b, _) = raw(&env, method, path, &h, &text).await;
            if allowed.contains(who) {
                assert!(s != 403 && s != 401, "{who:?} {method} {path}: {s} {b}");
            } else {
                assert_eq!(s, 403, "{who:?} {method} {path}: {b}");
            }
        }
    }
    // The dump function: $dump needs read on the type, $dump-sql its own scope.
    let dump = siphon_dump::App::new(
        &siphon_dump::Config::from_env(
            &siphon_tests::config_env().with("SIPHON_TOKEN_RECHECK_SECONDS", "0.2"),
        )
        .unwrap(),
        env.db.clone(),
    );
    for (method, path, body, allowed) in [
        ("GET", "/Patient/$dump", "", &[Admin, Allow, Reader][..]),
        (
            "GET",
            "/Observation/$dump",
            "",
            &[Admin, Allow, Reader, ObservationReader][..],
        ),
        (
            "POST",
            "/$dump-sql",
            r#"{"query": "select id from patient"}"#,
            &[Admin, Allow][..],
        ),
    ] {
        for who in EVERYONE {
            let mut req = lambda_http::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", header(*who));
            if !body.is_empty() {
                req = req.header("content-type", "application/json");
            }
            let req: Request = req.body(Body::Text(body.to_string())).unwrap();
            let s = siphon_dump::handle(&dump, req).await.status().as_u16();
            if allowed.contains(who) {
                assert_eq!(s, 200, "{who:?} {method} {path}");
            } else {
                assert_eq!(s, 403, "{who:?} {method} {path}");
            }
        }
    }
}

#[test]
fn jobs_belong_to_the_client_that_started_them() {
    siphon_tests::on_big_stack(jobs_belong);
}

async fn jobs_belong() {
    let env = setup_tokens().await;
    let (s, _, _) = call(
        &env,
        "PUT",
        "/",
        Some(json!([
            {"resourceType": "Client", "id": "a", "secret": "sa"},
            {"resourceType": "AccessPolicy", "id": "a", "engine": "allow", "link": [{"id": "a", "resourceType": "Client"}]},
            {"resourceType": "Client", "id": "b", "secret": "sb"},
            {"resourceType": "AccessPolicy", "id": "b", "engine": "allow", "link": [{"id": "b", "resourceType": "Client"}]},
        ])),
    )
    .await;
    assert_eq!(s, 200);
    let (a, b) = (basic("a", "sa"), basic("b", "sb"));
    let s3 = siphon_tests::s3().await;
    let gen = |n| siphon_tests::gen::gzip(&siphon_tests::gen::ndjson("Patient", n, 3));
    siphon_tests::put(&s3, &env.bucket, "a/Patient.ndjson.gz", gen(20)).await;
    siphon_tests::put(&s3, &env.bucket, "a2/Patient.ndjson.gz", gen(5)).await;
    let bucket = format!("s3://{}", env.bucket);
    let rpc = |method: &'static str, params: Value| json!({"method": method, "params": params});
    let (s, r, _) = call_as(
        &env,
        "POST",
        "/rpc",
        Some(&a),
        Some(rpc(
            "aidbox.bulk/load-from-bucket",
            json!({"bucket": format!("{bucket}/a/")}),
        )),
    )
    .await;
    assert_eq!((s, &r["result"]["queued"]), (200, &json!(1)), "{r}");
    let (s, r, _) = call_as(
        &env,
        "POST",
        "/$import",
        Some(&a),
        Some(
            json!({"resource": {"id": "sess-a", "secret": "x", "inputs": [
            {"type": "Patient", "url": format!("{bucket}/a2/Patient.ndjson.gz")}]}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    drain(&env.worker, &env.queue).await;
    let (s, files, _) = call_as(&env, "GET", "/LoaderFile", Some(&a), None).await;
    assert_eq!(s, 200);
    let ids: Vec<String> = files["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{files}");
    for e in files["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["owner"], "a");
        assert_eq!(e["resource"]["status"], "done");
    }
    let kick = |who: String, path: &'static str| {
        let env = &env;
        async move {
            let (s, b, h) = raw(
                env,
                "GET",
                path,
                &[
                    ("authorization", &who),
                    ("accept", "application/fhir+json"),
                    ("prefer", "respond-async"),
                ],
                "",
            )
            .await;
            assert_eq!(s, 202, "{b}");
            h["content-location"]
                .to_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        }
    };
    let export = kick(a.clone(), "/$export?_type=Patient").await;
    let (s, r, _) = call_as(
        &env,
        "POST",
        "/rpc",
        Some(&a),
        Some(rpc(
            "aidbox.bulk/dump-to-bucket",
            json!({"bucket": format!("{bucket}/out/"), "types": ["Patient"]}),
        )),
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let dump = r["result"]["id"].as_str().unwrap().to_string();
    drain_exports(&env).await;

    // Another client sees none of it: 404 on each, absent from each list.
    let hidden: Vec<(&str, String)> = vec![
        ("GET", format!("/LoaderFile/{}", ids[0])),
        ("GET", format!("/LoaderFile/{}/$errors", ids[0])),
        ("GET", "/$import/sess-a".into()),
        ("GET", format!("/$export-status/{export}")),
        ("DELETE", format!("/$export-status/{export}")),
        ("GET", format!("/$dump-to-bucket/{dump}")),
        ("DELETE", format!("/$dump-to-bucket/{dump}")),
    ];
    for (method, path) in &hidden {
        let (s, body, _) = call_as(&env, method, path, Some(&b), None).await;
        assert_eq!(s, 404, "b {method} {path}: {body}");
        let (s, body, _) = call_as(&env, "GET", path, Some(&a), None).await;
        assert!(s == 200 || s == 202, "a GET {path}: {s} {body}");
    }
    let (s, body, _) = call_as(
        &env,
        "POST",
        "/$import",
        Some(&b),
        Some(json!({"resource": {"id": "sess-a", "action": "pause", "secret": "x"}})),
    )
    .await;
    assert_eq!(s, 404, "{body}");
    let (_, list, _) = call_as(&env, "GET", "/LoaderFile", Some(&b), None).await;
    assert_eq!(list["entry"], json!([]));
    let (_, list, _) = call_as(&env, "GET", "/LoaderFile?owner=a", Some(&b), None).await;
    assert_eq!(
        list["entry"],
        json!([]),
        "a client cannot ask for another's files"
    );
    let (_, list, _) = call_as(&env, "GET", "/$import", Some(&b), None).await;
    assert_eq!(list["sessions"], json!([]));
    let (_, list, _) = call_as(&env, "GET", "/$export-status", Some(&b), None).await;
    assert_eq!(list["exports"], json!([]));
    let (_, status, _) = call_as(
        &env,
        "POST",
        "/rpc",
        Some(&b),
        Some(rpc("aidbox.bulk/load-from-bucket-status", json!({}))),
    )
    .await;
    assert_eq!(status["result"]["total-files"], 0, "{status}");
    let (_, status, _) = call_as(
        &env,
        "POST",
        "/rpc",
        Some(&a),
        Some(rpc("aidbox.bulk/load-from-bucket-status", json!({}))),
    )
    .await;
    assert_eq!(status["result"]["total-files"], 2, "{status}");
    // The admin sees everything, and can ask for one client's.
    let (_, list, _) = call(&env, "GET", "/LoaderFile?owner=a", None).await;
    assert_eq!(list["entry"].as_array().unwrap().len(), 2);
    let (_, list, _) = call(&env, "GET", "/LoaderFile?owner=b", None).await;
    assert_eq!(list["entry"], json!([]));
    let (_, list, _) = call(&env, "GET", "/$import?owner=a", None).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let (_, list, _) = call(&env, "GET", "/$export-status", None).await;
    assert!(!list["exports"].as_array().unwrap().is_empty(), "{list}");
}
