//! The one HTTP edge: what every HTTP function (the API, the dumps) does with a request
//! before the domain sees it, and with the domain's answer or error after.
//!
//! - requests: the `Authorization` header, JSON or YAML bodies (`content-type`), the
//!   answer's format (`accept`), query parameters and paging;
//! - answers: a [`Reply`] rendered as JSON or YAML;
//! - errors: [`status_of`] is the one mapping from a domain [`Error`] to a status code,
//!   [`error_reply`] the one place an error becomes a body. Every error body carries the
//!   same `message`; the envelope follows the protocol of the route ([`ErrorStyle`]).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
pub use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::error::Error;

pub mod bounded;

/// Body formats the API speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Format {
    /// The answer's format: YAML when `accept` asks for it, else JSON.
    pub fn of_answer(headers: &HeaderMap) -> Self {
        if header(headers, "accept").is_some_and(|v| v.contains("yaml")) {
            Format::Yaml
        } else {
            Format::Json
        }
    }
}

/// The `Authorization` header, if any.
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    header(headers, "authorization")
}

/// The media type of `content-type`, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    header(headers, "content-type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// JSON bodies.
pub const JSON_TYPES: [&str; 2] = ["application/json", "application/fhir+json"];
/// YAML bodies (as the seeds send them).
pub const YAML_TYPES: [&str; 4] = [
    "text/yaml",
    "application/yaml",
    "application/x-yaml",
    "text/x-yaml",
];
/// The token endpoint's body.
pub const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// The largest request body by default (`SIPHON_MAX_BODY_BYTES`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Checks a request before it is routed:
/// - its body is at most `max_bytes` (413 otherwise);
/// - a state-changing request (POST, PUT, PATCH) says its body is JSON or YAML, or a
///   form where `form` (the token endpoint, which takes nothing else). A web page can
///   make a browser send a `text/plain`, form or multipart post to any site with that
///   site's cached credentials and no preflight: such a request is refused (415) before
///   anything is read, so it never starts work. An empty body needs the header too.
pub fn check_request(
    method: &Method,
    headers: &HeaderMap,
    body_len: usize,
    max_bytes: usize,
    form: bool,
) -> Result<(), Error> {
    check_size(body_len, max_bytes)?;
    check_content_type(method, headers, form)
}

/// 413 for a body over `max_bytes`.
pub fn check_size(body_len: usize, max_bytes: usize) -> Result<(), Error> {
    if body_len > max_bytes {
        return Err(Error::TooLarge(format!(
            "the request body is {body_len} bytes; at most {max_bytes} are accepted"
        )));
    }
    Ok(())
}

/// The content-type half of [`check_request`].
pub fn check_content_type(method: &Method, headers: &HeaderMap, form: bool) -> Result<(), Error> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let media = media_type(headers).unwrap_or_default();
    let ok = if form {
        media == FORM_TYPE
    } else {
        JSON_TYPES.contains(&media.as_str()) || YAML_TYPES.contains(&media.as_str())
    };
    if ok {
        return Ok(());
    }
    let wanted = if form {
        FORM_TYPE.to_string()
    } else {
        "application/json, application/fhir+json or text/yaml".to_string()
    };
    Err(Error::UnsupportedMediaType(if media.is_empty() {
        format!("send a content-type header: {wanted}")
    } else {
        format!("content-type {media:?} is not accepted here: send {wanted}")
    }))
}

/// The body as a value: YAML when `content-type` says so, else JSON. An empty or
/// malformed body is a `BadRequest` saying which. JSON nests at most 128 levels; YAML
/// aliases may not expand the document beyond a few times its size (see
/// [`bounded::from_yaml`]).
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::BadRequest("the request body is empty".into()));
    }
    if media_type(headers).is_some_and(|v| v.contains("yaml")) {
        bounded::from_yaml(body)
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))
    }
}

/// Every value of query parameter `name`, in order (`_type=A&_type=B`).
pub fn query_values(uri: &Uri, name: &str) -> Vec<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The first value of query parameter `name`.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    query_values(uri, name).into_iter().next()
}

/// The base URL clients reached this service at (`https://api.example.org`), for the
/// absolute URLs FHIR wants: `public` when configured (a custom domain behind a proxy),
/// else the `Host` header with `X-Forwarded-Proto` (as API Gateway sets it), `http` for
/// loopback hosts and `https` otherwise.
pub fn base_url(headers: &HeaderMap, public: Option<&str>) -> String {
    if let Some(p) = public {
        return p.trim_end_matches('/').to_string();
    }
    let host = header(headers, "host").unwrap_or("localhost");
    let loopback =
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    let proto = header(headers, "x-forwarded-proto")
        .map(|p| p.split(',').next().unwrap_or("https").trim().to_string())
        .unwrap_or_else(|| {
            if loopback {
                "http".into()
            } else {
                "https".into()
            }
        });
    format!("{proto}://{host}")
}

