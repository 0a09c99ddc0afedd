//! `make bench-auth`: what HTTP Basic authentication costs a Client, alone and while
//! someone floods the API with wrong passwords for it, measured as a new user would.
//!
//! 1. `make serve`'s binary (release siphon-local; `SIPHON_BENCH_SERVER` names another
//!    build, e.g. one of an older commit) on a fresh database, on a free loopback port.
//! 2. The admin creates Client `bulk-client` and its AccessPolicy with `PUT /`, as in the
//!    seed's demo (secret stored as an Argon2id hash).
//! 3. Alone: `bulk-client` sends `GET /LoaderFile` one after the other (a fresh
//!    connection each, as `curl -u` does), `SIPHON_BENCH_REQUESTS` times (default 200).
//! 4. Under attack: for `SIPHON_BENCH_ATTACK_SECONDS` (default 10) an attacker sends
//!    `SIPHON_BENCH_BAD_RATE` (default 50) wrong-password requests per second for
//!    `bulk-client` (open loop: at that rate whatever the answers take, at most 64 in
//!    flight), while `bulk-client` keeps sending its requests one after the other.
//!
//! 5. Bearer tokens (SMART Backend Services): Client `bulk-reader` registered with an
//!    ES384 key; `SIPHON_BENCH_REQUESTS` token requests (a fresh assertion each) at
//!    `POST /auth/token`, then as many `GET /LoaderFile` with one access token.
//!
//! Prints p50/p95 of the valid client's requests in both phases, what the attacker got
//! (401, 429), the token endpoint's and bearer requests' p50/p95, and the targets (issue
//! 18: alone p50 < 5 ms, under 50 bad req/s p95 < 20 ms; issue 23: bearer p50 < 1 ms).
//! Last lines: `alone_p50_ms=.. alone_p95_ms=.. attack_p50_ms=.. attack_p95_ms=..
//! bad_sent=.. bad_401=.. bad_429=..` and `token_p50_ms=.. token_p95_ms=..
//! bearer_p50_ms=.. bearer_p95_ms=..`. Loopback only; bounded in time and count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use siphon_tests::bench::{admin, env_number, free_port, serve};

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// One `GET /LoaderFile`; its status and milliseconds.
async fn get(port: u16, auth: &str) -> (u16, f64) {
    let start = Instant::now();
    let got = siphon_tests::http(
        "GET",
        &format!("http://127.0.0.1:{port}/LoaderFile"),
        &[("authorization", auth)],
        b"",
    )
    .await;
    (got.status, start.elapsed().as_secs_f64() * 1000.0)
}

/// The `p`th percentile (0..=100) of `ms`, nearest rank.
fn percentile(ms: &mut [f64], p: f64) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
    ms[rank.clamp(1, ms.len()) - 1]
}

/// `bulk-client`'s valid requests one after the other: `count` of them, or until
/// `until` when given. Their milliseconds.
async fn valid_requests(port: u16, count: u64, until: Option<Instant>) -> Vec<f64> {
    let auth = basic("bulk-client", "secret");
    let mut ms = Vec::new();
    while match until {
        Some(t) => Instant::now() < t,
        None => (ms.len() as u64) < count,
    } {
        let (status, took) = get(port, &auth).await;
        assert_eq!(status, 200, "bulk-client's valid request was refused");
        ms.push(took);
    }
    ms
}

