//! Reading `$import` and `$load` requests: every check that answers 400 happens here,
//! before anything is stored or fetched.

use serde::Deserialize;
use serde_json::Value;

use crate::config::Env;
use crate::error::{Error, Result};
use crate::model::ids::is_valid_id;
use crate::model::{FileOptions, SessionStatus, Validation};
use crate::resource_type::ResourceType;
use crate::sources::ObjectLocation;

/// What a `$import` request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Abort,
    ForceResume,
}

impl Action {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "start" => Action::Start,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            "force-resume" => Action::ForceResume,
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown action {other:?}: use start, pause, resume, abort or force-resume"
                )))
            }
        })
    }

    /// What a change of an existing session does: the statuses it may start from, the
    /// status it ends in, and which of its files move (from these statuses, to that
    /// one). `None` for `start`, which creates a session instead.
    pub fn change(self) -> Option<Change> {
        use SessionStatus as S;
        Some(match self {
            Action::Start => return None,
            Action::Pause => Change {
                verb: "pause",
                from: &[S::Active],
                to: S::Paused,
                files_from: &["pending"],
                files_to: "paused",
            },
            Action::Resume => Change {
                verb: "resume",
                from: &[S::Paused],
                to: S::Active,
                files_from: &["paused"],
                files_to: "pending",
            },
            Action::Abort => Change {
                verb: "abort",
                from: &[S::Active, S::Paused],
                to: S::Aborted,
                files_from: &["pending", "paused", "in-progress"],
                files_to: "aborted",
            },
            Action::ForceResume => Change {
                verb: "force-resume",
                from: &[S::Active, S::Paused, S::Error],
                to: S::Active,
                files_from: &["pending", "paused", "error", "in-progress"],
                files_to: "pending",
            },
        })
    }
}

/// A session's change of status (see [`Action::change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub verb: &'static str,
    pub from: &'static [SessionStatus],
    pub to: SessionStatus,
    pub files_from: &'static [&'static str],
    pub files_to: &'static str,
}

/// Where an input's bytes are, as the request names them (not yet checked for safety).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputUrl {
    /// `s3://bucket/key`, or a `resource-file` resolved against the import bucket.
    S3(ObjectLocation),
    /// Anything else: must pass the URL guard (https, public addresses).
    Web(String),
}

/// One input of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub resource_type: Option<ResourceType>,
    pub url: InputUrl,
}

/// A parsed `$import` request.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub id: Option<String>,
    pub action: Action,
    pub secret: Option<String>,
    /// Only for `start`.
    pub inputs: Vec<Input>,
    /// How the inputs load (`disable-idx?`, `drop-primary-key?`); only for `start`.
    pub options: FileOptions,
    /// The request as stored with the session (the secret removed).
    pub stored: Value,
}

/// Where `resource-file` inputs live: never the function's filesystem.
#[derive(Clone, Debug, Default)]
pub struct ImportConfig {
    /// `SIPHON_IMPORT_BUCKET`.
    pub bucket: Option<String>,
    /// `SIPHON_IMPORT_PREFIX` (may be empty).
    pub prefix: String,
}

impl ImportConfig {
    /// `SIPHON_IMPORT_BUCKET` and `SIPHON_IMPORT_PREFIX`.
    pub fn from_env(env: &Env) -> Self {
        ImportConfig {
            bucket: env.get("SIPHON_IMPORT_BUCKET").map(str::to_string),
            prefix: env.get("SIPHON_IMPORT_PREFIX").unwrap_or("").to_string(),
        }
    }

