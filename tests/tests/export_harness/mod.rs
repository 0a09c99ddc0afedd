//! What the `$export` tests share: loading generated resources, requests as a Bulk Data
//! client sends them, kick-off, polling to completion, downloading the manifest's files.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_http::{Body, Request};
use serde_json::Value;
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::{FileOptions, LoaderFile, ObjectLocation};
use siphon::sources::memory::MemorySource;
use siphon_tests::{gen, http_get};

use super::api_harness::{admin, drain_exports, Env};

/// Loads `count` generated resources of `ty` through the loader.
pub async fn load(env: &Env, ty: &str, count: u64, seed: u64) {
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

pub struct Answer {
    pub status: u16,
    pub headers: lambda_http::http::HeaderMap,
    pub body: Value,
}

/// A request to the API as a Bulk Data client sends it (host, headers, Basic auth).
pub async fn request(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
    auth: &str,
) -> Answer {
    let mut req = lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080")
        .header("authorization", auth);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        // A POST kick-off's Parameters body is FHIR JSON.
        req = req.header("content-type", "application/fhir+json");
    }
    let req: Request = req
        .body(
            body.map(|b| Body::Text(b.to_string()))
                .unwrap_or(Body::Empty),
        )
        .unwrap();
    let resp = siphon_api::handle(&env.app, req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

pub const FHIR: &[(&str, &str)] = &[
    ("accept", "application/fhir+json"),
    ("prefer", "respond-async"),
];

/// Kicks off an export; returns the status URL's path.
pub async fn kick_off(env: &Env, path: &str) -> String {
    let a = request(env, "GET", path, FHIR, None, &admin()).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let location = a.headers["content-location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("http://127.0.0.1:8080/$export-status/"),
        "{location}"
    );
    location
        .trim_start_matches("http://127.0.0.1:8080")
        .to_string()
}

/// Polls the status until it is not 202 (running the export worker meanwhile).
/// The status path of a 202 kick-off answer.
pub fn status_path(a: &Answer) -> String {
    assert_eq!(a.status, 202, "{}", a.body);
    a.headers["content-location"]
        .to_str()
        .unwrap()
        .trim_start_matches("http://127.0.0.1:8080")
        .to_string()
}

pub async fn complete(env: &Env, status_path: &str) -> Answer {
    let start = Instant::now();
    loop {
        drain_exports(env).await;
        let a = request(env, "GET", status_path, &[], None, &admin()).await;
        if a.status != 202 {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "export never completed"
        );
    }
}

/// Every line of every output file of `manifest`, by type (downloaded through the
/// presigned URLs), checking each file's count.
pub async fn download(manifest: &Value, key: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in manifest[key].as_array().unwrap() {
        let url = entry["url"].as_str().unwrap();
        let got = http_get(url).await;
        assert_eq!(
            got.status,
            200,
            "{url}: {}",
            String::from_utf8_lossy(&got.body)
        );
        let text = if got.headers.get("content-encoding").map(String::as_str) == Some("gzip") {
            use std::io::Read;
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(&got.body[..])
                .read_to_string(&mut s)
                .unwrap();
            s
        } else {
            String::from_utf8(got.body).unwrap()
        };
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert!(text.ends_with('\n') || text.is_empty());
        assert_eq!(
            lines.len() as u64,
            entry["count"].as_u64().unwrap(),
            "{url}"
        );
        out.entry(entry["type"].as_str().unwrap().to_string())
            .or_default()
            .extend(lines);
    }
    out
}
