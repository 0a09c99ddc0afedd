//! A pull import (`$import-pnp`): what its job stores, where its planning stands, and
//! what its session shows. Plain data: the Bulk Data client is `pulling`.

use serde::{Deserialize, Serialize};

/// How siphon authenticates to the remote Bulk Data server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RemoteAuth {
    /// Nothing is sent.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `Authorization: Basic <base64(username:password)>` (RFC 7617).
    Basic { username: String, password: String },
    /// SMART Backend Services: siphon's signed assertion traded for an access token at
    /// the remote's token endpoint (`auth::remote`), as client `client_id`.
    Smart {
        #[serde(rename = "clientId")]
        client_id: String,
        scope: String,
        /// Where the token endpoint is found: a submission's registered
        /// `oauthMetadataUrl`. Absent: `[base]/.well-known/smart-configuration` of the
        /// kick-off URL's FHIR base.
        #[serde(
            default,
            rename = "metadataUrl",
            skip_serializing_if = "Option::is_none"
        )]
        metadata: Option<String>,
    },
}

/// Never shows a credential (logs, panics, test failures).
impl std::fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteAuth::None => f.write_str("None"),
            RemoteAuth::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            RemoteAuth::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            RemoteAuth::Smart {
                client_id,
                scope,
                metadata,
            } => write!(f, "Smart({client_id:?}, {scope:?}, {metadata:?})"),
        }
    }
}

impl RemoteAuth {
    /// The `Authorization` header value of a static credential; `None` for `Smart`,
    /// whose tokens come from `auth::remote::RemoteCredentials::authorization`.
    pub(crate) fn header(&self) -> Option<String> {
        match self {
            RemoteAuth::None | RemoteAuth::Smart { .. } => None,
            RemoteAuth::Bearer { token } => Some(format!("Bearer {token}")),
            RemoteAuth::Basic { username, password } => {
                use base64::Engine;
                let pair = format!("{username}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
        }
    }

    /// The name the session shows (`none`, `bearer`, `basic`).
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteAuth::None => "none",
            RemoteAuth::Bearer { .. } => "bearer",
            RemoteAuth::Basic { .. } => "basic",
            RemoteAuth::Smart { .. } => "smart",
        }
    }
}

/// Everything the planning of one pull import needs, stored with its job
/// (`siphon_export.request`; the credential under `auth`, never under `request`, which
/// export lists show).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullJob {
    /// The `$import` session (also the job's id).
    pub session: String,
    /// The kick-off URL with the passed-on parameters in its query.
    #[serde(rename = "exportUrl")]
    pub export_url: String,
    pub auth: RemoteAuth,
    /// What export lists show: the kick-off URL.
    pub request: String,
    /// Who started the import and what it may write (see `LoaderFile::owner`).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub writes: Option<Vec<String>>,
    /// A manifest submitted with `$bulk-submit`: `exportUrl` is the manifest itself (no
    /// kick-off, no polling, no `DELETE` to release it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<SubmittedJob>,
    /// The headers a submission's provider asked for (`fileRequestHeader`): sent with
    /// every request for the manifest, its pages and its files on the manifest's origin,
    /// never to another.
    #[serde(
        default,
        rename = "fileRequestHeaders",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub headers: Vec<FileHeader>,
}

/// A header a Data Provider asked siphon to send when it fetches a submitted manifest
/// and its files (`$bulk-submit`'s `fileRequestHeader`). A credential: never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// Lower case.
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for FileHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileHeader({:?}, <redacted>)", self.name)
    }
}

/// Headers siphon sets itself, or that would change how a request is framed, routed
/// or read: a provider cannot choose them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "host",
    "if-match",
    "if-none-match",
    "keep-alive",
    "prefer",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl FileHeader {
    /// At most this many headers per manifest.
    pub const MAX_COUNT: usize = 16;
    /// At most this many bytes in one value.
    pub const MAX_VALUE: usize = 4096;

    /// A header a provider named, checked: the name an RFC 9110 token that siphon does
    /// not set itself, the value visible ASCII (spaces and tabs inside), so that
    /// nothing can end the header or the request. `Err` says why not.
    pub fn new(name: &str, value: &str) -> Result<FileHeader, String> {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || name.len() > 100 || !name.chars().all(token) {
            return Err(format!(
                "headerName {:?} is not an HTTP header name",
                name.chars().take(100).collect::<String>()
            ));
        }
        let name = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "headerName {name:?} is set by siphon itself and cannot be chosen"
            ));
        }
        let trimmed = value.trim_matches([' ', '\t']);
        if trimmed.is_empty() || value.len() > Self::MAX_VALUE {
            return Err(format!(
                "headerValue of {name} must hold 1 to {} bytes",
                Self::MAX_VALUE
            ));
        }
        if !value
            .chars()
            .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
        {
            return Err(format!(
                "headerValue of {name} may hold visible ASCII characters, spaces and tabs only"
            ));
        }
        Ok(FileHeader {
            name,
            value: trimmed.to_string(),
        })
    }
}

