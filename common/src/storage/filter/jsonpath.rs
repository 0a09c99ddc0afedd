//! jsonpath texts for the tests `resource @? '<jsonpath>'` decides: token, number,
//! quantity, reference and uri values, with the values as jsonpath string literals.

use crate::error::{Error, Result};
use crate::fhir::search::filter::{NumberTest, Prefix, Reference, System, Token};
use crate::fhir::search::ParamPath;

/// `p` as a lax jsonpath reaching every value (`$."name"[*]."given"[*]`).
pub(super) fn path(p: &ParamPath) -> Result<String> {
    let mut out = String::from("$");
    for step in p.steps() {
        let ok = step.starts_with(|c: char| c.is_ascii_alphabetic())
            && step.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(Error::Internal(format!("bad element path {:?}", p.path)));
        }
        out.push_str(&format!(".\"{step}\"[*]"));
    }
    Ok(out)
}

/// A jsonpath string literal for `s` (`"a\"b"`).
pub(super) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number checked to be a jsonpath number (`-?[0-9]+(e-?[0-9]+)?`).
fn number_text(n: &str) -> Result<&str> {
    let body = n.strip_prefix('-').unwrap_or(n);
    let (m, e) = body.split_once('e').unwrap_or((body, "0"));
    let e = e.strip_prefix('-').unwrap_or(e);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(m) && digits(e) {
        Ok(n)
    } else {
        Err(Error::Internal(format!("bad number {n:?}")))
    }
}

/// The jsonpath predicate of a number test on `operand` (`@`, `@."value"`).
fn number_predicate(operand: &str, n: &NumberTest) -> Result<String> {
    let (v, lo, hi) = (
        number_text(&n.value)?,
        number_text(&n.low)?,
        number_text(&n.high)?,
    );
    let x = operand;
    Ok(match n.prefix {
        Prefix::Eq => format!("{x} >= {lo} && {x} < {hi}"),
        Prefix::Ne => format!("{x}.type() == \"number\" && !({x} >= {lo} && {x} < {hi})"),
        Prefix::Gt | Prefix::Sa => format!("{x} > {v}"),
        Prefix::Lt | Prefix::Eb => format!("{x} < {v}"),
        Prefix::Ge => format!("{x} >= {v}"),
        Prefix::Le => format!("{x} <= {v}"),
        Prefix::Ap => format!("{x} >= {lo} && {x} <= {hi}"),
    })
}

fn filtered(base: String, conditions: &[String]) -> String {
    if conditions.is_empty() {
        base
    } else {
        format!("{base} ? ({})", conditions.join(" && "))
    }
}

/// Token: on Coding and CodeableConcept (`system`, `code`), Identifier and ContactPoint
/// (`system`, `value`), booleans, and plain values (the system is not checked).
pub(super) fn token(p: &ParamPath, ty: &str, t: &Token) -> Result<Option<String>> {
    let base = path(p)?;
    let (base, code_field) = match ty {
        "Coding" => (base, "code"),
        "CodeableConcept" => (format!("{base}.\"coding\"[*]"), "code"),
        "Identifier" | "ContactPoint" => (base, "value"),
        "boolean" => {
            return Ok(match t.code.as_deref() {
                Some(b @ ("true" | "false")) => Some(format!("{base} ? (@ == {b})")),
                Some(_) => None,
                None => Some(base),
            })
        }
        _ => {
            let cond: Vec<String> = t
                .code
                .iter()
                .map(|c| format!("@ == {}", string(c)))
                .collect();
            return Ok(Some(filtered(base, &cond)));
        }
    };
    let mut cond = Vec::new();
    if let Some(c) = &t.code {
        cond.push(format!("@.\"{code_field}\" == {}", string(c)));
    }
    match &t.system {
        System::Any => {}
        System::Absent => cond.push("!(exists(@.\"system\"))".into()),
        System::Is(s) => cond.push(format!("@.\"system\" == {}", string(s))),
    }
    Ok(Some(filtered(base, &cond)))
}

/// Number on integer and decimal elements.
pub(super) fn number(p: &ParamPath, _ty: &str, n: &NumberTest) -> Result<Option<String>> {
    Ok(Some(format!(
        "{} ? ({})",
        path(p)?,
        number_predicate("@", n)?
    )))
}

/// Quantity: the number on `value`; a system on `system` with the code on `code`, or
/// without a system the code on `code` or `unit`.
pub(super) fn quantity(
    p: &ParamPath,
    _ty: &str,
    n: &NumberTest,
    system: &Option<String>,
    code: &Option<String>,
) -> Result<Option<String>> {
    let mut cond = vec![number_predicate("@.\"value\"", n)?];
    match (system, code) {
        (Some(s), c) => {
            cond.push(format!("@.\"system\" == {}", string(s)));
            if let Some(c) = c {
                cond.push(format!("@.\"code\" == {}", string(c)));
            }
        }
        (None, Some(c)) => {
            let c = string(c);
            cond.push(format!("(@.\"code\" == {c} || @.\"unit\" == {c})"));
        }
        (None, None) => {}
    }
    Ok(Some(filtered(path(p)?, &cond)))
}

/// Escapes `s` for a POSIX regular expression (every ASCII punctuation character or
/// space; a backslash before a letter or digit would be an escape).
fn regex_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reference: `reference` of Reference elements (relative, absolute or versioned);
/// canonical and uri elements hold the value as given (a canonical maybe `|version`).
pub(super) fn reference(p: &ParamPath, ty: &str, r: &Reference) -> Result<Option<String>> {
    let base = path(p)?;
    if ty != "Reference" {
        let raw = string(&r.raw);
        let versioned = string(&format!("{}|", r.raw));
        return Ok(Some(format!(
            "{base} ? (@ == {raw} || @ starts with {versioned})"
        )));
    }
    let refs = format!("{base}.\"reference\"[*]");
    let Some(local) = &r.local else {
        return Ok(Some(format!("{refs} ? (@ == {})", string(&r.raw))));
    };
    // The types this path may hold: the value's, narrowed by the path's own targets.
    let types: Vec<&String> = match (local.types.is_empty(), p.targets.is_empty()) {
        (true, _) => p.targets.iter().collect(),
        (false, true) => local.types.iter().collect(),
        (false, false) => local
            .types
            .iter()
            .filter(|t| p.targets.contains(t))
            .collect(),
    };
    if types.is_empty() && !local.types.is_empty() {
        return Ok(None);
    }
    let type_re = if types.is_empty() {
        "[A-Z][A-Za-z]*".to_string()
    } else {
        let quoted: Vec<String> = types.iter().map(|t| regex_quote(t)).collect();
        format!("({})", quoted.join("|"))
    };
    let prefix = match &local.base {
        Some(b) => format!("({})?", regex_quote(b)),
        None => "(.*/)?".to_string(),
    };
    let history = match &local.version {
        Some(v) => format!("/_history/{}", regex_quote(v)),
        None => "(/_history/[^/]+)?".to_string(),
    };
    let re = format!("^{prefix}{type_re}/{}{history}$", regex_quote(&local.id));
    Ok(Some(format!("{refs} ? (@ like_regex {})", string(&re))))
}

/// Uri: exact.
pub(super) fn uri(p: &ParamPath, _ty: &str, u: &str) -> Result<Option<String>> {
    Ok(Some(format!("{} ? (@ == {})", path(p)?, string(u))))
}
