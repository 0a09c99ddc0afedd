//! String tests (starts-with, `:contains`, `:exact`) and token `:text`, with case and
//! accents folded.

use super::jsonpath::{self, path};
use super::literal;
use crate::error::Result;
use crate::fhir::search::filter::StringMode;
use crate::fhir::search::ParamPath;

/// The string parts of a HumanName searched by a string parameter.
const NAME_PARTS: &[&str] = &["family", "given", "prefix", "suffix", "text"];
/// The string parts of an Address.
const ADDRESS_PARTS: &[&str] = &[
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

/// `expr` (text) folded: Unicode NFD, combining marks U+0300..U+036F removed, the
/// letters NFD leaves whole (`Ø Ł Đ Ħ Ŧ ı`) mapped to ASCII, lower-cased. Deterministic
/// in any locale for Latin letters (`lower` of ASCII); other scripts are lower-cased as
/// the database's locale says. Needs a UTF-8 database (`normalize`).
pub(super) fn fold(expr: &str) -> String {
    format!(
        "lower(translate(regexp_replace(normalize({expr}, NFD), '[\u{300}-\u{36f}]', '', 'g'), \
         'ØøŁłĐđĦħŦŧı', 'OoLlDdHhTti'))"
    )
}

/// A jsonpath reaching the string values a string parameter searches on `p` of type
/// `ty` (all the parts of a HumanName or Address).
fn strings_of(p: &ParamPath, ty: &str) -> Result<Option<String>> {
    let base = path(p)?;
    let parts = match ty {
        "HumanName" => NAME_PARTS,
        "Address" => ADDRESS_PARTS,
        "string" | "markdown" | "id" | "code" => return Ok(Some(base)),
        _ => return Ok(None),
    };
    let keys: Vec<String> = parts
        .iter()
        .map(|k| format!("@.\"key\" == \"{k}\""))
        .collect();
    Ok(Some(format!(
        "{base}.keyvalue() ? ({}).\"value\"[*]",
        keys.join(" || ")
    )))
}

/// The folded comparison of the string values `jsonpath` reaches with `text`.
fn folded(res: &str, jsonpath: &str, mode: StringMode, text: &str) -> String {
    let value = fold("tf_s.v #>> '{}'");
    let wanted = fold(&literal(text));
    let test = match mode {
        StringMode::Contains => format!("strpos({value}, {wanted}) > 0"),
        _ => format!("starts_with({value}, {wanted})"),
    };
    format!(
        "EXISTS (SELECT 1 FROM jsonb_path_query({res}, {}, '{{}}', true) AS tf_s(v) \
         WHERE jsonb_typeof(tf_s.v) = 'string' AND {test})",
        literal(jsonpath)
    )
}

/// A string parameter's test on `p`.
pub(super) fn string(
    p: &ParamPath,
    ty: &str,
    mode: StringMode,
    text: &str,
    res: &str,
) -> Result<Option<String>> {
    let Some(jp) = strings_of(p, ty)? else {
        return Ok(None);
    };
    Ok(Some(match mode {
        StringMode::Exact => format!(
            "{res} @? {}",
            literal(&format!("{jp} ? (@ == {})", jsonpath::string(text)))
        ),
        _ => folded(res, &jp, mode, text),
    }))
}

/// Token `:text`: starts-with (folded) on the text of a CodeableConcept and the display
/// of its codings, a Coding's display, an Identifier's `type.text`.
pub(super) fn token_text(p: &ParamPath, ty: &str, text: &str, res: &str) -> Result<Option<String>> {
    let base = path(p)?;
    let paths = match ty {
        "CodeableConcept" => vec![
            format!("{base}.\"text\""),
            format!("{base}.\"coding\"[*].\"display\""),
        ],
        "Coding" => vec![format!("{base}.\"display\"")],
        "Identifier" => vec![format!("{base}.\"type\".\"text\"")],
        _ => return Ok(None),
    };
    let any: Vec<String> = paths
        .iter()
        .map(|jp| folded(res, jp, StringMode::StartsWith, text))
        .collect();
    Ok(Some(format!("({})", any.join(" OR "))))
}