    /// `path` inside the import bucket/prefix. `..`, `.` and empty segments are refused,
    /// so no path can leave the prefix.
    pub fn resolve(&self, path: &str) -> Result<ObjectLocation> {
        let bucket = self.bucket.as_deref().ok_or_else(|| {
            Error::BadRequest(
                "resource-file inputs need an import bucket (SIPHON_IMPORT_BUCKET) configured; \
                 use a url input (s3:// or https://) instead"
                    .into(),
            )
        })?;
        let relative = path.trim_start_matches('/');
        let bad_segment = relative
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
        if relative.is_empty() || bad_segment || relative.contains('\\') {
            return Err(Error::BadRequest(format!(
                "resource-file {path:?} must be a relative path without '.', '..' or empty segments"
            )));
        }
        if relative.chars().any(char::is_control) {
            return Err(Error::BadRequest(
                "resource-file paths may not contain control characters".into(),
            ));
        }
        let prefix = self.prefix.trim_matches('/');
        let key = if prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{prefix}/{relative}")
        };
        Ok(ObjectLocation::new(bucket, key))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawImport {
    id: Option<String>,
    action: Option<String>,
    secret: Option<String>,
    input_format: Option<String>,
    #[allow(dead_code)] // ignored, as in the seed
    input_source: Option<Value>,
    inputs: Option<Vec<RawInput>>,
    /// Aidbox's first-load options: drop secondary indexes / the primary key for the load.
    #[serde(rename = "disable-idx?")]
    disable_idx: Option<bool>,
    #[serde(rename = "drop-primary-key?")]
    drop_primary_key: Option<bool>,
    /// The FHIR checks of every input (`{enable, checks}`).
    validation: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInput {
    #[serde(rename = "type")]
    resource_type: Option<String>,
    url: Option<String>,
    storage_detail: Option<RawStorage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Most inputs one session takes.
pub const MAX_INPUTS: usize = 1000;

/// The formats siphon reads: ndjson, gzipped or not (told apart by content).
const NDJSON_FORMATS: &[&str] = &[
    "application/fhir+ndjson",
    "application/ndjson",
    "application/x-ndjson",
    "ndjson",
];

/// A session id: what FHIR allows for ids (1-64 of `A-Z a-z 0-9 - .`).
pub fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "session id {id:?} is invalid: 1-64 letters, digits, '-' or '.'"
        )))
    }
}

/// Parses a `$import` body (`{resource: {...}}`).
pub fn parse_import(body: &Value, config: &ImportConfig) -> Result<ImportRequest> {
    let resource = body.get("resource").ok_or_else(|| {
        Error::BadRequest(
            "the $import body needs a `resource` (see the Aidbox $import format)".into(),
        )
    })?;
    let raw: RawImport = serde_json::from_value(resource.clone())
        .map_err(|e| Error::BadRequest(format!("invalid $import resource: {e}")))?;
    let action = Action::parse(raw.action.as_deref().unwrap_or("start"))?;
    let validation = Validation::parse_opt(raw.validation.as_ref())?;
    if let Some(id) = &raw.id {
        check_id(id)?;
    } else if action != Action::Start {
        return Err(Error::BadRequest(format!(
            "{} needs the session `id`",
            raw.action.as_deref().unwrap_or("")
        )));
    }
    let mut inputs = Vec::new();
    if action == Action::Start {
        if let Some(format) = &raw.input_format {
            if !NDJSON_FORMATS.contains(&format.as_str()) {
                return Err(Error::BadRequest(format!(
                    "inputFormat {format:?} is not supported: siphon reads ndjson, gzipped or not \
                     (application/fhir+ndjson)"
                )));
            }
        }
        let raw_inputs = raw.inputs.unwrap_or_default();
        if raw_inputs.is_empty() {
            return Err(Error::BadRequest("start needs at least one input".into()));
        }
        if raw_inputs.len() > MAX_INPUTS {
            return Err(Error::BadRequest(format!(
                "at most {MAX_INPUTS} inputs per session (got {})",
                raw_inputs.len()
            )));
        }
        for (n, input) in raw_inputs.into_iter().enumerate() {
            inputs.push(parse_input(n, input, config)?);
        }
    }
    let mut stored = resource.clone();
    if let Some(obj) = stored.as_object_mut() {
        obj.remove("secret");
    }
    Ok(ImportRequest {
        id: raw.id,
        action,
        secret: raw.secret.filter(|s| !s.is_empty()),
        inputs,
        options: FileOptions {
            disable_indexes: raw.disable_idx.unwrap_or(false),
            drop_primary_key: raw.drop_primary_key.unwrap_or(false),
            validation,
            ..FileOptions::default()
        },
        stored,
    })
}

