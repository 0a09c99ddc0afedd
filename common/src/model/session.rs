//! The states of an `$import` session, as in the seed, and what a session stores
//! beside them.

use serde::{Deserialize, Serialize};

/// The states of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Paused,
    Aborted,
    Error,
    Done,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Paused => "paused",
            SessionStatus::Aborted => "aborted",
            SessionStatus::Error => "error",
            SessionStatus::Done => "done",
        }
    }

    /// The stored text back to a status; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => SessionStatus::Active,
            "paused" => SessionStatus::Paused,
            "aborted" => SessionStatus::Aborted,
            "error" => SessionStatus::Error,
            "done" => SessionStatus::Done,
            _ => return None,
        })
    }

    /// Still has work to do (GET answers 202 while true).
    pub fn is_running(self) -> bool {
        matches!(self, SessionStatus::Active | SessionStatus::Paused)
    }
}

/// What a session stores beside its status (`siphon_import.request`): for an import
/// planned from an S3 Inventory, the manifest and how far the planning got. Ordinary
/// sessions store `{}`. Read and written only through this type, so the writers and
/// the readers cannot disagree on a name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventorySummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanProgress>,
    /// A pull import (`$import-pnp`): the remote export and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<super::pull::PullProgress>,
    /// A `$bulk-submit` submission: its submitter, status and manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// (Boxed: session rows travel through many futures, and few are submissions.)
    pub submission: Option<Box<super::submission::Submission>>,
}

impl SessionRequest {
    /// Planned from an S3 Inventory.
    pub fn is_inventory(&self) -> bool {
        self.inventory.is_some()
    }

    /// An inventory import whose planning has not finished yet, or a pull import whose
    /// manifests have not all been read, or a submission that may get more manifests or
    /// has some not yet read (or replaced and not yet removed).
    pub fn is_planning(&self) -> bool {
        (self.is_inventory() && !self.plan.is_some_and(|p| p.done))
            || self.pull.as_ref().is_some_and(|p| !p.done)
            || self.submission.as_ref().is_some_and(|s| s.planning())
    }
}

/// The S3 Inventory an import was planned from, as shown on its session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySummary {
    /// `s3://inventory-bucket/.../manifest.json`.
    pub manifest: String,
    /// The manifest's `creationTimestamp`, RFC 3339.
    pub created: String,
    /// The source bucket.
    pub bucket: String,
    /// `Csv` or `Parquet`.
    pub format: String,
    /// Inventory files in the manifest.
    pub files: u64,
    /// Loads run at once (`thread-num`).
    pub threads: u32,
    /// Read with `account` keys given in the request: they travel only in the queue's
    /// messages, so such a session cannot be paused (its files could not be requeued).
    #[serde(default)]
    pub credentials: bool,
}

/// How far an inventory import's planning got: objects staged from the inventory files
/// and what they turned out to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanProgress {
    pub staged: u64,
    pub staged_files: u64,
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Objects of the previous run the bucket no longer has (`None` on a first run).
    pub gone: Option<u64>,
    pub done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            SessionStatus::Active,
            SessionStatus::Paused,
            SessionStatus::Aborted,
            SessionStatus::Error,
            SessionStatus::Done,
        ] {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionStatus::parse("running"), None);
        assert!(SessionStatus::Paused.is_running() && !SessionStatus::Done.is_running());
    }

    #[test]
    fn a_session_request_reads_what_was_stored() {
        let stored = serde_json::json!({
            "inventory": {"manifest": "s3://inv/m.json", "created": "2026-01-01T00:00:00Z",
                          "bucket": "src", "format": "Csv", "files": 2, "threads": 4,
                          "credentials": true},
            "plan": {"staged": 10, "stagedFiles": 1, "new": 3, "changed": 1, "done": false}
        });
        let r: SessionRequest = serde_json::from_value(stored.clone()).unwrap();
        assert!(r.is_inventory() && r.is_planning());
        let plan = r.plan.unwrap();
        assert_eq!(
            (plan.staged, plan.staged_files, plan.new, plan.gone),
            (10, 1, 3, None)
        );
        assert!(r.inventory.as_ref().unwrap().credentials);
        let plain: SessionRequest = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(!plain.is_inventory() && !plain.is_planning());
        assert_eq!(serde_json::to_value(&plain).unwrap(), serde_json::json!({}));
    }
}
