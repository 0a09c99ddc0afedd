//! The `$import-pnp` request (Pathling's "ping and pull"): a FHIR `Parameters` body
//! naming the remote kick-off URL, the export parameters to pass on, and (siphon's
//! addition) how to authenticate to the remote.
//!
//! | parameter | value | what siphon does |
//! |---|---|---|
//! | `exportUrl` (1..1) | `valueUrl`/`valueUri`/`valueString` | the remote kick-off URL (system, `Patient/` or `Group/{id}/` `$export`) |
//! | `_type` (0..*) | `valueString`/`valueCode`, comma lists allowed | passed on |
//! | `_since`, `_until` | `valueInstant`/`valueDateTime`/`valueString` | passed on |
//! | `_typeFilter` (0..*), `_elements`, `_outputFormat`, `includeAssociatedData` | `valueString` | passed on |
//! | `exportType` | `static` or `dynamic` | accepted; siphon always polls |
//! | `mode` | `merge` (default) | siphon upserts; `overwrite`, `append`, `ignore`, `error` are 400 |
//! | `inputFormat` | `application/fhir+ndjson` (default) | anything else is 400 |
//! | `auth` | parts `type` (`none`, `bearer`, `basic`, `smart`), and `token`, `username` + `password`, or `clientId` (+ `scope`) | how siphon authenticates to the remote |

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::pull::RemoteAuth;

/// The longest client id siphon signs as (OAuth sets no bound; 4 KiB keeps an
/// assertion well inside any header or form limit).
pub const MAX_CLIENT_ID: usize = 4096;

/// Export parameters passed on to the remote kick-off, each repeatable.
const PASSED_ON: &[&str] = &[
    "_type",
    "_since",
    "_until",
    "_typeFilter",
    "_elements",
    "_outputFormat",
    "includeAssociatedData",
];

/// A parsed `$import-pnp` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// The kick-off URL with the passed-on parameters in its query.
    pub export_url: String,
    pub auth: RemoteAuth,
    /// The types `_type` names (empty: whatever the remote exports).
    pub types: Vec<String>,
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

