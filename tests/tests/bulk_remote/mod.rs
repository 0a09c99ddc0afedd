//! A small Bulk Data server on 127.0.0.1 for pull-import tests: a kick-off, a status URL
//! that answers 202 (with `Retry-After` and `X-Progress`) a set number of times and
//! then a manifest paged with `link`, files that need the bearer token, and `DELETE` on
//! the status URL; as a SMART Backend Services authorization server, its
//! `.well-known/smart-configuration` and a token endpoint that checks siphon's signed
//! assertion (ES384, with `ring`, against the JWK Set the test registered) before it
//! hands out its access token. It records every request it got.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::Full;
use hyper::service::service_fn;
use serde_json::{json, Value};

/// The token the remote wants.
pub const TOKEN: &str = "remote-token-1";
/// The access token the remote's token endpoint hands out.
pub const SMART_TOKEN: &str = "remote-access-1";

/// How the remote behaves.
#[derive(Clone, Default)]
pub struct Script {
    /// Status polls answered 202 before the manifest (`usize::MAX`: never done).
    pub working_polls: usize,
    /// Status polls answered 503 + `Retry-After: 1` after the 202s.
    pub unavailable_polls: usize,
    /// The kick-off answers this status and OperationOutcome instead of 202.
    pub kick_off_error: Option<(u16, &'static str)>,
    /// With `kick_off_error`: only the first N kick-offs answer it, later ones 202 (0:
    /// every one does).
    pub kick_off_failures: usize,
    /// Manifest pages: each a list of (type, file name); files are in `files`.
    pub pages: Vec<Vec<(&'static str, &'static str)>>,
    /// File name -> body (a name absent here answers 404).
    pub files: HashMap<&'static str, String>,
    /// Kick-off, status and files require `Authorization: Bearer TOKEN`.
    pub requires_token: bool,
    /// With `requires_token`: the `Authorization` value required instead of the bearer
    /// token (an HTTP Basic credential, say).
    pub credential: Option<String>,
    /// Acts as a SMART authorization server for this registered client id.
    pub smart_client: Option<&'static str>,
    /// File name -> bytes, for bodies that are not text (a gzip file).
    pub raw_files: HashMap<&'static str, Vec<u8>>,
    /// File name -> the `Location` of a 302 answered instead of the file.
    pub redirects: HashMap<&'static str, String>,
    /// With `smart_client`: when this path (a manifest page `/manifest/N`, a file
    /// `/files/NAME`) is first asked for, every access token handed out so far stops
    /// working (as one that expired early, or was revoked), that request included, and
    /// later token requests get new tokens (`SMART_TOKEN-k`).
    pub revoke_tokens_at: Option<&'static str>,
    /// Files whose body never ends as far as a reader can tell: the same Patient lines
    /// again and again (bounded at 256 MiB, so the test stops by itself).
    pub endless_files: Vec<&'static str>,
    /// Files answer `Range: bytes=N-` with 206 and the rest (416 past the end); without
    /// it the remote ignores `Range`, as a server may.
    pub ranges: bool,
    /// Manifest pages and files answer 401 unless the request carries this header
    /// (name in lower case, value): a provider's `fileRequestHeader`.
    pub required_header: Option<(&'static str, &'static str)>,
}

/// One request the remote got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Every header, names in lower case.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    polls: usize,
    kick_offs: usize,
    seen: Vec<Seen>,
    /// The JWK Set registered for `smart_client` (see [`Remote::trust`]).
    jwks: Option<Value>,
    /// Every token request: its form, and the assertion's claims when it verified.
    token_requests: Vec<(HashMap<String, String>, Option<Value>)>,
    /// `revoke_tokens_at` happened: only `renewed` tokens work.
    revoked: bool,
    /// Tokens handed out after the revocation.
    renewed: Vec<String>,
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

/// 256 MiB of 1 KiB Patient lines (`endless-1`, `endless-2`, ...), 64 at a time, as fast
/// as the reader takes them.
fn endless() -> hyper::Response<BoxBody<Bytes, std::convert::Infallible>> {
    use futures::StreamExt;
    let text = json!({"div": "x".repeat(980)});
    let frames = futures::stream::iter(0..4096u64).map(move |chunk| {
        let lines: String = (0..64)
            .map(|i| {
                let id = format!("endless-{}", chunk * 64 + i + 1);
                format!(
                    "{}\n",
                    json!({"resourceType": "Patient", "id": id, "text": text})
                )
            })
            .collect();
        Ok(hyper::body::Frame::data(Bytes::from(lines)))
    });
    hyper::Response::builder()
        .status(200)
        .body(BoxBody::new(http_body_util::StreamBody::new(frames)))
        .unwrap()
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
                        let (st, script) = (st.clone(), script.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let name = parts.uri.path().strip_prefix("/files/").unwrap_or("");
                            if script.endless_files.contains(&name) {
                                return Ok::<_, std::convert::Infallible>(endless());
                            }
                            let reply = respond(&st, &script, addr, &parts, &body);
                            Ok(reply.map(|b| b.boxed()))
                        }
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

    /// Registers siphon's public keys (its `/.well-known/jwks.json`) for `smart_client`.
    pub fn trust(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = Some(jwks);
    }

    /// Every token request: its form, and the verified assertion's claims (`None`: refused).
    pub fn token_requests(&self) -> Vec<(HashMap<String, String>, Option<Value>)> {
        self.state.lock().unwrap().token_requests.clone()
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/auth/token", self.addr)
    }
}

/// Checks a token request as a SMART authorization server does; the verified claims.
fn check_token_request(
    form: &HashMap<String, String>,
    jwks: Option<&Value>,
    client: &str,
    token_url: &str,
) -> Result<Value, String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Err("grant_type".into());
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err("client_assertion_type".into());
    }
    let jwt = form.get("client_assertion").ok_or("no client_assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err("not a JWS".into());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = b64.decode(p).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(h)?, decode(c)?);
    if header["alg"] != "ES384" {
        return Err(format!("alg {}", header["alg"]));
    }
    let key = jwks
        .and_then(|set| set["keys"].as_array())
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .ok_or("no registered key has this kid")?;
    let mut point = vec![4u8];
    for m in ["x", "y"] {
        point.extend(
            b64.decode(key[m].as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?,
        );
    }
    let signature = b64.decode(sig).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, &point)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "bad signature")?;
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if claims["iss"] != client || claims["sub"] != client {
        return Err(format!("unknown client {}", claims["iss"]));
    }
    if claims["aud"] != token_url {
        return Err(format!("aud {}", claims["aud"]));
    }
    if exp <= now || exp > now + 305 || claims["jti"].as_str().unwrap_or_default().is_empty() {
        return Err("exp or jti".into());
    }
    Ok(claims)
}

