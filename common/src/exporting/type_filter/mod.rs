//! `_typeFilter` of FHIR Bulk Data `$export` (Bulk Data IG STU3): each value is
//! `Type?query`, a FHIR search restricting the resources of `Type` exported.
//!
//! Rules: several values for one type are ORed; the parameters of one query are ANDed;
//! a comma inside a value ORs. The query is form-encoded (`a=b&c=d`, percent escapes
//! and `+` for a space), inside a value the HTTP layer already decoded once.
//!
//! What is supported (anything else is a [`FilterError`] naming it):
//! - parameters: those of `fhir::search` (R4, `common/fhir/r4/search-params.json`) of
//!   types token, string, date, reference, uri, number, quantity, and `_id`,
//!   `_lastUpdated`, `_profile`, `_tag`, `_security` on every type;
//! - modifiers: `:missing` (all), `:exact` and `:contains` (string), `:not` and `:text`
//!   (token), `:[Type]` (reference);
//! - prefixes `eq ne gt lt ge le sa eb ap` on date, number and quantity.
//!
//! Refused: `_include`, `_revinclude`, `_sort`, `_elements`, `_count`, `_summary`,
//! chained parameters (`subject.name=`, `subject:Patient.name=`), `_has`, composite and
//! special parameters, other modifiers (`:above`, `:below`, `:in`, `:identifier`, ...),
//! unknown parameters.
//!
//! Semantics ([`crate::storage::filter`] compiles them; see its docs for SQL details):
//! - token: `code`, `system|code`, `|code` (no system), `system|`, over Coding,
//!   CodeableConcept (its codings), Identifier (`system`, `value`), ContactPoint
//!   (`system`, `value`), and code, boolean, string, id and uri-like elements (the
//!   value only: a system is not checked). Exact, case-sensitive. `:text`: starts-with
//!   (folded) on CodeableConcept `text` and coding `display`, Coding `display`,
//!   Identifier `type.text`. `:not`: resources with no element matching any value
//!   (including resources without the element).
//! - string: starts-with by default, `:contains`, both folded (lower case, accents
//!   removed: Unicode NFD with combining marks U+0300..U+036F dropped, plus
//!   `Ø Ł Đ Ħ Ŧ ı` mapped to `o l d h t i`); `:exact` compares as is. HumanName searches
//!   `family`, `given`, `prefix`, `suffix`, `text`; Address `line`, `city`, `district`,
//!   `state`, `postalCode`, `country`, `text`.
//! - date: a value stands for the range its precision gives (`2020` is the whole year,
//!   `2020-03-04T10:00` one minute); a value without a time zone is read as UTC, and so
//!   are targets without one. Targets are ranges too (date, dateTime, instant by their
//!   precision; Period `start`..`end`, open ends unbounded; Timing by its `event`s).
//!   `eq`: the target range lies within the value's; `ne`: not; `gt`: the target range
//!   reaches past the value's end; `lt`: it starts before the value's start; `ge`: `gt`
//!   or `eq`; `le`: `lt` or `eq`; `sa`: it starts at or after the value's end; `eb`: it
//!   ends at or before the value's start; `ap`: it overlaps the value's range widened on
//!   both sides by 10% of the time between the value's start and `now` (at least one
//!   day). A `+` of a time zone sent unescaped arrives as a space and is read as `+`.
//! - `_lastUpdated`: the same, on the row's `ts` column (the instant `_since` uses),
//!   not `meta.lastUpdated` (which may be absent or stale in hand-inserted rows).
//! - number: `eq` is the value's precision range (`100` is [99.5, 100.5), `1e2` is
//!   [50, 150)), `ne` outside it; `gt lt ge le` compare with the value; `sa`/`eb` as
//!   `gt`/`lt`; `ap` within 10% of the value.
//! - quantity: `[prefix]number`, `[prefix]number|system|code`, `[prefix]number||code`
//!   (code matches `code` or `unit`); no unit conversion.
//! - reference: `Type/id`, `Type/id/_history/v`, `id` (of the parameter's only target
//!   type, or of any type), an absolute URL ending in `Type/id` (matches that URL or
//!   the relative `Type/id`), `:Type` with an id; on canonical and uri elements the
//!   value as given (a canonical also matches with a `|version`).
//! - uri (`_profile` too): exact.

