//! The states of an `$import` session, as in the seed.

use serde::Serialize;

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
}