#[tokio::main]
async fn main() {
    let requests = env_number("SIPHON_BENCH_REQUESTS", 200);
    let attack_secs = env_number("SIPHON_BENCH_ATTACK_SECONDS", 10);
    let bad_rate = env_number("SIPHON_BENCH_BAD_RATE", 50).max(1);
    siphon_tests::use_local_aws();
    let url = siphon_tests::fresh_db_url().await;
    let port = free_port();
    let mut child = serve(&url, port, 1, "bench-auth-serve.log").await;

    // The seed's demo: a Client and its policy, created by the admin with PUT /.
    let body = serde_json::json!([
        {"resourceType": "Client", "id": "bulk-client", "secret": "secret",
         "grant_types": ["basic"]},
        {"resourceType": "AccessPolicy", "id": "bulk-client", "engine": "allow",
         "link": [{"id": "bulk-client", "resourceType": "Client"}]}
    ]);
    let admin = admin();
    let put = siphon_tests::http(
        "PUT",
        &format!("http://127.0.0.1:{port}/"),
        &[
            ("authorization", admin.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert!(
        put.status < 300,
        "PUT /: {} {}",
        put.status,
        String::from_utf8_lossy(&put.body)
    );
    // First request: the database's first touch of the tables, not measured.
    valid_requests(port, 5, None).await;

    let mut alone = valid_requests(port, requests, None).await;
    let (alone_p50, alone_p95) = (percentile(&mut alone, 50.0), percentile(&mut alone, 95.0));
    println!(
        "alone: {} valid requests of bulk-client: p50 {alone_p50:.2} ms, p95 {alone_p95:.2} ms",
        alone.len()
    );

    // The attacker: wrong passwords at a fixed rate, whatever the answers take.
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let until = Instant::now() + Duration::from_secs(attack_secs);
    let attacker = {
        let counts = counts.clone();
        tokio::spawn(async move {
            let wrong = Arc::new(basic("bulk-client", "wrong-guess"));
            let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / bad_rate as f64));
            let mut sent = 0u64;
            let mut tasks = Vec::new();
            while Instant::now() < until {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    continue; // 64 guesses already waiting: the server is saturated
                };
                sent += 1;
                let (wrong, counts) = (wrong.clone(), counts.clone());
                tasks.push(tokio::spawn(async move {
                    let (status, _) = get(port, &wrong).await;
                    let slot = match status {
                        401 => 0,
                        429 => 1,
                        _ => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            sent
        })
    };
    // The valid client starts once the flood runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut attacked = valid_requests(port, 0, Some(until)).await;
    let sent = attacker.await.unwrap();
    let (p50, p95) = (
        percentile(&mut attacked, 50.0),
        percentile(&mut attacked, 95.0),
    );
    let [c401, c429, other] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "under attack: {sent} wrong-password requests in {attack_secs} s ({:.1}/s; answers: {c401} x 401, {c429} x 429, {other} other); {} valid requests of bulk-client: p50 {p50:.2} ms, p95 {p95:.2} ms",
        sent as f64 / attack_secs as f64,
        attacked.len()
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: alone p50 < 5 ms: {}; under {bad_rate} bad req/s p95 < 20 ms: {}",
        verdict(alone_p50 < 5.0),
        verdict(p95 < 20.0)
    );
    let (token, bearer) = tokens(port, requests).await;
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "alone_p50_ms={alone_p50:.2} alone_p95_ms={alone_p95:.2} attack_p50_ms={p50:.2} attack_p95_ms={p95:.2} bad_sent={sent} bad_401={c401} bad_429={c429}"
    );
    println!(
        "token_p50_ms={:.2} token_p95_ms={:.2} bearer_p50_ms={:.2} bearer_p95_ms={:.2}",
        token.0, token.1, bearer.0, bearer.1
    );
}

/// SMART Backend Services: `count` token requests, then `count` requests with one token.
/// Their (p50, p95) in ms.
async fn tokens(port: u16, count: u64) -> ((f64, f64), (f64, f64)) {
    use siphon_tests::smart::{claims, token_form, ClientKey};
    let key = ClientKey::es384("bench-key");
    let body = serde_json::json!([
        {"resourceType": "Client", "id": "bulk-reader", "jwks": key.jwks()},
        {"resourceType": "AccessPolicy", "id": "bulk-reader", "scope": "system/*.rs",
         "link": [{"id": "bulk-reader", "resourceType": "Client"}]}
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let put = siphon_tests::http(
        "PUT",
        &format!("{base}/"),
        &[
            ("authorization", &admin()),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert!(put.status < 300, "PUT /: {}", put.status);
    let token_url = format!("{base}/auth/token");
    let mut issued = Vec::new();
    let mut access = String::new();
    for _ in 0..count.max(1) {
        let assertion = key.sign(
            &claims("bulk-reader", &token_url, serde_json::json!({})),
            &serde_json::json!({}),
        );
        let form = token_form(&assertion, "system/*.read");
        let start = Instant::now();
        let got = siphon_tests::http(
            "POST",
            &token_url,
            &[("content-type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await;
        issued.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        access = format!("Bearer {}", v["access_token"].as_str().unwrap());
    }
    let mut used = Vec::new();
    for _ in 0..count.max(1) {
        let (status, took) = get(port, &access).await;
        assert_eq!(status, 200, "a bearer request was refused");
        used.push(took);
    }
    let token = (percentile(&mut issued, 50.0), percentile(&mut issued, 95.0));
    let bearer = (percentile(&mut used, 50.0), percentile(&mut used, 95.0));
    println!(
        "tokens: {} token requests: p50 {:.2} ms, p95 {:.2} ms; {} bearer requests: p50 {:.2} ms, p95 {:.2} ms (target p50 < 1 ms: {})",
        issued.len(), token.0, token.1, used.len(), bearer.0, bearer.1,
        if bearer.0 < 1.0 { "met" } else { "MISSED" }
    );
    (token, bearer)
}