mod clause;
mod dates;
mod numbers;
mod values;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_values;

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::fhir;
use crate::fhir::search::filter::{Query, TypeFilter};
use crate::fhir::search::ParamType;

/// Why a `_typeFilter` value is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterErrorKind {
    /// It is not a valid FHIR search (bad syntax, bad value).
    Invalid,
    /// Valid FHIR, but siphon does not evaluate it (a parameter, modifier, prefix or
    /// feature siphon does not support).
    Unsupported,
}

/// A refused `_typeFilter` value: which one, the part at fault, and why. Its text is
/// meant for an OperationOutcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub kind: FilterErrorKind,
    /// The `_typeFilter` value as given.
    pub type_filter: String,
    /// The part at fault (`code:below`, `_include`, `date=xx2020`), as written.
    pub part: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.type_filter.chars().take(200).collect();
        write!(f, "_typeFilter {shown:?}: ")?;
        if !self.part.is_empty() {
            let part: String = self.part.chars().take(200).collect();
            write!(f, "{part:?}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FilterError {}

impl From<FilterError> for Error {
    fn from(e: FilterError) -> Self {
        Error::BadRequest(e.to_string())
    }
}

/// An error about `part`, built while parsing (the `_typeFilter` text is set later).
pub(crate) fn invalid(part: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        kind: FilterErrorKind::Invalid,
        type_filter: String::new(),
        part: part.to_string(),
        reason: reason.into(),
    }
}

/// As [`invalid`], for something valid that siphon does not support.
pub(crate) fn unsupported(part: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        kind: FilterErrorKind::Unsupported,
        ..invalid(part, reason)
    }
}

/// Parses one `_typeFilter` value (`Observation?code=1234-5`) into its type and query.
/// `now` anchors the tolerance of date `ap`.
pub fn parse_one(value: &str, now: DateTime<Utc>) -> Result<(String, Query), FilterError> {
    let located = |mut e: FilterError| {
        e.type_filter = value.to_string();
        e
    };
    let Some((ty, query)) = value.split_once('?') else {
        return Err(located(invalid(
            value,
            "a _typeFilter value is a resource type, '?' and a search query",
        )));
    };
    if !fhir::is_resource_type(ty) {
        return Err(located(invalid(ty, "not an R4 resource type")));
    }
    let clauses = clause::parse_query(ty, query, now).map_err(located)?;
    Ok((
        ty.to_string(),
        Query {
            text: value.to_string(),
            clauses,
        },
    ))
}

/// Parses every `_typeFilter` value of a kick-off (all the repeated parameters, each
/// already URL-decoded once) into one filter per type, in order of first appearance.
/// The first refused value is the error.
pub fn parse_type_filters<S: AsRef<str>>(
    values: &[S],
    now: DateTime<Utc>,
) -> Result<Vec<TypeFilter>, FilterError> {
    let mut filters = Vec::new();
    for v in values {
        let (ty, query) = parse_one(v.as_ref(), now)?;
        add(&mut filters, ty, query);
    }
    Ok(filters)
}

/// As [`parse_type_filters`] under `Prefer: handling=lenient`: refused values are left
/// out (their type is then filtered by its other values only, or not at all) and
/// returned, to be reported.
pub fn parse_type_filters_lenient<S: AsRef<str>>(
    values: &[S],
    now: DateTime<Utc>,
) -> (Vec<TypeFilter>, Vec<FilterError>) {
    let mut filters = Vec::new();
    let mut refused = Vec::new();
    for v in values {
        match parse_one(v.as_ref(), now) {
            Ok((ty, query)) => add(&mut filters, ty, query),
            Err(e) => refused.push(e),
        }
    }
    (filters, refused)
}

/// Adds a parsed value to the filters: ORed with the type's other values.
pub fn add(filters: &mut Vec<TypeFilter>, ty: String, query: Query) {
    match filters.iter_mut().find(|f| f.resource_type == ty) {
        Some(f) => f.queries.push(query),
        None => filters.push(TypeFilter {
            resource_type: ty,
            queries: vec![query],
        }),
    }
}

/// The search parameters `_typeFilter` supports for resource type `ty`, as (code, type)
/// sorted by code: what a CapabilityStatement lists as the type's `searchParam`.
pub fn supported_params(ty: &str) -> Vec<(&'static str, ParamType)> {
    fhir::search::params_of(ty)
}
