//! Search values: comma lists, escapes, and the token, string, reference and uri forms
//! (dates and numbers have their own files).

use chrono::{DateTime, Utc};

use super::{dates, invalid, numbers, FilterError};
use crate::fhir;
use crate::fhir::search::filter::{LocalRef, Reference, StringMode, System, Test, Token, Value};
use crate::fhir::search::{ParamDef, ParamType};

/// Splits `s` at the `sep`s not escaped by a backslash; the parts keep their escapes.
pub(super) fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Removes the search escapes `\,` `\|` `\$` `\\`; other backslashes stay.
pub(super) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if matches!(n, ',' | '|' | '$' | '\\') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// The test of a parameter of definition `def` for `value` (not `:missing`, whose
/// modifier was checked).
pub(super) fn parse_test(
    def: &ParamDef,
    code: &str,
    modifier: Option<&str>,
    value: &str,
    now: DateTime<Utc>,
) -> Result<Test, FilterError> {
    let mut values = Vec::new();
    for piece in split_unescaped(value, ',') {
        if piece.is_empty() {
            return Err(invalid(value, "an empty value in a comma-separated list"));
        }
        values.push(parse_value(def, code, modifier, piece, now)?);
    }
    Ok(Test::AnyOf {
        negate: modifier == Some("not"),
        values,
    })
}

fn parse_value(
    def: &ParamDef,
    code: &str,
    modifier: Option<&str>,
    piece: &str,
    now: DateTime<Utc>,
) -> Result<Value, FilterError> {
    Ok(match def.kind {
        ParamType::Token if code == "_id" => Value::Id(unescape(piece)),
        ParamType::Token if modifier == Some("text") => Value::TokenText(unescape(piece)),
        ParamType::Token => Value::Token(token(piece)?),
        ParamType::String => Value::String {
            mode: match modifier {
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                _ => StringMode::StartsWith,
            },
            text: unescape(piece),
        },
        ParamType::Date => dates::parse_date(piece, now)?,
        ParamType::Number => Value::Number(numbers::parse_number(piece)?),
        ParamType::Quantity => numbers::parse_quantity(piece)?,
        ParamType::Reference => Value::Reference(reference(def, modifier, piece)?),
        ParamType::Uri => Value::Uri(unescape(piece)),
    })
}

/// `code`, `system|code`, `|code`, `system|`.
fn token(piece: &str) -> Result<Token, FilterError> {
    let parts = split_unescaped(piece, '|');
    let non_empty = |s: &str| (!s.is_empty()).then(|| unescape(s));
    match parts.as_slice() {
        [code] => Ok(Token {
            system: System::Any,
            code: Some(unescape(code)),
        }),
        ["", ""] => Err(invalid(piece, "a token needs a system or a code")),
        [system, code] => Ok(Token {
            system: match non_empty(system) {
                Some(s) => System::Is(s),
                None => System::Absent,
            },
            code: non_empty(code),
        }),
        _ => Err(invalid(
            piece,
            "a token is code, system|code, |code or system| (escape other '|' as '\\|')",
        )),
    }
}

/// A FHIR id: `[A-Za-z0-9.-]{1,64}`.
pub(super) fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `Type/id`, `Type/id/_history/v`, `id`, `.../Type/id` or, with `:Type`, an id.
fn reference(
    def: &ParamDef,
    modifier: Option<&str>,
    piece: &str,
) -> Result<Reference, FilterError> {
    let raw = unescape(piece);
    let bare_id = |types: Vec<String>| LocalRef {
        types,
        id: raw.clone(),
        version: None,
        base: None,
    };
    if let Some(t) = modifier {
        if !is_id(&raw) {
            return Err(invalid(
                &raw,
                format!("with :{t} the value is a resource id"),
            ));
        }
        let local = Some(bare_id(vec![t.to_string()]));
        return Ok(Reference { local, raw });
    }
    if is_id(&raw) && !raw.contains('/') {
        let local = Some(bare_id(def.targets.clone()));
        return Ok(Reference { local, raw });
    }
    let local = match typed_reference(def, &raw)? {
        Some(local) => Some(local),
        // A canonical or other absolute URL: compared as given.
        None if raw.contains("://") || raw.starts_with("urn:") => None,
        None => {
            return Err(invalid(
                &raw,
                "a reference is Type/id, an id, or an absolute URL",
            ))
        }
    };
    Ok(Reference { raw, local })
}

/// `[base/]Type/id[/_history/version]` (a base only when absolute), of a type the
/// parameter may point to; `None` when `raw` has no `Type/id` at its end.
fn typed_reference(def: &ParamDef, raw: &str) -> Result<Option<LocalRef>, FilterError> {
    let mut segments: Vec<&str> = raw.split('/').collect();
    let mut version = None;
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        version = segments.pop().map(str::to_string);
        segments.pop();
    }
    let n = segments.len();
    if n < 2 || !fhir::is_resource_type(segments[n - 2]) || !is_id(segments[n - 1]) {
        return Ok(None);
    }
    let ty = segments[n - 2];
    let base = (n > 2).then(|| format!("{}/", segments[..n - 2].join("/")));
    if base.as_ref().is_some_and(|b| !b.contains("://")) {
        return Err(invalid(
            raw,
            "a reference is Type/id, an id, or an absolute URL",
        ));
    }
    if !def.targets.is_empty() && !def.targets.iter().any(|x| x == ty) {
        return Err(invalid(
            raw,
            format!(
                "this parameter cannot point to a {ty} (it points to {})",
                def.targets.join(", ")
            ),
        ));
    }
    if version.as_deref().is_some_and(|v| !is_id(v)) {
        return Err(invalid(raw, "a version id is [A-Za-z0-9.-]{1,64}"));
    }
    Ok(Some(LocalRef {
        types: vec![ty.to_string()],
        id: segments[n - 1].to_string(),
        version,
        base,
    }))
}
