//! FHIR R4 validation at load speed (`validation: {enable, checks}`).
//!
//! - `checks: struct`: each line against the R4 (4.0.1) definition of its type, from
//!   the tables in `common/fhir/r4/structure.json` compiled once ([`schema`]): known
//!   elements only, the JSON kind of each (object, array, primitive), cardinality,
//!   one type per choice element, primitive formats (the tables' regexes, as DFAs,
//!   [`primitive`]), contained resources recursively. One streaming pass per line
//!   ([`walk`]) that also yields the line's `id` and `resourceType`: no `Value` tree.
//! - `checks: refs`: the literal references of each line ([`refs`]), resolved against
//!   the database while the file loads and, for what is still missing, once the whole
//!   load (file, `$import` session or load-from-bucket call) has ended ([`resolve`]).
//!
//! Findings read `Observation.valueQuantity.value: expected a number (decimal), found
//! a string`; a line's findings are joined with `; `.

pub mod primitive;
pub mod refs;
pub mod resolve;
pub mod schema;
pub mod walk;

use std::borrow::Cow;

pub use self::refs::FoundRef;
use crate::model::validation::Checks;

/// What the FHIR checks made of one line.
#[derive(Debug)]
pub struct Checked<'a> {
    /// The top-level `resourceType` and `id`, when they are strings.
    pub resource_type: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    /// A problem with `resourceType` or `id` themselves (duplicated, not a string): the
    /// line cannot load, whatever `enable` says.
    pub hard: Option<String>,
    /// What the checks found, `path: what; path: what`, or `None` for a valid line.
    pub findings: Option<String>,
    /// The line's literal references (with `checks: refs` or `all`).
    pub refs: Vec<FoundRef>,
}

/// Checks lines with one set of checks; cheap to create, the tables are shared.
#[derive(Clone, Copy, Debug)]
pub struct Validator {
    checks: Checks,
}

impl Validator {
    pub fn new(checks: Checks) -> Self {
        Validator { checks }
    }

    /// Checks one line, a JSON object. `Err` for JSON that does not parse (or whose
    /// `resourceType`/`id` has the wrong JSON type), with the reason.
    pub fn check<'a>(&self, line: &'a str) -> Result<Checked<'a>, String> {
        let found = walk::walk(line, self.checks.refs()).map_err(|e| {
            if e.is_data() {
                e.to_string()
            } else {
                format!("invalid JSON: {e}")
            }
        })?;
        let mut parts: Vec<String> = Vec::new();
        if self.checks.structure() {
            parts.extend(found.issues);
            if found.more > 0 {
                parts.push(format!("and {} more", found.more));
            }
        }
        if self.checks.refs() {
            parts.extend(found.target_issues);
        }
        Ok(Checked {
            resource_type: found.resource_type,
            id: found.id,
            hard: found.hard,
            findings: (!parts.is_empty()).then(|| parts.join("; ")),
            refs: found.refs,
        })
    }
}

#[cfg(test)]
mod tests;