/// Every value of a header (`Prefer` may come several times).
pub fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// `_count` and `_offset` of a list request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub count: i64,
    pub offset: i64,
}

impl Paging {
    /// `_count` (default `default`, at most `max`, at least 1) and `_offset` (default 0);
    /// values that are not numbers take the defaults.
    pub fn from_query(uri: &Uri, default: i64, max: i64) -> Self {
        let number = |name| query_param(uri, name).and_then(|v| v.parse::<i64>().ok());
        Paging {
            count: number("_count").unwrap_or(default).clamp(1, max),
            offset: number("_offset").unwrap_or(0).max(0),
        }
    }
}

/// The non-empty parts of a path: `/$import/x/` -> `["$import", "x"]`.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// What an answer carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A value, rendered in the negotiated [`Format`].
    Value(Value),
    /// Bytes as they are, with their content type (FHIR JSON, HTML, CSS...).
    Raw {
        content_type: &'static str,
        bytes: Bytes,
    },
    Empty,
}

/// A successful (or error) answer, before rendering.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Body,
}

impl Reply {
    /// A value answered with `status`.
    pub fn value(status: StatusCode, body: Value) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Value(body),
        }
    }

    /// `200 OK` with a value.
    pub fn ok(body: Value) -> Self {
        Self::value(StatusCode::OK, body)
    }

    /// Raw bytes with their content type.
    pub fn raw(status: StatusCode, content_type: &'static str, bytes: impl Into<Bytes>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Raw {
                content_type,
                bytes: bytes.into(),
            },
        }
    }

    /// Adds a header (values that are not valid header text are dropped when rendering).
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// How an error body is wrapped, by the protocol of the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// REST routes: `{"message": ...}`.
    Plain,
    /// `POST /rpc`: `{"error": {"message": ...}}`, as Aidbox's RPC answers.
    Rpc,
    /// FHIR operations (`$export`, `/metadata`): an `OperationOutcome` whose
    /// `diagnostics` is the message, as the Bulk Data IG requires.
    Fhir,
    /// The same `OperationOutcome` as `application/json`: the Bulk Data status URL,
    /// whose client asks for `application/json` (the manifest's type) and reads an
    /// error as JSON, unless its `Accept` names `application/fhir+json`.
    FhirAsJson,
}

/// The status code of a domain error: the one mapping.
pub fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Database(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The FHIR `IssueType` code of an error.
fn issue_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid",
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        406 => "not-supported",
        409 => "conflict",
        413 => "too-costly",
        415 => "not-supported",
        429 => "throttled",
        503 => "transient",
        _ => "exception",
    }
}

/// An `OperationOutcome` with one issue.
pub fn operation_outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]})
}

/// The answer to a failed request. Server errors are logged here (the message names
/// what failed; no request content).
pub fn error_reply(err: &Error, style: ErrorStyle) -> Reply {
    let status = status_of(err);
    if status.is_server_error() {
        tracing::error!(error = %err, status = status.as_u16(), "request failed");
    }
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        format!("internal error: {err}")
    } else {
        err.to_string()
    };
    let mut reply = match style {
        ErrorStyle::Plain => Reply::value(status, json!({"message": message})),
        ErrorStyle::Rpc => Reply::value(status, json!({"error": {"message": message}})),
        ErrorStyle::Fhir => {
            let outcome = operation_outcome("error", issue_code(status), &message);
            Reply::raw(status, "application/fhir+json", outcome.to_string())
        }
        ErrorStyle::FhirAsJson => {
            let outcome = operation_outcome("error", issue_code(status), &message);
            Reply::raw(status, "application/json", outcome.to_string())
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        reply = reply.header(WWW_AUTHENTICATE, "Basic realm=\"siphon\"");
    }
    if let Error::Throttled {
        retry_after_secs, ..
    } = err
    {
        reply = reply.header(RETRY_AFTER, retry_after_secs.to_string());
    }
    reply
}