fn parse_input(n: usize, raw: RawInput, config: &ImportConfig) -> Result<Input> {
    let resource_type = match raw.resource_type {
        Some(t) => Some(
            ResourceType::parse(&t)
                .map_err(|e| Error::BadRequest(format!("inputs[{n}].type: {e}")))?,
        ),
        None => None,
    };
    let url = raw
        .url
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| Error::BadRequest(format!("inputs[{n}] needs a url")))?;
    let kind = raw
        .storage_detail
        .and_then(|s| s.kind)
        .unwrap_or_else(|| "url".into());
    let url = match kind.as_str() {
        "resource-file" => InputUrl::S3(
            config
                .resolve(&url)
                .map_err(|e| Error::BadRequest(format!("inputs[{n}]: {e}")))?,
        ),
        "url" => parse_url(&url).map_err(|e| Error::BadRequest(format!("inputs[{n}]: {e}")))?,
        other => {
            return Err(Error::BadRequest(format!(
                "inputs[{n}].storageDetail.type {other:?} is not supported: \
                 use url or resource-file"
            )))
        }
    };
    Ok(Input { resource_type, url })
}

/// `s3://bucket/key` or a web URL (checked later by the guard).
pub fn parse_url(url: &str) -> Result<InputUrl> {
    if url.starts_with("s3://") {
        return ObjectLocation::parse_s3_url(url)
            .map(InputUrl::S3)
            .ok_or_else(|| Error::BadRequest(format!("{url:?} is not s3://bucket/key")));
    }
    Ok(InputUrl::Web(url.to_string()))
}

/// A parsed `$load` request.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    pub url: InputUrl,
    /// Any invalid line fails the file and nothing loads (`strict: true`).
    pub strict: bool,
    /// The FHIR checks (`validation: {enable, checks}`).
    pub validation: Validation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    source: Option<String>,
    /// Accepted and ignored: siphon loads into the resource table directly.
    #[allow(dead_code)]
    temp_table: Option<Value>,
    validation: Option<Value>,
    method: Option<String>,
    strict: Option<bool>,
}