/// Where a submitted manifest sits in its submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedJob {
    /// Its place: its inputs start at `submission::first_input(place)`.
    pub place: u32,
    /// The manifest it replaces: its files are read only once that one's rows are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u32>,
}

impl PullJob {
    /// Whether a file at `url` is fetched with the credential: only when the manifest
    /// said `requiresAccessToken` and only on the kick-off URL's origin (a credential
    /// never goes to another host).
    pub fn credential_goes_to(&self, url: &str, requires_token: bool) -> bool {
        requires_token && same_origin(&self.export_url, url)
    }

    /// The provider's headers a request for `url` carries: all of them on the manifest's
    /// origin, none elsewhere.
    pub fn headers_for(&self, url: &str) -> Vec<(String, String)> {
        if !same_origin(&self.export_url, url) {
            return Vec::new();
        }
        self.headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    }
}

/// Scheme, host and port are the same.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Where the planning of a pull import stands (its task's checkpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PullCheckpoint {
    /// The remote's status URL, once kicked off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// The next manifest page to read (`link` `next`), once the first was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
    /// Manifest pages read.
    pub pages: u32,
    /// Output files made inputs of the session.
    pub files: u32,
    /// Every manifest page has been read.
    pub done: bool,
    /// The manifests said `requiresAccessToken`.
    pub requires_token: bool,
    /// Requests that failed in a row and may succeed later (429, 5xx, network).
    pub failures: u32,
}

/// The id of pull session `session`'s planning task (its export has the session's id and
/// one task).
pub fn planning_task(session: &str) -> String {
    format!("{session}/0")
}

impl PullCheckpoint {
    /// Where a force-resume of a failed planning starts again: the failures forgotten,
    /// the manifest pages already taken kept (their files are the session's inputs), and,
    /// when none was taken, a new kick-off: a failed planning that read no page released
    /// the remote export (`DELETE`), so its status URL leads nowhere.
    pub fn restarted(&self) -> PullCheckpoint {
        let mut next = self.clone();
        next.failures = 0;
        next.done = false;
        if next.pages == 0 {
            next.status_url = None;
        }
        next
    }
}

/// A pull import as its session shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PullProgress {
    /// The kick-off URL (its query kept: it holds only export parameters).
    pub export_url: String,
    /// `none`, `bearer`, `basic`, `smart`.
    pub auth: String,
    /// `kick-off`, `exporting` (the remote is working), `loading` (every file is an
    /// input), `aborted`.
    pub stage: String,
    /// The remote's last `X-Progress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_progress: Option<String>,
    pub pages: u32,
    pub files: u32,
    /// Files in the manifests' `error` (OperationOutcomes of the remote), not loaded.
    pub remote_errors: u32,
    pub done: bool,
    /// Whether files are fetched with the token (`requiresAccessToken`).
    pub requires_token: bool,
}

