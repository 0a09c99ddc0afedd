//! What siphon counts, as the person on call reads it: `make serve`'s `GET /metrics`
//! (siphon-local, the debug build of `make serve`'s binary, as a child), read back with
//! prometheus_client's own parser, after a real load and dump through LocalStack's S3
//! and SQS. (In AWS the same figures are EMF log lines; their shape has unit tests in
//! `common/src/metrics.rs`.)

mod console_harness;

use console_harness::{admin, basic, Options, Stack, CLIENT_ID, CLIENT_SECRET};
use serde_json::Value;

/// The samples of a `/metrics` answer, parsed by prometheus_client.
fn parse(text: &[u8]) -> Value {
    let dir = console_harness::out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("metrics-{}.txt", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    siphon_tests::read_back("prometheus_samples.py", &[&path])
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

#[tokio::test]
async fn make_serve_counts_what_it_loaded_and_dumped_for_the_admin_only() {
    let stack = Stack::start("metrics", Options::default()).await;
    let mut body = siphon_tests::gen::ndjson("Patient", 25, 7);
    body.extend_from_slice(b"{not json\n");
    stack
        .put("in/Patient.ndjson.gz", siphon_tests::gen::gzip(&body))
        .await;
    let (status, answer) = stack
        .admin(
            "POST",
            "/rpc",
            Some(serde_json::json!({"method": "aidbox.bulk/load-from-bucket",
                                    "params": {"bucket": format!("s3://{}/in/", stack.bucket)}})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let file = stack
        .wait_file("in/Patient.ndjson.gz", "done", |f| f["status"] == "done")
        .await;
    let dumped = stack
        .call("GET", "/Patient/$dump", &admin(), &[], None)
        .await;
    assert_eq!(dumped.status, 200);
    // An export of them, to the end: its file's bytes are counted as written.
    let kicked = stack
        .call(
            "GET",
            "/$export?_type=Patient",
            &admin(),
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-async"),
            ],
            None,
        )
        .await;
    assert_eq!(
        kicked.status,
        202,
        "{}",
        String::from_utf8_lossy(&kicked.body)
    );
    let status_path = kicked.headers["content-location"]
        .split("/$export-status/")
        .nth(1)
        .map(|id| format!("/$export-status/{id}"))
        .unwrap();
    let started = std::time::Instant::now();
    let manifest = loop {
        let got = stack.call("GET", &status_path, &admin(), &[], None).await;
        if got.status == 200 {
            break serde_json::from_slice::<serde_json::Value>(&got.body).unwrap();
        }
        assert!(
            got.status == 202 || got.status == 429,
            "{}: {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the export did not complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let mut exported_bytes = 0usize;
    for f in manifest["output"].as_array().unwrap() {
        let got = siphon_tests::http_get(f["url"].as_str().unwrap()).await;
        assert_eq!(got.status, 200);
        exported_bytes += got.body.len();
    }
    assert!(exported_bytes > 0, "{manifest}");

    let got = stack.call("GET", "/metrics", &admin(), &[], None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        got.headers["content-type"].as_str(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let parsed = parse(&got.body);
    let load = [("operation", "load")];
    assert_eq!(
        sample(&parsed, "siphon_resources_loaded_total", &load),
        file["loaded"].as_f64(),
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "siphon_resources_loaded_total", &load),
        Some(25.0)
    );
    assert_eq!(
        sample(&parsed, "siphon_invalid_lines_total", &load),
        Some(1.0)
    );
    assert_eq!(sample(&parsed, "siphon_files_done_total", &load), Some(1.0));
    assert!(
        sample(&parsed, "siphon_queue_message_age_count", &load).unwrap_or(0.0) >= 1.0,
        "the load message's age was recorded: {parsed}"
    );
    assert!(sample(&parsed, "siphon_load_seconds_sum", &load).unwrap_or(0.0) > 0.0);
    // The file's own figures: every byte of it read (26 lines, uncompressed), the time
    // from its start, and one rate sample of its resources per second.
    assert_eq!(
        sample(&parsed, "siphon_bytes_read_total", &load),
        Some(body.len() as f64),
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "siphon_file_seconds_count", &load),
        Some(1.0)
    );
    assert_eq!(
        sample(&parsed, "siphon_resources_per_second_count", &load),
        Some(1.0)
    );
    assert!(
        sample(&parsed, "siphon_resources_per_second_sum", &load).unwrap_or(0.0) > 0.0,
        "{parsed}"
    );
    // The export: its rows, and exactly the bytes its file holds.
    let export = [("operation", "export")];
    assert_eq!(
        sample(&parsed, "siphon_rows_total", &export),
        Some(25.0),
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "siphon_bytes_written_total", &export),
        Some(exported_bytes as f64),
        "{parsed}"
    );
    // The dump: its rows and the bytes the client got, by resource type.
    let dump = [("operation", "dump"), ("resource_type", "Patient")];
    assert_eq!(
        sample(&parsed, "siphon_rows_total", &dump),
        Some(25.0),
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "siphon_bytes_out_total", &dump),
        Some(dumped.body.len() as f64)
    );
    assert_eq!(parsed["types"]["siphon_resources_loaded"], "counter");
    assert_eq!(parsed["types"]["siphon_load_seconds"], "summary");
    // No id, key or URL is a label value anywhere.
    let text = String::from_utf8_lossy(&got.body);
    assert!(!text.contains("Patient.ndjson"), "{text}");
    assert!(!text.contains(file["id"].as_str().unwrap()), "{text}");

    // Not for other clients, nor without credentials; a wrong secret counts as a failure.
    let other = stack
        .call(
            "GET",
            "/metrics",
            &basic(CLIENT_ID, CLIENT_SECRET),
            &[],
            None,
        )
        .await;
    assert_eq!(
        other.status,
        403,
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    let wrong = stack
        .call(
            "GET",
            "/metrics",
            &basic(CLIENT_ID, "not-the-secret"),
            &[],
            None,
        )
        .await;
    assert_eq!(wrong.status, 401);
    let anonymous = siphon_tests::http("GET", &format!("{}/metrics", stack.base), &[], b"").await;
    assert_eq!(anonymous.status, 401);
    let got = stack.call("GET", "/metrics", &admin(), &[], None).await;
    let parsed = parse(&got.body);
    assert!(
        sample(
            &parsed,
            "siphon_auth_failures_total",
            &[("operation", "auth")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{parsed}"
    );
}
