//! What a load validates (`validation: {enable, checks}` on `$load`, `$import` and
//! load-from-bucket), as the request names it and as a LoaderFile keeps it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// When the FHIR checks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enable {
    /// Only the line checks every load makes (a JSON object, `resourceType`, `id`).
    #[default]
    Off,
    /// Everything loads; what the checks find is recorded on the LoaderFile afterwards.
    Async,
    /// A line the checks find invalid is a line error and does not load.
    On,
}

/// Which FHIR checks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checks {
    /// Each line against the R4 definition of its type.
    #[default]
    Struct,
    /// References `Type/id` point to resources that exist when the load ends.
    Refs,
    /// Both.
    All,
}

impl Checks {
    /// True when the structure is checked.
    pub fn structure(self) -> bool {
        matches!(self, Checks::Struct | Checks::All)
    }

    /// True when references are checked.
    pub fn refs(self) -> bool {
        matches!(self, Checks::Refs | Checks::All)
    }
}

/// A load's validation settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    pub enable: Enable,
    pub checks: Checks,
}

impl Validation {
    /// True for `enable: off` (the default: only the line checks).
    pub fn is_off(&self) -> bool {
        self.enable == Enable::Off
    }

    /// True when references are resolved for this load.
    pub fn refs(&self) -> bool {
        !self.is_off() && self.checks.refs()
    }

    /// Reads a request's `validation` object: `enable` is `off`, `async` or `on` (JSON
    /// booleans mean off/on), `checks` is `struct` (the default), `refs` or `all`.
    pub fn parse(value: &Value) -> Result<Self> {
        let Value::Object(fields) = value else {
            return Err(Error::BadRequest(
                "validation must be an object: {enable: off|async|on, checks: struct|refs|all}"
                    .into(),
            ));
        };
        if let Some(other) = fields.keys().find(|k| *k != "enable" && *k != "checks") {
            return Err(Error::BadRequest(format!(
                "validation.{other} is unknown: use enable and checks"
            )));
        }
        let enable = match fields.get("enable") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Enable::Off,
            Some(Value::Bool(true)) => Enable::On,
            Some(Value::String(s)) if s == "off" => Enable::Off,
            Some(Value::String(s)) if s == "on" => Enable::On,
            Some(Value::String(s)) if s == "async" => Enable::Async,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "validation.enable {other} is unknown: use off, async or on"
                )))
            }
        };
        let checks = match fields.get("checks") {
            None | Some(Value::Null) => Checks::Struct,
            Some(Value::String(s)) if s == "struct" => Checks::Struct,
            Some(Value::String(s)) if s == "refs" => Checks::Refs,
            Some(Value::String(s)) if s == "all" => Checks::All,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "validation.checks {other} is unknown: use struct, refs or all"
                )))
            }
        };
        Ok(Validation { enable, checks })
    }

    /// [`Validation::parse`] of an optional value (absent: off).
    pub fn parse_opt(value: Option<&Value>) -> Result<Self> {
        value
            .map(Self::parse)
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_name_enable_and_checks() {
        let v = Validation::parse(&json!({"enable": "async", "checks": "all"})).unwrap();
        assert_eq!((v.enable, v.checks), (Enable::Async, Checks::All));
        assert!(v.refs() && v.checks.structure());
        let v = Validation::parse(&json!({"enable": true})).unwrap();
        assert_eq!((v.enable, v.checks), (Enable::On, Checks::Struct));
        assert!(!v.refs());
        assert!(Validation::parse_opt(None).unwrap().is_off());
        let off_refs = Validation::parse(&json!({"enable": "off", "checks": "refs"})).unwrap();
        assert!(!off_refs.refs(), "off checks nothing");
        for (bad, why) in [
            (json!("on"), "must be an object"),
            (json!({"enable": "maybe"}), "enable"),
            (json!({"checks": "profiles"}), "checks"),
            (json!({"enable": "on", "mode": 1}), "validation.mode"),
        ] {
            let e = Validation::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn stored_as_lowercase_words() {
        let v = Validation {
            enable: Enable::On,
            checks: Checks::Refs,
        };
        let stored = serde_json::to_value(v).unwrap();
        assert_eq!(stored, json!({"enable": "on", "checks": "refs"}));
        assert_eq!(serde_json::from_value::<Validation>(stored).unwrap(), v);
    }
}
