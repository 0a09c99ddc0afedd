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
    },
}

/// Never shows a credential (logs, panics, test failures).
impl std::fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteAuth::None => f.write_str("None"),
            RemoteAuth::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            RemoteAuth::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            RemoteAuth::Smart { client_id, scope } => write!(f, "Smart({client_id:?}, {scope:?})"),
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
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(
            v["auth"],
            serde_json::json!({"type": "bearer", "token": "t"})
        );
        assert_eq!(serde_json::from_value::<PullJob>(v).unwrap(), job);
    }
}