impl PullProgress {
    /// What the session shows once its failed planning is restarted from `checkpoint`.
    pub fn restarted(&self, checkpoint: &PullCheckpoint) -> PullProgress {
        let mut next = self.clone();
        next.stage = if checkpoint.status_url.is_none() {
            "kick-off"
        } else {
            "exporting"
        }
        .into();
        next.remote_progress = None;
        next.done = false;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_planning_kicks_off_again_only_when_it_took_no_page() {
        let failed = PullCheckpoint {
            status_url: Some("https://r.example/status/1".into()),
            failures: 8,
            ..PullCheckpoint::default()
        };
        let again = failed.restarted();
        assert_eq!((again.status_url, again.failures), (None, 0));
        let progress = PullProgress {
            stage: "exporting".into(),
            remote_progress: Some("50%".into()),
            done: true,
            ..PullProgress::default()
        };
        let shown = progress.restarted(&failed.restarted());
        assert_eq!((shown.stage.as_str(), shown.done), ("kick-off", false));
        assert_eq!(shown.remote_progress, None);

        let mid = PullCheckpoint {
            status_url: Some("https://r.example/status/1".into()),
            next_page: Some("https://r.example/status/1?page=2".into()),
            pages: 1,
            files: 3,
            failures: 8,
            ..PullCheckpoint::default()
        };
        let again = mid.restarted();
        assert_eq!(
            again.status_url, mid.status_url,
            "continues where it stopped"
        );
        assert_eq!(
            (&again.next_page, again.pages, again.files),
            (&mid.next_page, 1, 3)
        );
        assert_eq!(again.failures, 0);
        assert_eq!(progress.restarted(&again).stage, "exporting");
    }

    #[test]
    fn a_token_goes_only_to_the_export_origin_and_only_when_required() {
        let job = PullJob {
            session: "s".into(),
            export_url: "https://ehr.example.org/fhir/$export".into(),
            auth: RemoteAuth::Bearer {
                token: "t0k".into(),
            },
            request: String::new(),
            owner: None,
            writes: None,
            submitted: None,
            headers: Vec::new(),
        };
        let here = "https://ehr.example.org/files/1.ndjson";
        assert!(job.credential_goes_to(here, true));
        assert!(!job.credential_goes_to(here, false));
        for elsewhere in [
            "https://cdn.example.org/1.ndjson",
            "https://ehr.example.org:8443/1",
            "http://ehr.example.org/1",
        ] {
            assert!(!job.credential_goes_to(elsewhere, true), "{elsewhere}");
        }
        assert_eq!(job.auth.header().as_deref(), Some("Bearer t0k"));
        assert!(!format!("{:?}", job.auth).contains("t0k"));
    }

    #[test]
    fn basic_sends_the_rfc_7617_pair_and_never_shows_the_password() {
        let auth = RemoteAuth::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        // RFC 7617 section 2's example.
        assert_eq!(
            auth.header().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(auth.kind(), "basic");
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("Aladdin") && !shown.contains("sesame"),
            "{shown}"
        );
    }

    #[test]
    fn the_job_round_trips_with_its_credential_under_auth() {
        let job = PullJob {
            session: "s".into(),
            export_url: "https://x.example/$export".into(),
            auth: RemoteAuth::Bearer { token: "t".into() },
            request: "https://x.example/$export".into(),
            owner: Some("c".into()),
            writes: None,
            submitted: None,
            headers: Vec::new(),
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(
            v["auth"],
            serde_json::json!({"type": "bearer", "token": "t"})
        );
        assert_eq!(serde_json::from_value::<PullJob>(v).unwrap(), job);
    }

    #[test]
    fn provider_headers_are_checked_and_go_only_to_the_manifest_origin() {
        let h = FileHeader::new("X-Provider-Key", " k1 ").unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.as_str()),
            ("x-provider-key", "k1")
        );
        assert!(!format!("{h:?}").contains("k1"));
        assert!(FileHeader::new("Authorization", "Bearer a b").is_ok());
        for (name, value, says) in [
            ("x-key", "a\r\nHost: evil", "visible ASCII"),
            ("x-key", "a\nb", "visible ASCII"),
            ("x-key", "caf\u{e9}", "visible ASCII"),
            ("x-key", "", "1 to 4096"),
            ("x-key", "  ", "1 to 4096"),
            ("bad name", "v", "not an HTTP header name"),
            ("x:y", "v", "not an HTTP header name"),
            ("", "v", "not an HTTP header name"),
            ("Host", "evil.example", "set by siphon"),
            ("transfer-encoding", "chunked", "set by siphon"),
            ("Range", "bytes=0-", "set by siphon"),
        ] {
            let e = FileHeader::new(name, value).unwrap_err();
            assert!(e.contains(says), "{name:?} {value:?}: {e}");
        }
        assert!(FileHeader::new("x-key", &"v".repeat(4097)).is_err());
        let job = PullJob {
            session: "s".into(),
            export_url: "https://p.example/m/1.json".into(),
            auth: RemoteAuth::None,
            request: String::new(),
            owner: None,
            writes: None,
            submitted: None,
            headers: vec![h],
        };
        assert_eq!(
            job.headers_for("https://p.example/files/a.ndjson"),
            vec![("x-provider-key".to_string(), "k1".to_string())]
        );
        assert!(job.headers_for("https://cdn.example/a.ndjson").is_empty());
        assert!(job
            .headers_for("http://p.example/files/a.ndjson")
            .is_empty());
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["fileRequestHeaders"][0]["name"], "x-provider-key");
        assert_eq!(serde_json::from_value::<PullJob>(v).unwrap(), job);
        assert!(!format!("{job:?}").contains("k1"));
    }
}