/// The value of a `Parameters.parameter` of a primitive type, as text.
fn primitive(p: &Value) -> Option<String> {
    let obj = p.as_object()?;
    obj.iter()
        .find(|(k, _)| k.starts_with("value"))
        .and_then(|(_, v)| match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Object(o) => o.get("code").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
}

/// Parses a `$import-pnp` body.
pub fn parse(body: &Value) -> Result<PullRequest> {
    if body["resourceType"] != "Parameters" {
        return Err(bad("$import-pnp takes a Parameters resource"));
    }
    let params = body["parameter"]
        .as_array()
        .ok_or_else(|| bad("Parameters.parameter must be an array"))?;
    let mut export_url = None;
    let mut passed: Vec<(String, String)> = Vec::new();
    let mut auth = RemoteAuth::None;
    let mut types = Vec::new();
    for p in params {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| bad("every parameter needs a name"))?;
        let value = || primitive(p).ok_or_else(|| bad(format!("parameter {name} needs a value")));
        match name {
            "exportUrl" => {
                if export_url.replace(value()?).is_some() {
                    return Err(bad("exportUrl must be given once"));
                }
            }
            "exportType" => match value()?.as_str() {
                "static" | "dynamic" => {}
                other => return Err(bad(format!("exportType {other:?}: use static or dynamic"))),
            },
            "mode" => match value()?.as_str() {
                "merge" => {}
                other => {
                    return Err(bad(format!(
                        "mode {other:?} is not supported: siphon loads as merge (an existing resource is replaced by the one pulled)"
                    )))
                }
            },
            "inputFormat" => match value()?.as_str() {
                "application/fhir+ndjson" | "application/ndjson" | "ndjson" => {}
                other => return Err(bad(format!("inputFormat {other:?}: only ndjson is loaded"))),
            },
            "auth" => auth = parse_auth(p)?,
            n if PASSED_ON.contains(&n) => {
                let v = value()?;
                if n == "_type" {
                    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        crate::ResourceType::parse(t)?;
                        types.push(t.to_string());
                    }
                }
                passed.push((n.to_string(), v));
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    let export_url = export_url.ok_or_else(|| bad("exportUrl is required"))?;
    Ok(PullRequest {
        export_url: kick_off_url(&export_url, &passed)?,
        auth,
        types,
    })
}

/// `auth` with parts `type` and, by type, `token` (bearer) or `username` and `password`
/// (basic).
fn parse_auth(p: &Value) -> Result<RemoteAuth> {
    let parts = p["part"].as_array().ok_or_else(|| {
        bad("auth needs parts: type (none, bearer, basic, smart) and its credential")
    })?;
    let part = |name: &str| parts.iter().find(|q| q["name"] == name).and_then(primitive);
    match part("type").as_deref() {
        Some("none") | None => Ok(RemoteAuth::None),
        Some("bearer") => {
            let token = part("token")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("auth type bearer needs a token part"))?;
            if token.chars().any(|c| c.is_control() || c == ' ') {
                return Err(bad(
                    "the bearer token must be one word of visible characters",
                ));
            }
            Ok(RemoteAuth::Bearer { token })
        }
        Some("basic") => {
            let (Some(username), Some(password)) = (part("username"), part("password")) else {
                return Err(bad("auth type basic needs username and password parts"));
            };
            // RFC 7617: the user-id cannot hold a colon; neither part may hold control
            // characters (they would end the header).
            if username.is_empty() || username.contains(':') {
                return Err(bad(
                    "the basic username must be non-empty and hold no colon",
                ));
            }
            if username
                .chars()
                .chain(password.chars())
                .any(char::is_control)
            {
                return Err(bad(
                    "the basic username and password must hold no control characters",
                ));
            }
            Ok(RemoteAuth::Basic { username, password })
        }
        Some("smart") => {
            let client_id = part("clientId")
                // Client ids can be long: SMART's reference server hands out signed JWTs
                // of 500+ characters.
                .filter(|c| !c.is_empty() && c.len() <= MAX_CLIENT_ID)
                .ok_or_else(|| bad("auth type smart needs a clientId part (the id the remote registered siphon under)"))?;
            let scope =
                part("scope").unwrap_or_else(|| crate::auth::remote::DEFAULT_SCOPE.to_string());
            if client_id.chars().chain(scope.chars()).any(char::is_control) || scope.len() > 1000 {
                return Err(bad(
                    "the smart clientId and scope must hold no control characters",
                ));
            }
            Ok(RemoteAuth::Smart {
                client_id,
                scope,
                metadata: None,
            })
        }
        Some(other) => Err(bad(format!(
            "auth type {other:?}: use none, bearer, basic or smart"
        ))),
    }
}

/// The kick-off URL with `passed` appended to its query; refused unless it names a
/// Bulk Data export operation (its last path segment is `$export`).
fn kick_off_url(url: &str, passed: &[(String, String)]) -> Result<String> {
    let mut u = url::Url::parse(url).map_err(|e| bad(format!("exportUrl {url:?}: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(bad("exportUrl must be an https URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("exportUrl must not carry user info"));
    }
    let last = u
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    if last != "$export" && last != "%24export" {
        return Err(bad(
            "exportUrl must be a Bulk Data kick-off URL ([base]/$export, [base]/Patient/$export or [base]/Group/{id}/$export)",
        ));
    }
    u.set_fragment(None);
    if !passed.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in passed {
            q.append_pair(k, v);
        }
    }
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(ps: Value) -> Value {
        json!({"resourceType": "Parameters", "parameter": ps})
    }

    #[test]
    fn passes_export_parameters_on_in_the_kick_off_query() {
        let r = parse(&params(json!([
            {"name": "exportUrl", "valueUrl": "https://ehr.example.org/fhir/Group/g1/$export"},
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"},
            {"name": "_typeFilter", "valueString": "Observation?status=final"},
            {"name": "mode", "valueCode": "merge"},
            {"name": "exportType", "valueCoding": {"code": "dynamic"}}
        ])))
        .unwrap();
        assert_eq!(
            r.export_url,
            "https://ehr.example.org/fhir/Group/g1/$export?_type=Patient%2CObservation&_since=2026-01-01T00%3A00%3A00Z&_typeFilter=Observation%3Fstatus%3Dfinal"
        );
        assert_eq!(r.types, ["Patient", "Observation"]);
        assert_eq!(r.auth, RemoteAuth::None);
    }

    #[test]
    fn reads_a_bearer_token() {
        let r = parse(&params(json!([
            {"name": "exportUrl", "valueUrl": "https://ehr.example.org/fhir/$export"},
            {"name": "auth", "part": [{"name": "type", "valueCode": "bearer"},
                                      {"name": "token", "valueString": "abc.def"}]}
        ])))
        .unwrap();
        assert_eq!(
            r.auth,
            RemoteAuth::Bearer {
                token: "abc.def".into()
            }
        );
    }

    #[test]
    fn reads_basic_credentials_and_refuses_ones_that_would_break_the_header() {
        let auth = |parts: Value| {
            parse(&params(json!([
                {"name": "exportUrl", "valueUrl": "https://ehr.example.org/fhir/$export"},
                {"name": "auth", "part": parts}
            ])))
        };
        let r = auth(json!([{"name": "type", "valueCode": "basic"},
                            {"name": "username", "valueString": "siphon"},
                            {"name": "password", "valueString": "pa ss:word"}]))
        .unwrap();
        assert_eq!(
            r.auth,
            RemoteAuth::Basic {
                username: "siphon".into(),
                password: "pa ss:word".into()
            }
        );
        for (parts, expected) in [
            (
                json!([{"name": "type", "valueCode": "basic"},
                       {"name": "username", "valueString": "siphon"}]),
                "username and password",
            ),
            (
                json!([{"name": "type", "valueCode": "basic"},
                       {"name": "username", "valueString": "a:b"},
                       {"name": "password", "valueString": "x"}]),
                "no colon",
            ),
            (
                json!([{"name": "type", "valueCode": "basic"},
                       {"name": "username", "valueString": "a"},
                       {"name": "password", "valueString": "x\r\nX-Evil: 1"}]),
                "control characters",
            ),
            (
                json!([{"name": "type", "valueCode": "digest"}]),
                "none, bearer, basic or smart",
            ),
            (json!([{"name": "type", "valueCode": "smart"}]), "clientId"),
        ] {
            let e = auth(parts.clone()).unwrap_err().to_string();
            assert!(e.contains(expected), "{parts}: {e}");
        }
    }

    #[test]
    fn reads_a_smart_client_with_the_default_scope() {
        let r = parse(&params(json!([
            {"name": "exportUrl", "valueUrl": "https://ehr.example.org/fhir/$export"},
            {"name": "auth", "part": [{"name": "type", "valueCode": "smart"},
                                      {"name": "clientId", "valueString": "siphon-at-ehr"}]}
        ])))
        .unwrap();
        assert_eq!(
            r.auth,
            RemoteAuth::Smart {
                client_id: "siphon-at-ehr".into(),
                scope: "system/*.read".into(),
                metadata: None,
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_with_a_reason() {
        let cases = [
            (json!({"resourceType": "Bundle"}), "Parameters"),
            (params(json!([])), "exportUrl is required"),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/fhir/Patient"}]),
                ),
                "kick-off URL",
            ),
            (
                params(json!([{"name": "exportUrl", "valueUrl": "ftp://x.example/$export"}])),
                "https",
            ),
            (
                params(json!([{"name": "exportUrl", "valueUrl": "https://u:p@x.example/$export"}])),
                "user info",
            ),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/$export"},
                           {"name": "mode", "valueCode": "overwrite"}]),
                ),
                "not supported",
            ),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/$export"},
                           {"name": "inputFormat", "valueCode": "text/csv"}]),
                ),
                "ndjson",
            ),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/$export"},
                           {"name": "_type", "valueString": "patient;drop"}]),
                ),
                "resource type",
            ),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/$export"},
                           {"name": "auth", "part": [{"name": "type", "valueCode": "bearer"}]}]),
                ),
                "token",
            ),
            (
                params(
                    json!([{"name": "exportUrl", "valueUrl": "https://x.example/$export"},
                           {"name": "color", "valueString": "red"}]),
                ),
                "unknown parameter",
            ),
        ];
        for (body, expected) in cases {
            let e = parse(&body).unwrap_err().to_string();
            assert!(e.contains(expected), "{body}: {e}");
        }
    }

    #[test]
    fn a_long_client_id_is_taken_up_to_4_kib() {
        let with = |id: String| {
            parse(&params(json!([
                {"name": "exportUrl", "valueUrl": "https://ehr.example.org/fhir/$export"},
                {"name": "auth", "part": [{"name": "type", "valueCode": "smart"},
                                          {"name": "clientId", "valueString": id}]}
            ])))
        };
        // The size of a client id SMART's reference server registers (a signed JWT).
        assert!(with("e".repeat(531)).is_ok());
        assert!(with("e".repeat(MAX_CLIENT_ID)).is_ok());
        let e = with("e".repeat(MAX_CLIENT_ID + 1)).unwrap_err();
        assert!(e.to_string().contains("clientId"), "{e}");
    }
}
