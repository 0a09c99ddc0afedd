//! A `$bulk-submit` submission (Bulk Data IG 4.0.0): what its session stores and shows.
//! Plain data: the operation itself is `pulling::submit`.
//!
//! A submission is one `$import` session; each manifest the Data Provider submits is one
//! pull job of that session (no kick-off: its pages are read from `manifestUrl`), and its
//! files are the session's inputs numbered from [`first_input`] of its place.

use serde::{Deserialize, Serialize};

/// Inputs a manifest may add (files over all its pages); the next manifest's inputs start
/// after them.
pub const FILES_PER_MANIFEST: u32 = 1 << 20;

/// The first input number of the manifest at `place` (0, 1, ...).
pub fn first_input(place: u32) -> u32 {
    place * FILES_PER_MANIFEST
}

/// The manifest an input belongs to.
pub fn place_of(input: u32) -> u32 {
    input / FILES_PER_MANIFEST
}

/// Manifests one submission may name (inputs are `u32`).
pub const MAX_MANIFESTS: u32 = u32::MAX / FILES_PER_MANIFEST;

/// `submissionStatus` (value set `submission-status`: `http://hl7.org/fhir/event-status`
/// codes; the ballot's earlier `complete` and `aborted` are read as their successors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubmissionStatus {
    /// More requests are expected.
    InProgress,
    /// No more manifests: the submission ends when its files have loaded.
    Completed,
    /// The submission is invalid: stop, and remove what it loaded.
    Stopped,
}

impl SubmissionStatus {
    /// The code (`in-progress`, `completed`, `stopped`), or the earlier ballot's
    /// (`complete`, `aborted`).
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "in-progress" => Some(Self::InProgress),
            "completed" | "complete" => Some(Self::Completed),
            "stopped" | "aborted" => Some(Self::Stopped),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
        }
    }
}

/// The submitting system (`submitter`, an Identifier).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub value: String,
}

impl Submitter {
    /// `system|value`, as shown.
    pub fn label(&self) -> String {
        format!("{}|{}", self.system.as_deref().unwrap_or(""), self.value)
    }
}

/// One submitted manifest, as the session stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubmittedManifest {
    /// Its place in the submission (0, 1, ...): its inputs start at [`first_input`].
    pub place: u32,
    pub manifest_url: String,
    pub fhir_base_url: String,
    /// The place of the manifest this one replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u32>,
    /// Replaced by the manifest at this place (or, with `replacedBy` absent and
    /// `replaced` true, withdrawn without a successor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<u32>,
    pub replaced: bool,
    /// Every page read and its files made inputs.
    pub read: bool,
    /// What it loaded was removed (replaced, or the submission stopped).
    pub removed: bool,
    pub pages: u32,
    pub files: u32,
    /// A page said `requiresAccessToken`: its files on its origin get the token.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requires_token: bool,
    /// Why reading it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SubmittedManifest {
    /// Its pull job: the submission's session id and its place.
    pub fn job(&self, session: &str) -> String {
        job_id(session, self.place)
    }

    /// Nothing more to do for it before the session may end: read, or replaced and its
    /// rows removed.
    pub fn settled(&self) -> bool {
        if self.replaced {
            self.removed
        } else {
            self.read || self.error.is_some()
        }
    }
}

/// The pull job of the manifest at `place` of submission `session`.
pub fn job_id(session: &str, place: u32) -> String {
    format!("{session}.m{place}")
}

/// A submission as its session stores it (`request.submission`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    pub submitter: Submitter,
    pub submission_id: String,
    /// Who may see it and what finds it again: owner, submitter and id (see [`key`]).
    pub key: String,
    /// The key of the submitter's submissions ([`submitter_key`]).
    pub submitter_key: String,
    pub status: SubmissionStatus,
    #[serde(default)]
    pub manifests: Vec<SubmittedManifest>,
    /// `DELETE` on its status URL: the status is gone (404) from then on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_deleted: bool,
}

impl Submission {
    /// Manifests not yet read, or replaced and not yet removed: the session may not end.
    pub fn planning(&self) -> bool {
        self.status == SubmissionStatus::InProgress || self.manifests.iter().any(|m| !m.settled())
    }

    /// The manifest submitted with `url` (the last one, if it was submitted again after a
    /// replacement withdrew it).
    pub fn manifest(&self, url: &str) -> Option<&SubmittedManifest> {
        self.manifests.iter().rev().find(|m| m.manifest_url == url)
    }
}

/// What finds a submission: the client it belongs to, the submitter and its id (the IG
/// makes `submissionId` unique per submitter; siphon keeps each client's apart).
pub fn key(owner: &str, submitter: &Submitter, submission_id: &str) -> String {
    serde_json::json!([owner, submitter.system, submitter.value, submission_id]).to_string()
}

/// The key of a submitter's submissions (without the id), for the one-at-a-time rule.
pub fn submitter_key(owner: &str, submitter: &Submitter) -> String {
    serde_json::json!([owner, submitter.system, submitter.value]).to_string()
}

/// The session of a submission: fixed by its key, so a request repeated after a lost
/// answer finds it.
pub fn session_id(key: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("siphon:bulk-submit:{key}").as_bytes(),
    )
    .to_string()
}

/// How siphon authenticates to a Data Provider's servers when its submissions name an
/// `oauthMetadataUrl`: the `bulkSubmit` element an admin writes on the provider's
/// Client, coordinated out of band as the IG says.
///
/// ```json
/// {"resourceType": "Client", "id": "provider-a", "secret": "...",
///  "bulkSubmit": {"oauthMetadataUrl": "https://p.example/fhir/.well-known/smart-configuration",
///                 "clientId": "siphon-at-provider-a", "scope": "system/*.rs"}}
/// ```
///
/// A submission may name this `oauthMetadataUrl` and no other (a caller-chosen one
/// would let it steer siphon's signed assertion and the token it buys), and its
/// `manifestUrl` must be on that URL's origin: the token goes there only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderAuth {
    pub oauth_metadata_url: String,
    /// The id the provider's authorization server registered siphon under.
    pub client_id: String,
    /// `system/*.read` unless the registration says otherwise.
    pub scope: String,
}

