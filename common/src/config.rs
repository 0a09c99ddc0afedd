//! Configuration from the environment, read once at cold start.
//!
//! Every function's `main` takes one snapshot of the environment ([`Env::from_process`])
//! and builds its typed `Config` from it; nothing else in siphon reads `std::env`. A value
//! that is set but does not parse is an error naming the variable and what is wrong with
//! the value, never a silent fall-back to the default. Variables that hold secrets are
//! never echoed in an error.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A variable that is set but unusable, or required and missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.to_string(),
            problem: problem.into(),
        }
    }
}

/// A snapshot of environment variables. Empty values count as unset. It remembers the
/// name of every variable asked for (set or not), shared by its clones: what a `Config`
/// reads can be listed ([`Env::asked`]), so the configuration reference and the
/// template are checked against the code.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    asked: Arc<Mutex<BTreeSet<String>>>,
}

/// How a value is shown in an error: the value itself, cut short.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(60).collect();
    if cut.len() < value.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

impl Env {
    /// The process environment, now.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().filter(|(_, v)| !v.is_empty()).collect(),
            asked: Default::default(),
        }
    }

    /// A given set of variables (tests, tools).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Env {
            vars: pairs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            asked: Default::default(),
        }
    }

    /// Every variable asked for so far, by this snapshot and its clones, set or not.
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets (or with an empty value, unsets) one variable.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        if value.is_empty() {
            self.vars.remove(name);
        } else {
            self.vars.insert(name.to_string(), value.to_string());
        }
        self
    }

    /// The value, when set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.vars.get(name).map(String::as_str)
    }

    /// The value, or an error saying it is required.
    pub fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::new(name, "is required but not set"))
    }

    /// The value parsed as `T` (`what` names the expected kind in the error), or `None`
    /// when unset.
    pub fn parse<T>(&self, name: &str, what: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => {
                raw.trim().parse().map(Some).map_err(|e| {
                    ConfigError::new(name, format!("{} is not {what} ({e})", shown(raw)))
                })
            }
        }
    }

    /// A whole number in `min..=max`, or `default` when unset.
    pub fn number(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let n = self
            .parse::<u64>(name, "a whole number")?
            .unwrap_or(default);
        if n < min || n > max {
            return Err(ConfigError::new(
                name,
                format!("{n} is out of range ({min} to {max})"),
            ));
        }
        Ok(n)
    }

    /// A duration in seconds (fractions allowed), or `default` when unset.
    pub fn seconds(&self, name: &str, default: f64) -> Result<Duration, ConfigError> {
        let s = self
            .parse::<f64>(name, "a number of seconds")?
            .unwrap_or(default);
        if !s.is_finite() || s < 0.0 {
            return Err(ConfigError::new(
                name,
                format!("{s} is not a duration (seconds, 0 or more)"),
            ));
        }
        Ok(Duration::from_secs_f64(s))
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`, or `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
            Some(v) => Err(ConfigError::new(
                name,
                format!("{} is not true or false", shown(&v)),
            )),
        }
    }

    /// A comma-separated list (blank entries dropped).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A secret value: never printed, never compared in variable time by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: only for the code that uses it (hashing, signing, connecting).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_values_take_defaults_and_bad_ones_name_the_variable() {
        let env = Env::from_pairs(&[
            ("N", "12"),
            ("BAD", "twelve"),
            ("EMPTY", ""),
            ("F", "yes"),
            ("S", "1.5"),
        ]);
        assert_eq!(env.number("N", 4, 1, 100).unwrap(), 12);
        assert_eq!(env.number("UNSET", 4, 1, 100).unwrap(), 4);
        assert_eq!(env.number("EMPTY", 4, 1, 100).unwrap(), 4);
        let e = env.number("BAD", 4, 1, 100).unwrap_err();
        assert_eq!(e.variable, "BAD");
        assert!(
            e.to_string().contains("\"twelve\" is not a whole number"),
            "{e}"
        );
        let e = env.number("N", 4, 1, 10).unwrap_err();
        assert!(e.problem.contains("out of range"), "{e}");
        assert!(env.flag("F", false).unwrap());
        assert!(env.flag("N", false).is_err());
        assert_eq!(env.seconds("S", 20.0).unwrap(), Duration::from_millis(1500));
        assert!(env.seconds("BAD", 20.0).is_err());
        assert!(env
            .required("UNSET")
            .unwrap_err()
            .problem
            .contains("required"));
    }

    #[test]
    fn lists_and_secrets() {
        let env = Env::from_pairs(&[("L", " a:1, ,b:2 ")]);
        assert_eq!(env.list("L"), vec!["a:1", "b:2"]);
        assert!(env.list("NONE").is_empty());
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
