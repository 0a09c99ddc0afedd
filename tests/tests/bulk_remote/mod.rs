//! A small Bulk Data server on 127.0.0.1 for pull-import tests: a kick-off, a status URL
//! that answers 202 (with `Retry-After` and `X-Progress`) a set number of times and
//! then a manifest paged with `link`, files that need the bearer token, and `DELETE` on
//! the status URL. It records every request it got.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use serde_json::{json, Value};

/// The token the remote wants.
pub const TOKEN: &str = "remote-token-1";

/// How the remote behaves.
#[derive(Clone, Default)]
pub struct Script {
    /// Status polls answered 202 before the manifest (`usize::MAX`: never done).
    pub working_polls: usize,
    /// Status polls answered 503 + `Retry-After: 1` after the 202s.
    pub unavailable_polls: usize,
    /// The kick-off answers this status and OperationOutcome instead of 202.
    pub kick_off_error: Option<(u16, &'static str)>,
    /// Manifest pages: each a list of (type, file name); files are in `files`.
    pub pages: Vec<Vec<(&'static str, &'static str)>>,
    /// File name -> body (a name absent here answers 404).
    pub files: HashMap<&'static str, String>,
    /// Kick-off, status and files require `Authorization: Bearer TOKEN`.
    pub requires_token: bool,
}

/// One request the remote got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    polls: usize,
    seen: Vec<Seen>,
}

pub struct Remote {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn answer(status: u16, headers: &[(&str, String)], body: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn outcome(text: &str) -> String {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]})
    .to_string()
}

impl Remote {
    pub async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let script = Arc::new(script);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (st, script) = (st.clone(), script.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let reply = respond(&st, &script, addr, &req);
                        async move { Ok::<_, std::convert::Infallible>(reply) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Remote { addr, state }
    }

    /// The system-level kick-off URL.
    pub fn export_url(&self) -> String {
        format!("http://{}/fhir/$export", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

fn respond(
    state: &Mutex<State>,
    script: &Script,
    addr: SocketAddr,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        query: req.uri().query().unwrap_or_default().to_string(),
        authorization: authorization.clone(),
    });
    let base = format!("http://{addr}");
    let authorized = !script.requires_token || authorization == Some(format!("Bearer {TOKEN}"));
    if !authorized {
        return answer(401, &[], outcome("a bearer token is required"));
    }
    if req.method() == hyper::Method::DELETE && path == "/status/1" {
        return answer(202, &[], String::new());
    }
    match path.as_str() {
        "/fhir/$export" => match script.kick_off_error {
            Some((status, text)) => answer(status, &[], outcome(text)),
            None => answer(
                202,
                &[("content-location", format!("{base}/status/1"))],
                String::new(),
            ),
        },
        "/status/1" => {
            st.polls += 1;
            let n = st.polls;
            if n <= script.working_polls {
                answer(
                    202,
                    &[
                        ("retry-after", "1".into()),
                        ("x-progress", format!("remote at step {n}")),
                    ],
                    String::new(),
                )
            } else if n
                <= script
                    .working_polls
                    .saturating_add(script.unavailable_polls)
            {
                answer(503, &[("retry-after", "1".into())], outcome("busy"))
            } else {
                answer(200, &[], page(script, &base, 0))
            }
        }
        p if p.starts_with("/manifest/") => {
            let n: usize = p["/manifest/".len()..].parse().unwrap_or(usize::MAX);
            if n < script.pages.len() {
                answer(200, &[], page(script, &base, n))
            } else {
                answer(404, &[], outcome("no such page"))
            }
        }
        p if p.starts_with("/files/") => match script.files.get(&p["/files/".len()..]) {
            Some(body) => answer(200, &[], body.clone()),
            None => answer(404, &[], outcome("no such file")),
        },
        _ => answer(404, &[], outcome("unknown path")),
    }
}

/// Manifest page `n` (a `link` to page n+1 unless it is the last).
fn page(script: &Script, base: &str, n: usize) -> String {
    let output: Vec<Value> = script
        .pages
        .get(n)
        .map(|files| {
            files
                .iter()
                .map(|(ty, name)| json!({"type": ty, "url": format!("{base}/files/{name}")}))
                .collect()
        })
        .unwrap_or_default();
    let mut m = json!({
        "transactionTime": "2026-01-01T00:00:00Z",
        "request": format!("{base}/fhir/$export"),
        "requiresAccessToken": script.requires_token,
        "output": output,
        "error": [],
    });
    if n + 1 < script.pages.len() {
        m["link"] = json!([{"relation": "next", "url": format!("{base}/manifest/{}", n + 1)}]);
    }
    m.to_string()
}