/// Parses a `$load` body (`source`, `method`, `validation`, `strict`, `temp_table`).
pub fn parse_load(body: &Value) -> Result<LoadRequest> {
    let raw: RawLoad = serde_json::from_value(body.clone())
        .map_err(|e| Error::BadRequest(format!("invalid $load request: {e}")))?;
    let source = raw.source.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        Error::BadRequest("$load needs a `source` URL (https:// or s3://)".into())
    })?;
    match raw.method.as_deref() {
        None | Some("copy") => {}
        Some("insert") => {
            return Err(Error::BadRequest(
                "method insert is not supported: siphon always loads with COPY (existing ids \
                 are updated); omit method or use copy"
                    .into(),
            ))
        }
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "unknown method {other:?}: use copy"
            )))
        }
    }
    Ok(LoadRequest {
        url: parse_url(&source)?,
        strict: raw.strict.unwrap_or(false),
        validation: Validation::parse_opt(raw.validation.as_ref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_change_starts_only_where_it_may_and_moves_the_files_it_stops() {
        use SessionStatus as S;
        assert_eq!(Action::Start.change(), None);
        let abort = Action::Abort.change().unwrap();
        assert_eq!((abort.to, abort.files_to), (S::Aborted, "aborted"));
        assert!(abort.files_from.contains(&"in-progress"));
        assert!(!abort.from.contains(&S::Error) && !abort.from.contains(&S::Done));
        let force = Action::ForceResume.change().unwrap();
        assert!(force.from.contains(&S::Error) && force.files_from.contains(&"error"));
        for a in [
            Action::Pause,
            Action::Resume,
            Action::Abort,
            Action::ForceResume,
        ] {
            let c = a.change().unwrap();
            // A change never starts from the status it ends in, except force-resume.
            assert_eq!(c.from.contains(&c.to), a == Action::ForceResume, "{a:?}");
            assert!(!c.files_from.contains(&c.files_to) || a == Action::ForceResume);
        }
    }

    fn config() -> ImportConfig {
        ImportConfig {
            bucket: Some("imports".into()),
            prefix: "team/a/".into(),
        }
    }

    #[test]
    fn resource_files_stay_inside_the_prefix() {
        let c = config();
        assert_eq!(
            c.resolve("/data/Patient.ndjson.gz").unwrap().to_string(),
            "s3://imports/team/a/data/Patient.ndjson.gz"
        );
        for bad in [
            "../b/Patient.ndjson.gz",
            "data/../../x",
            "/..",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
            "/",
        ] {
            assert!(c.resolve(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ImportConfig::default().resolve("a").is_err());
    }

    #[test]
    fn import_requests_are_checked() {
        let c = config();
        let ok = json!({"resource": {"id": "imp-1", "secret": "s", "inputs": [
            {"type": "Patient", "url": "s3://b/Patient.ndjson.gz", "storageDetail": {"type": "url"}}]}});
        let r = parse_import(&ok, &c).unwrap();
        assert_eq!(r.action, Action::Start);
        assert!(r.options.validation.is_off());
        let mut checked = ok.clone();
        checked["resource"]["validation"] = json!({"enable": "async", "checks": "all"});
        let r = parse_import(&checked, &c).unwrap();
        assert!(r.options.validation.refs());
        assert!(r.stored.get("secret").is_none());
        for (bad, why) in [
            (json!({}), "resource"),
            (
                json!({"resource": {"action": "explode", "id": "x"}}),
                "unknown action",
            ),
            (
                json!({"resource": {"action": "pause"}}),
                "needs the session `id`",
            ),
            (json!({"resource": {"inputs": []}}), "at least one input"),
            (json!({"resource": {"id": "a b", "inputs": []}}), "invalid"),
            (
                json!({"resource": {"inputFormat": "text/csv", "inputs": [{"url": "s3://b/k"}]}}),
                "inputFormat",
            ),
            (
                json!({"resource": {"inputs": [{"type": "patient; drop", "url": "s3://b/k"}]}}),
                "inputs[0].type",
            ),
            (
                json!({"resource": {"inputs": [{"type": "Patient"}]}}),
                "needs a url",
            ),
            (
                json!({"resource": {"inputs": [{"url": "s3://b/k", "storageDetail": {"type": "ftp"}}]}}),
                "storageDetail",
            ),
            (
                json!({"resource": {"inputs": [{"url": "../x", "storageDetail": {"type": "resource-file"}}]}}),
                "..",
            ),
            (json!({"resource": {"bogus": 1}}), "unknown field"),
            (
                json!({"resource": {"validation": {"enable": "later"}, "inputs": [{"url": "s3://b/k"}]}}),
                "validation.enable",
            ),
        ] {
            let e = parse_import(&bad, &c).unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{e:?}");
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn load_options_do_what_they_say_or_are_refused() {
        use crate::model::validation::{Checks, Enable};
        let r = parse_load(&json!({"source": "s3://b/k.ndjson", "temp_table": "_x",
            "validation": {"enable": "on", "checks": "struct"}, "method": "copy", "strict": true}))
        .unwrap();
        assert!(r.strict);
        assert_eq!(
            (r.validation.enable, r.validation.checks),
            (Enable::On, Checks::Struct)
        );
        let plain = parse_load(&json!({"source": "s3://b/k"})).unwrap();
        assert!(!plain.strict && plain.validation.is_off());
        for (validation, enable, checks) in [
            (json!({"enable": "async"}), Enable::Async, Checks::Struct),
            (
                json!({"enable": "async", "checks": "refs"}),
                Enable::Async,
                Checks::Refs,
            ),
            (
                json!({"enable": true, "checks": "all"}),
                Enable::On,
                Checks::All,
            ),
            (
                json!({"enable": "off", "checks": "all"}),
                Enable::Off,
                Checks::All,
            ),
        ] {
            let r = parse_load(&json!({"source": "s3://b/k", "validation": validation})).unwrap();
            assert_eq!((r.validation.enable, r.validation.checks), (enable, checks));
            assert!(!r.strict, "validation alone never fails the whole file");
        }
        for (bad, why) in [
            (json!({}), "source"),
            (json!({"source": "s3://b/k", "method": "insert"}), "insert"),
            (
                json!({"source": "s3://b/k", "validation": {"enable": "sometimes"}}),
                "validation.enable",
            ),
            (
                json!({"source": "s3://b/k", "validation": {"checks": "profiles"}}),
                "validation.checks",
            ),
            (json!({"source": "s3://nokey"}), "s3://bucket/key"),
        ] {
            let e = parse_load(&bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