fn respond(
    state: &Mutex<State>,
    script: &Script,
    addr: SocketAddr,
    req: &hyper::http::request::Parts,
    body: &[u8],
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri.path().to_string();
    let authorization = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = state.lock().unwrap();
    st.seen.push(Seen {
        method: req.method.to_string(),
        path: path.clone(),
        query: req.uri.query().unwrap_or_default().to_string(),
        authorization: authorization.clone(),
        range: req
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
    });
    let base = format!("http://{addr}");
    if script.revoke_tokens_at == Some(path.as_str()) {
        st.revoked = true;
    }
    if let Some(client) = script.smart_client {
        // OAuth 2.0 Protected Resource Metadata (RFC 9728) naming this server as its
        // authorization server, whose metadata (RFC 8414) names the token endpoint.
        if path == "/.well-known/oauth-protected-resource" {
            let doc = json!({"resource": base, "authorization_servers": [base]});
            return answer(200, &[], doc.to_string());
        }
        if path == "/.well-known/oauth-authorization-server" {
            let doc = json!({"issuer": base, "token_endpoint": format!("{base}/auth/token"),
                             "token_endpoint_auth_methods_supported": ["private_key_jwt"]});
            return answer(200, &[], doc.to_string());
        }
        if path == "/fhir/.well-known/smart-configuration" {
            let doc = json!({"token_endpoint": format!("{base}/auth/token"),
                             "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                             "grant_types_supported": ["client_credentials"]});
            return answer(200, &[], doc.to_string());
        }
        if path == "/auth/token" && req.method == hyper::Method::POST {
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(body).into_owned().collect();
            let checked = check_token_request(
                &form,
                st.jwks.as_ref(),
                client,
                &format!("{base}/auth/token"),
            );
            st.token_requests
                .push((form, checked.as_ref().ok().cloned()));
            let token = if st.revoked {
                let token = format!("{SMART_TOKEN}-{}", st.token_requests.len());
                st.renewed.push(token.clone());
                token
            } else {
                SMART_TOKEN.to_string()
            };
            return match checked {
                Ok(_) => answer(
                    200,
                    &[],
                    json!({"access_token": token, "token_type": "bearer", "expires_in": 300})
                        .to_string(),
                ),
                Err(why) => answer(
                    401,
                    &[],
                    json!({"error": "invalid_client", "error_description": why}).to_string(),
                ),
            };
        }
    }
    let wanted = script
        .credential
        .clone()
        .unwrap_or_else(|| format!("Bearer {TOKEN}"));
    let accepted = if st.revoked {
        st.renewed
            .iter()
            .any(|t| authorization.as_deref() == Some(format!("Bearer {t}").as_str()))
    } else {
        authorization.as_ref() == Some(&wanted)
    };
    if script.requires_token && !accepted {
        return answer(401, &[], outcome("a credential is required"));
    }
    if let Some((name, value)) = script.required_header {
        let protected = path.starts_with("/manifest/") || path.starts_with("/files/");
        if protected && req.headers.get(name).and_then(|v| v.to_str().ok()) != Some(value) {
            return answer(401, &[], outcome("the provider's header is required"));
        }
    }
    if req.method == hyper::Method::DELETE && path == "/status/1" {
        return answer(202, &[], String::new());
    }
    match path.as_str() {
        "/fhir/$export" => {
            st.kick_offs += 1;
            let fails = script.kick_off_failures == 0 || st.kick_offs <= script.kick_off_failures;
            match script.kick_off_error {
                Some((status, text)) if fails => answer(status, &[], outcome(text)),
                _ => answer(
                    202,
                    &[("content-location", format!("{base}/status/1"))],
                    String::new(),
                ),
            }
        }
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
        p if p.starts_with("/files/") => {
            let name = &p["/files/".len()..];
            if let Some(location) = script.redirects.get(name) {
                return answer(302, &[("location", location.clone())], String::new());
            }
            if let Some(bytes) = script.raw_files.get(name) {
                return hyper::Response::builder()
                    .status(200)
                    .body(Full::new(Bytes::from(bytes.clone())))
                    .unwrap();
            }
            match script.files.get(name) {
                Some(body) if script.ranges && req.headers.contains_key("range") => {
                    ranged(req, body)
                }
                Some(body) => answer(200, &[], body.clone()),
                None => answer(404, &[], outcome("no such file")),
            }
        }
        _ => answer(404, &[], outcome("unknown path")),
    }
}

/// `body` from the `Range: bytes=N-` asked: 206 with `Content-Range`, or 416.
fn ranged(req: &hyper::http::request::Parts, body: &str) -> hyper::Response<Full<Bytes>> {
    let asked = req.headers["range"].to_str().unwrap_or("");
    let from = asked
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match from {
        Some(from) if from < body.len() => answer(
            206,
            &[(
                "content-range",
                format!("bytes {from}-{}/{}", body.len() - 1, body.len()),
            )],
            body[from..].to_string(),
        ),
        _ => answer(
            416,
            &[("content-range", format!("bytes */{}", body.len()))],
            String::new(),
        ),
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
