//! The `$bulk-submit` and `$bulk-submit-status` request bodies (Bulk Data IG 4.0.0):
//! FHIR `Parameters`.
//!
//! | parameter | what siphon does |
//! |---|---|
//! | `submitter` (1..1, `valueIdentifier`) | with `submissionId`, names the submission (per client) |
//! | `submissionId` (1..1) | |
//! | `submissionStatus` (`valueCoding`, `http://hl7.org/fhir/event-status`) | `in-progress` (default), `completed`, `stopped`; the earlier ballot's `complete` and `aborted` too |
//! | `manifestUrl` (with `fhirBaseUrl`) | a Bulk Data manifest: its pages are read and its files loaded |
//! | `replacesManifestUrl` | that manifest's rows are removed; the new one (if any) loads after |
//! | `outputFormat` | `application/fhir+ndjson` (and `application/ndjson`, `ndjson`) only |
//! | `metadata` | accepted, not used |
//! | `oauthMetadataUrl` | must be the one registered on the calling Client (`bulkSubmit`): siphon gets a token with SMART Backend Services for the manifest, and for its files when it says `requiresAccessToken` |
//! | `fileRequestHeader` (0..*, parts `headerName`, `headerValue`) | sent with every request for the manifest and its files on the manifest's origin |
//! | `fileEncryptionKey`, `import` | refused (400): see `docs/pull-import.md` |

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::pull::FileHeader;
use crate::model::submission::{SubmissionStatus, Submitter};

/// A parsed `$bulk-submit` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRequest {
    pub submitter: Submitter,
    pub submission_id: String,
    /// Absent: `in-progress`, the IG's default.
    pub status: Option<SubmissionStatus>,
    pub manifest_url: Option<String>,
    pub fhir_base_url: Option<String>,
    pub replaces: Option<String>,
    /// `oauthMetadataUrl`: where the provider's token endpoint is found.
    pub oauth_metadata_url: Option<String>,
    /// `fileRequestHeader`s, checked.
    pub headers: Vec<FileHeader>,
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

/// The text of a primitive `value[x]` of a parameter.
fn text(p: &Value, name: &str) -> Result<String> {
    p.as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            bad(format!(
                "parameter {name} needs a text value (valueString, valueUrl, ...)"
            ))
        })
}

fn params<'a>(body: &'a Value, operation: &str) -> Result<&'a Vec<Value>> {
    if body["resourceType"] != "Parameters" {
        return Err(bad(format!("{operation} takes a Parameters resource")));
    }
    body["parameter"]
        .as_array()
        .ok_or_else(|| bad("Parameters.parameter must be an array"))
}

fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(bad(format!("{name} must be given once")));
    }
    Ok(())
}

fn submitter(p: &Value) -> Result<Submitter> {
    let id = &p["valueIdentifier"];
    let value = id["value"]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("submitter needs a valueIdentifier with a value"))?;
    Ok(Submitter {
        system: id["system"].as_str().map(str::to_string),
        value: value.to_string(),
    })
}

fn url(value: String, name: &str) -> Result<String> {
    match url::Url::parse(&value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(value),
        _ => Err(bad(format!("{name} must be an absolute http(s) URL"))),
    }
}

/// The submission a body names (`submitter`, `submissionId`), with the other
/// parameters it has.
fn identify(
    params: &[Value],
    mut other: impl FnMut(&str, &Value) -> Result<()>,
) -> Result<(Submitter, String)> {
    let mut who = None;
    let mut id = None;
    for p in params {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| bad("every parameter needs a name"))?;
        match name {
            "submitter" => {
                if who.replace(submitter(p)?).is_some() {
                    return Err(bad("submitter must be given once"));
                }
            }
            "submissionId" => once(&mut id, name, text(p, name)?)?,
            _ => other(name, p)?,
        }
    }
    let who = who.ok_or_else(|| bad("submitter is required"))?;
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("submissionId is required"))?;
    if id.len() > 256 {
        return Err(bad("submissionId is longer than 256 characters"));
    }
    Ok((who, id))
}

