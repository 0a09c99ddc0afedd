//! Literal references (`Reference.reference`) the refs check resolves: relative
//! `Type/id` (or `Type/id/_history/version`) with an R4 type and a FHIR id. Absolute
//! URLs, `#contained`, `urn:` and logical references are not resolved.

use crate::fhir;
use crate::model::ids::is_valid_id;

/// A reference found in a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRef {
    /// The element holding it (`Observation.subject`, `Encounter.participant[0].individual`).
    pub path: String,
    pub target_type: &'static str,
    pub id: String,
}

/// `(type, id)` of a reference the check resolves, else `None`.
pub fn parse_reference(value: &str) -> Option<(&'static str, &str)> {
    let (ty, rest) = value.split_once('/')?;
    let id = match rest.split_once('/') {
        None => rest,
        Some((id, history)) => {
            let version = history.strip_prefix("_history/")?;
            if !is_valid_id(version) {
                return None;
            }
            id
        }
    };
    if !is_valid_id(id) {
        return None;
    }
    let types = fhir::resource_types();
    let at = types.binary_search_by(|t| t.as_str().cmp(ty)).ok()?;
    Some((types[at].as_str(), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_references_to_r4_types_are_resolved() {
        assert_eq!(parse_reference("Patient/p-1"), Some(("Patient", "p-1")));
        assert_eq!(
            parse_reference("Observation/o.1/_history/2"),
            Some(("Observation", "o.1"))
        );
        for skipped in [
            "#contained-1",
            "urn:uuid:8d9a2f1c-0000-4000-8000-000000000000",
            "http://example.org/fhir/Patient/1",
            "Patient",
            "Patient/",
            "Patient/a b",
            "Patient/1/_history",
            "Patient/1/other/2",
            "Unicorn/1",
            "patient/1",
        ] {
            assert_eq!(parse_reference(skipped), None, "{skipped}");
        }
    }
}