impl ProviderAuth {
    /// Reads a `bulkSubmit` element; `Err` says what is wrong with it.
    pub fn parse(v: &serde_json::Value) -> Result<ProviderAuth, String> {
        let text = |k: &str| {
            v[k].as_str()
                .filter(|t| !t.is_empty() && t.len() <= 4096 && !t.chars().any(char::is_control))
                .map(str::to_string)
        };
        let url = text("oauthMetadataUrl")
            .filter(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "https" | "http")))
            .ok_or("bulkSubmit.oauthMetadataUrl must be an absolute http(s) URL")?;
        let client_id = text("clientId")
            .ok_or("bulkSubmit.clientId must be the id the provider registered siphon under")?;
        let scope = match v.get("scope") {
            None => "system/*.read".to_string(),
            Some(_) => text("scope").ok_or("bulkSubmit.scope must be a non-empty string")?,
        };
        Ok(ProviderAuth {
            oauth_metadata_url: url,
            client_id,
            scope,
        })
    }

    /// Whether a submitted `oauthMetadataUrl` is the registered one (as URLs: letter
    /// case of the host and a default port do not matter).
    pub fn names(&self, url: &str) -> bool {
        match (
            url::Url::parse(url),
            url::Url::parse(&self.oauth_metadata_url),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_of_a_manifest_are_its_own_range() {
        assert_eq!(first_input(0), 0);
        assert_eq!(first_input(3), 3 << 20);
        assert_eq!(place_of(first_input(3) + FILES_PER_MANIFEST - 1), 3);
        assert_eq!(place_of(first_input(4)), 4);
        assert!(first_input(MAX_MANIFESTS - 1)
            .checked_add(FILES_PER_MANIFEST - 1)
            .is_some());
    }

    #[test]
    fn status_codes_of_both_ballots_are_read() {
        for (code, status) in [
            ("in-progress", SubmissionStatus::InProgress),
            ("completed", SubmissionStatus::Completed),
            ("complete", SubmissionStatus::Completed),
            ("stopped", SubmissionStatus::Stopped),
            ("aborted", SubmissionStatus::Stopped),
        ] {
            assert_eq!(SubmissionStatus::parse(code), Some(status), "{code}");
        }
        assert_eq!(SubmissionStatus::parse("entered-in-error"), None);
        assert_eq!(SubmissionStatus::Completed.as_str(), "completed");
    }

    #[test]
    fn a_submission_plans_until_completed_and_every_manifest_settled() {
        let read = SubmittedManifest {
            read: true,
            ..SubmittedManifest::default()
        };
        let mut s = Submission {
            submitter: Submitter::default(),
            submission_id: "1".into(),
            key: "k".into(),
            submitter_key: "sk".into(),
            status: SubmissionStatus::InProgress,
            manifests: vec![read.clone()],
            status_deleted: false,
        };
        assert!(s.planning(), "more manifests may come");
        s.status = SubmissionStatus::Completed;
        assert!(!s.planning());
        s.manifests.push(SubmittedManifest {
            place: 1,
            replaced: true,
            read: true,
            ..SubmittedManifest::default()
        });
        assert!(
            s.planning(),
            "a replaced manifest's rows are not removed yet"
        );
        s.manifests[1].removed = true;
        assert!(!s.planning());
    }

    #[test]
    fn keys_keep_clients_and_submitters_apart() {
        let a = Submitter {
            system: Some("http://example.org/submitters".into()),
            value: "a".into(),
        };
        let k1 = key("client-1", &a, "s1");
        assert_eq!(session_id(&k1), session_id(&key("client-1", &a, "s1")));
        assert_ne!(session_id(&k1), session_id(&key("client-2", &a, "s1")));
        assert_ne!(session_id(&k1), session_id(&key("client-1", &a, "s2")));
        // No separator trick: the parts are a JSON array.
        let b = Submitter {
            system: Some("http://example.org/submitters|a".into()),
            value: String::new(),
        };
        assert_ne!(submitter_key("c", &a), submitter_key("c", &b));
    }

    #[test]
    fn a_provider_registration_names_one_metadata_url() {
        let v = serde_json::json!({"oauthMetadataUrl": "https://P.example:443/fhir/.well-known/smart-configuration",
                                   "clientId": "siphon-at-p"});
        let r = ProviderAuth::parse(&v).unwrap();
        assert_eq!(r.scope, "system/*.read");
        assert!(r.names("https://p.example/fhir/.well-known/smart-configuration"));
        assert!(!r.names("https://p.example/other/.well-known/smart-configuration"));
        assert!(!r.names("https://evil.example/fhir/.well-known/smart-configuration"));
        for (bad, says) in [
            (serde_json::json!({"clientId": "c"}), "oauthMetadataUrl"),
            (
                serde_json::json!({"oauthMetadataUrl": "ftp://x", "clientId": "c"}),
                "oauthMetadataUrl",
            ),
            (
                serde_json::json!({"oauthMetadataUrl": "https://x"}),
                "clientId",
            ),
            (
                serde_json::json!({"oauthMetadataUrl": "https://x", "clientId": "c", "scope": ""}),
                "scope",
            ),
            (
                serde_json::json!({"oauthMetadataUrl": "https://x", "clientId": "c\nd"}),
                "clientId",
            ),
        ] {
            let e = ProviderAuth::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