/// Renders a reply: values as JSON or YAML, raw bodies as they are.
pub fn render(reply: Reply, format: Format) -> http::Response<Bytes> {
    let (content_type, bytes): (&str, Bytes) = match reply.body {
        Body::Value(v) => match format {
            Format::Json => ("application/json", v.to_string().into()),
            Format::Yaml => (
                "text/yaml",
                serde_norway::to_string(&v).unwrap_or_default().into(),
            ),
        },
        Body::Raw {
            content_type,
            bytes,
        } => (content_type, bytes),
        Body::Empty => ("", Bytes::new()),
    };
    let mut response = http::Response::new(bytes);
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    if !content_type.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bodies_parse_as_json_or_yaml_and_say_what_is_wrong() {
        let yaml = headers(&[("content-type", "text/yaml")]);
        assert_eq!(
            parse_body(&yaml, b"method: x\nparams: {a: 1}").unwrap(),
            json!({"method": "x", "params": {"a": 1}})
        );
        assert_eq!(
            parse_body(&HeaderMap::new(), br#"{"a":[1]}"#).unwrap(),
            json!({"a": [1]})
        );
        for (h, body, why) in [
            (HeaderMap::new(), &b"  "[..], "empty"),
            (HeaderMap::new(), &b"{"[..], "not valid JSON"),
            (yaml.clone(), &b"a: [1"[..], "not valid YAML"),
        ] {
            let e = parse_body(&h, body).unwrap_err();
            assert!(matches!(&e, Error::BadRequest(m) if m.contains(why)), "{e}");
        }
    }

    #[test]
    fn query_parameters_and_paging() {
        let uri: Uri = "/x?_type=A,B&_type=C&_count=5000&_offset=-3&q=a%20b"
            .parse()
            .unwrap();
        assert_eq!(query_values(&uri, "_type"), vec!["A,B", "C"]);
        assert_eq!(query_param(&uri, "q").as_deref(), Some("a b"));
        assert_eq!(
            Paging::from_query(&uri, 100, 1000),
            Paging {
                count: 1000,
                offset: 0
            }
        );
        let bad: Uri = "/x?_count=many".parse().unwrap();
        assert_eq!(Paging::from_query(&bad, 100, 1000).count, 100);
        assert_eq!(segments("/$import/x/"), vec!["$import", "x"]);
        let h = headers(&[("host", "api.example.org"), ("x-forwarded-proto", "https")]);
        assert_eq!(base_url(&h, None), "https://api.example.org");
        assert_eq!(
            base_url(&headers(&[("host", "127.0.0.1:8080")]), None),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url(&h, Some("https://fhir.example.org/")),
            "https://fhir.example.org"
        );
    }

    #[test]
    fn every_error_kind_has_its_status_and_one_message() {
        let cases = [
            (Error::BadRequest("b".into()), 400),
            (Error::Unauthorized("u".into()), 401),
            (Error::Forbidden("f".into()), 403),
            (Error::NotFound("n".into()), 404),
            (Error::NotAcceptable("a".into()), 406),
            (Error::Conflict("c".into()), 409),
            (Error::TooLarge("l".into()), 413),
            (Error::UnsupportedMediaType("m".into()), 415),
            (
                Error::Throttled {
                    message: "t".into(),
                    retry_after_secs: 7,
                },
                429,
            ),
            (Error::Internal("i".into()), 500),
            (Error::Unavailable("s".into()), 503),
        ];
        for (err, status) in cases {
            assert_eq!(status_of(&err).as_u16(), status);
            let plain = render(error_reply(&err, ErrorStyle::Plain), Format::Json);
            let body: Value = serde_json::from_slice(plain.body()).unwrap();
            let message = body["message"].as_str().unwrap().to_string();
            let rpc = render(error_reply(&err, ErrorStyle::Rpc), Format::Json);
            let body: Value = serde_json::from_slice(rpc.body()).unwrap();
            assert_eq!(body["error"]["message"], message.as_str());
            let fhir = render(error_reply(&err, ErrorStyle::Fhir), Format::Json);
            assert_eq!(fhir.headers()[CONTENT_TYPE], "application/fhir+json");
            let body: Value = serde_json::from_slice(fhir.body()).unwrap();
            assert_eq!(body["resourceType"], "OperationOutcome");
            assert_eq!(body["issue"][0]["diagnostics"], message.as_str());
            let json = render(error_reply(&err, ErrorStyle::FhirAsJson), Format::Json);
            assert_eq!(json.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(serde_json::from_slice::<Value>(json.body()).unwrap(), body);
            assert_eq!(
                plain.headers().contains_key(WWW_AUTHENTICATE),
                status == 401
            );
            assert_eq!(plain.headers().contains_key(RETRY_AFTER), status == 429);
        }
    }

    #[test]
    fn replies_render_in_the_asked_format() {
        let r = Reply::ok(json!({"a": 1})).header(HeaderName::from_static("x-progress"), "1/2");
        let yaml = render(r.clone(), Format::Yaml);
        assert_eq!(yaml.headers()[CONTENT_TYPE], "text/yaml");
        assert_eq!(yaml.body().as_ref(), b"a: 1\n");
        let json = render(r, Format::Json);
        assert_eq!(json.headers()["x-progress"], "1/2");
        assert_eq!(
            Format::of_answer(&headers(&[("accept", "text/yaml")])),
            Format::Yaml
        );
    }
}