/// Parses a `$bulk-submit` body.
pub fn parse_submit(body: &Value) -> Result<SubmitRequest> {
    let params = params(body, "$bulk-submit")?;
    let mut status = None;
    let mut manifest = None;
    let mut base = None;
    let mut replaces = None;
    let mut oauth = None;
    let mut headers = Vec::new();
    let (submitter, submission_id) = identify(params, |name, p| {
        match name {
            "submissionStatus" => once(&mut status, name, submission_status(p)?)?,
            "manifestUrl" => once(&mut manifest, name, url(text(p, name)?, name)?)?,
            "fhirBaseUrl" => once(&mut base, name, url(text(p, name)?, name)?)?,
            "replacesManifestUrl" => once(&mut replaces, name, url(text(p, name)?, name)?)?,
            "outputFormat" => output_format(&text(p, name)?)?,
            "metadata" => {}
            "fileEncryptionKey" => {
                return Err(bad(
                    "fileEncryptionKey: siphon does not decrypt submitted files; submit them unencrypted over TLS",
                ))
            }
            "oauthMetadataUrl" => once(&mut oauth, name, url(text(p, name)?, name)?)?,
            "fileRequestHeader" => {
                if headers.len() == FileHeader::MAX_COUNT {
                    return Err(bad(format!(
                        "at most {} fileRequestHeader parameters",
                        FileHeader::MAX_COUNT
                    )));
                }
                headers.push(file_header(p)?);
            }
            "import" => {
                return Err(bad("import: siphon defines no import parameters; every resource is upserted"))
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
        Ok(())
    })?;
    SubmitRequest {
        submitter,
        submission_id,
        status,
        manifest_url: manifest,
        fhir_base_url: base,
        replaces,
        oauth_metadata_url: oauth,
        headers,
    }
    .checked()
}

impl SubmitRequest {
    /// The checks between parameters, once each is read.
    fn checked(self) -> Result<Self> {
        if self.manifest_url.is_none() && self.status.is_none() && self.replaces.is_none() {
            return Err(bad("one of submissionStatus and manifestUrl is required"));
        }
        if self.manifest_url.is_some() && self.fhir_base_url.is_none() {
            return Err(bad("fhirBaseUrl is required with manifestUrl"));
        }
        if self.status == Some(SubmissionStatus::Stopped)
            && (self.manifest_url.is_some() || self.replaces.is_some())
        {
            return Err(bad(
                "a stopped submission takes no manifestUrl or replacesManifestUrl",
            ));
        }
        if self.oauth_metadata_url.is_some()
            && self.headers.iter().any(|h| h.name == "authorization")
        {
            return Err(bad(
                "a fileRequestHeader named Authorization and an oauthMetadataUrl cannot go together: siphon sends the token it gets as Authorization",
            ));
        }
        Ok(self)
    }
}

/// `submissionStatus`: a Coding (or code) of in-progress, completed, stopped.
fn submission_status(p: &Value) -> Result<SubmissionStatus> {
    let code = p["valueCoding"]["code"]
        .as_str()
        .or_else(|| p["valueCode"].as_str())
        .ok_or_else(|| bad("submissionStatus needs a valueCoding"))?;
    SubmissionStatus::parse(code).ok_or_else(|| {
        bad(format!(
            "submissionStatus {code:?} is not one of in-progress, completed, stopped"
        ))
    })
}

/// `outputFormat`: siphon loads ndjson only.
fn output_format(format: &str) -> Result<()> {
    let mime = format.split(';').next().unwrap_or("").trim();
    if matches!(
        mime,
        "application/fhir+ndjson" | "application/ndjson" | "ndjson"
    ) {
        Ok(())
    } else {
        Err(bad(format!(
            "outputFormat {format:?}: siphon loads application/fhir+ndjson only"
        )))
    }
}

/// One `fileRequestHeader`: parts `headerName` and `headerValue`, checked.
fn file_header(p: &Value) -> Result<FileHeader> {
    let parts = p["part"]
        .as_array()
        .ok_or_else(|| bad("fileRequestHeader needs parts headerName and headerValue"))?;
    let part = |name: &str| -> Result<String> {
        let mut found = parts.iter().filter(|q| q["name"] == name);
        match (found.next(), found.next()) {
            (Some(q), None) => text(q, name),
            _ => Err(bad(format!("fileRequestHeader needs one {name} part"))),
        }
    };
    FileHeader::new(&part("headerName")?, &part("headerValue")?).map_err(bad)
}

/// Parses a `$bulk-submit-status` body: the submission it asks about.
pub fn parse_status(body: &Value) -> Result<(Submitter, String)> {
    let params = params(body, "$bulk-submit-status")?;
    identify(params, |name, p| match name {
        "_outputFormat" => {
            let format = text(p, name)?;
            if matches!(
                format.as_str(),
                "application/fhir+ndjson" | "application/ndjson" | "ndjson"
            ) {
                Ok(())
            } else {
                Err(bad(format!(
                    "_outputFormat {format:?}: status files are ndjson"
                )))
            }
        }
        other => Err(bad(format!("unknown parameter {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(extra: Value) -> Value {
        let mut p = vec![
            json!({"name": "submitter", "valueIdentifier": {"system": "http://example.org/s", "value": "a"}}),
            json!({"name": "submissionId", "valueString": "s1"}),
        ];
        p.extend(extra.as_array().unwrap().iter().cloned());
        json!({"resourceType": "Parameters", "parameter": p})
    }

    #[test]
    fn a_manifest_with_its_base_and_the_default_status() {
        let r = parse_submit(&body(json!([
            {"name": "manifestUrl", "valueUrl": "https://p.example/m/1.json"},
            {"name": "fhirBaseUrl", "valueUrl": "https://p.example/fhir"},
            {"name": "metadata", "part": [{"name": "parameterUrl", "valueUri": "http://x"}, {"name": "parameterValue", "valueString": "y"}]}
        ])))
        .unwrap();
        assert_eq!(r.submitter.system.as_deref(), Some("http://example.org/s"));
        assert_eq!(r.submission_id, "s1");
        assert_eq!(r.status, None);
        assert_eq!(
            r.manifest_url.as_deref(),
            Some("https://p.example/m/1.json")
        );
    }

    #[test]
    fn provider_headers_and_the_oauth_metadata_url_are_kept() {
        let header = |n: &str, v: &str| {
            json!({"name": "fileRequestHeader", "part": [
                {"name": "headerName", "valueString": n}, {"name": "headerValue", "valueString": v}]})
        };
        let r = parse_submit(&body(json!([
            {"name": "manifestUrl", "valueUrl": "https://p.example/m/1.json"},
            {"name": "fhirBaseUrl", "valueUrl": "https://p.example/fhir"},
            {"name": "oauthMetadataUrl", "valueUrl": "https://p.example/fhir/.well-known/smart-configuration"},
            header("X-Provider-Key", "k1"),
            header("x-tenant", "t 2")
        ])))
        .unwrap();
        assert_eq!(
            r.oauth_metadata_url.as_deref(),
            Some("https://p.example/fhir/.well-known/smart-configuration")
        );
        let names: Vec<_> = r
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(names, [("x-provider-key", "k1"), ("x-tenant", "t 2")]);
        let many: Vec<Value> = (0..17).map(|i| header(&format!("x-h{i}"), "v")).collect();
        let mut extra =
            vec![json!({"name": "submissionStatus", "valueCoding": {"code": "in-progress"}})];
        extra.extend(many);
        let e = parse_submit(&body(Value::Array(extra))).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
    }

    #[test]
    fn statuses_of_both_ballots() {
        let r = parse_submit(&body(json!([
            {"name": "submissionStatus", "valueCoding": {"system": "http://hl7.org/fhir/event-status", "code": "completed"}}
        ])))
        .unwrap();
        assert_eq!(r.status, Some(SubmissionStatus::Completed));
        let r = parse_submit(&body(json!([
            {"name": "submissionStatus", "valueCoding": {"code": "aborted"}}
        ])))
        .unwrap();
        assert_eq!(r.status, Some(SubmissionStatus::Stopped));
    }

    #[test]
    fn what_siphon_cannot_honour_is_refused_by_name() {
        for (extra, says) in [
            (json!([]), "one of submissionStatus and manifestUrl"),
            (
                json!([{"name": "manifestUrl", "valueUrl": "https://p.example/m"}]),
                "fhirBaseUrl is required",
            ),
            (
                json!([{"name": "manifestUrl", "valueUrl": "file:///etc/passwd"}]),
                "absolute http(s) URL",
            ),
            (
                json!([{"name": "submissionStatus", "valueCoding": {"code": "done"}}]),
                "is not one of",
            ),
            (
                json!([{"name": "fileEncryptionKey", "part": []}]),
                "fileEncryptionKey",
            ),
            (
                json!([{"name": "oauthMetadataUrl", "valueUrl": "file:///etc/passwd"}]),
                "oauthMetadataUrl must be an absolute http(s) URL",
            ),
            (
                json!([{"name": "fileRequestHeader", "part": []}]),
                "fileRequestHeader needs one headerName part",
            ),
            (
                json!([{"name": "fileRequestHeader", "part": [
                    {"name": "headerName", "valueString": "X-Key"},
                    {"name": "headerValue", "valueString": "a\r\nHost: evil.example"}]}]),
                "visible ASCII",
            ),
            (
                json!([{"name": "fileRequestHeader", "part": [
                    {"name": "headerName", "valueString": "Host"},
                    {"name": "headerValue", "valueString": "evil.example"}]}]),
                "set by siphon itself",
            ),
            (
                json!([{"name": "oauthMetadataUrl", "valueUrl": "https://p.example/.well-known/smart-configuration"},
                       {"name": "submissionStatus", "valueCoding": {"code": "in-progress"}},
                       {"name": "fileRequestHeader", "part": [
                    {"name": "headerName", "valueString": "Authorization"},
                    {"name": "headerValue", "valueString": "Bearer x"}]}]),
                "cannot go together",
            ),
            (
                json!([{"name": "outputFormat", "valueString": "text/csv"}]),
                "application/fhir+ndjson only",
            ),
            (
                json!([{"name": "mode", "valueString": "x"}]),
                "unknown parameter",
            ),
            (
                json!([{"name": "submissionStatus", "valueCoding": {"code": "stopped"}},
                    {"name": "manifestUrl", "valueUrl": "https://p.example/m"},
                    {"name": "fhirBaseUrl", "valueUrl": "https://p.example/fhir"}]),
                "takes no manifestUrl",
            ),
        ] {
            let e = parse_submit(&body(extra.clone())).unwrap_err().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        let e = parse_submit(&json!({"resourceType": "Parameters", "parameter": [
            {"name": "submissionId", "valueString": "s1"},
            {"name": "submissionStatus", "valueCoding": {"code": "completed"}}]}))
        .unwrap_err();
        assert!(e.to_string().contains("submitter is required"), "{e}");
    }

    #[test]
    fn the_status_request_names_the_submission() {
        let (who, id) = parse_status(&body(
            json!([{"name": "_outputFormat", "valueString": "ndjson"}]),
        ))
        .unwrap();
        assert_eq!((who.value.as_str(), id.as_str()), ("a", "s1"));
        assert!(parse_status(&body(json!([{"name": "x", "valueString": "y"}]))).is_err());
    }
}
