//! One query (`a=b&c=d`): splitting, decoding, parameter names and modifiers.

use chrono::{DateTime, Utc};

use super::{invalid, unsupported, values, FilterError};
use crate::fhir::search::filter::{Clause, Target, Test};
use crate::fhir::search::{self, ParamType};

/// Result parameters and others that have no place in a `_typeFilter` (Bulk Data STU3).
const REFUSED: &[&str] = &[
    "_include",
    "_revinclude",
    "_sort",
    "_elements",
    "_count",
    "_summary",
];

/// Decodes one form-encoded component: `+` is a space, then percent escapes.
fn decode(raw: &str) -> Result<String, FilterError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(raw, "percent escapes that are not UTF-8"))
}

/// The clauses of `query` for resource type `ty` (ANDed).
pub(super) fn parse_query(
    ty: &str,
    query: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Clause>, FilterError> {
    let mut clauses = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((raw_name, raw_value)) = pair.split_once('=') else {
            return Err(invalid(pair, "a search parameter needs '=' and a value"));
        };
        let name = decode(raw_name)?;
        let value = decode(raw_value)?;
        clauses.push(parse_clause(ty, &name, &value, now)?);
    }
    Ok(clauses)
}

/// One `name=value` (decoded) of a query.
pub(super) fn parse_clause(
    ty: &str,
    name: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<Clause, FilterError> {
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    if code == "_has" {
        return Err(unsupported(
            name,
            "_has (reverse chaining) is not supported",
        ));
    }
    if REFUSED.contains(&code) {
        return Err(unsupported(
            name,
            format!("{code} is not allowed inside a _typeFilter"),
        ));
    }
    if code.contains('.') || modifier.is_some_and(|m| m.contains('.')) {
        return Err(unsupported(name, "chained parameters are not supported"));
    }
    if code.is_empty() {
        return Err(invalid(name, "a parameter name is missing"));
    }
    let Some(def) = search::param(ty, code) else {
        return Err(unsupported(
            name,
            format!(
                "not a search parameter siphon supports for {ty} \
                 (unknown, composite, special or not a plain element path)"
            ),
        ));
    };
    let whole = format!("{name}={value}");
    if value.is_empty() {
        return Err(invalid(&whole, "empty value"));
    }
    if value.contains('\0') {
        return Err(invalid(name, "the value contains a NUL character"));
    }
    let target = match code {
        "_id" => Target::Id,
        "_lastUpdated" => Target::LastUpdated,
        _ => Target::Elements(def.paths.clone()),
    };
    let test = match modifier {
        Some("missing") => match value {
            "true" => Test::Missing(true),
            "false" => Test::Missing(false),
            _ => return Err(invalid(&whole, ":missing takes true or false")),
        },
        _ => {
            check_modifier(def.kind, code, modifier, &def.targets, name)?;
            values::parse_test(def, code, modifier, value, now).map_err(|mut e| {
                if e.part.is_empty() {
                    e.part = whole.clone();
                }
                e
            })?
        }
    };
    Ok(Clause {
        name: name.to_string(),
        target,
        test,
    })
}

/// Refuses a modifier the parameter's type does not take (`:missing` is handled before).
fn check_modifier(
    kind: ParamType,
    code: &str,
    modifier: Option<&str>,
    targets: &[String],
    name: &str,
) -> Result<(), FilterError> {
    let Some(m) = modifier else {
        return Ok(());
    };
    let ok = match (kind, m) {
        (ParamType::String, "exact" | "contains") => true,
        (ParamType::Token, "not" | "text") => code != "_id",
        (ParamType::Reference, t) if t.starts_with(|c: char| c.is_ascii_uppercase()) => {
            if !crate::fhir::is_resource_type(t) {
                return Err(invalid(name, format!(":{t} is not an R4 resource type")));
            }
            if !targets.is_empty() && !targets.iter().any(|x| x == t) {
                return Err(invalid(
                    name,
                    format!(
                        "{code} cannot point to a {t} (it points to {})",
                        targets.join(", ")
                    ),
                ));
            }
            true
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let allowed = match kind {
        ParamType::String => ":missing, :exact, :contains",
        ParamType::Token if code == "_id" => ":missing",
        ParamType::Token => ":missing, :not, :text",
        ParamType::Reference => ":missing, :[Type]",
        _ => ":missing",
    };
    Err(unsupported(
        name,
        format!(
            "modifier :{m} is not supported on {} parameter {code} (supported: {allowed})",
            kind.as_str()
        ),
    ))
}
