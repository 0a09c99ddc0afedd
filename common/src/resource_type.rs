//! Resource type names: the only identifiers that ever reach SQL.

use std::fmt;

use crate::error::{Error, Result};

/// A validated resource type name (`^[A-Z][A-Za-z0-9]{0,62}$`), e.g. `Patient`.
///
/// Its table is the lower-cased name (`patient`), as in Aidbox. Because only ASCII
/// letters and digits pass, the quoted table name can never break out of an identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(String);

impl ResourceType {
    /// Validates `name`; anything else is a `BadRequest` naming the rule.
    pub fn parse(name: &str) -> Result<Self> {
        if is_valid(name) {
            Ok(ResourceType(name.to_string()))
        } else {
            let shown: String = name.chars().take(80).collect();
            Err(Error::BadRequest(format!(
                "invalid resource type {shown:?}: a resource type starts with an upper-case \
                 ASCII letter followed by at most 62 ASCII letters or digits"
            )))
        }
    }

    /// The type name as given, e.g. `Patient`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The table name, lower-cased, unquoted (`patient`).
    pub fn table_name(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// The table as it appears in SQL: schema-qualified and quoted (`public."patient"`).
    pub fn table_sql(&self) -> String {
        format!("public.\"{}\"", self.table_name())
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// siphon's own bookkeeping types: stored as resources, but never data. Only the admin
/// reads or writes them (a client sees its own LoaderFiles); they are never exported,
/// dumped, or covered by a `*` scope; `Client` holds secret hashes.
pub const SYSTEM_TYPES: [&str; 4] = ["Client", "AccessPolicy", "LoaderFile", "Inventory"];

/// True for [`SYSTEM_TYPES`], by name or by table name (`loaderfile`).
pub fn is_system(name: &str) -> bool {
    SYSTEM_TYPES
        .iter()
        .any(|t| *t == name || t.eq_ignore_ascii_case(name))
}

impl ResourceType {
    /// True for siphon's bookkeeping types ([`SYSTEM_TYPES`]).
    pub fn is_system(&self) -> bool {
        is_system(&self.0)
    }
}

/// The rule itself, usable without allocating.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_uppercase()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_fhir_type_names() {
        for ok in [
            "Patient",
            "Observation",
            "LoaderFile",
            "A",
            "X1y2",
            &format!("A{}", "b".repeat(62)),
        ] {
            assert_eq!(ResourceType::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            ResourceType::parse("Patient").unwrap().table_sql(),
            "public.\"patient\""
        );
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            "Patient; DROP TABLE x",
            "pg_catalog",
            "Pg_catalog",
            "patient",
            "Patient\"",
            "Pat ient",
            "Patient--",
            "Pätient",
            "Patient\u{0}",
            "ÉPatient",
            &format!("A{}", "b".repeat(69)),
            &format!("A{}", "b".repeat(63)),
        ] {
            let err = ResourceType::parse(bad).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{bad:?}");
            assert!(err.to_string().contains("invalid resource type"), "{err}");
        }
    }
}
