//! Line validation (SPEC section 3): a JSON object with a string `resourceType` naming
//! the file's type and a string `id` following FHIR's id rule.
//!
//! Validation parses the whole line (so malformed JSON never reaches Postgres) but keeps
//! only the two fields it needs: the line itself is stored byte for byte as sent. With
//! `validation.enable` on or async, [`validate_line_fhir`] makes the same checks in the
//! one pass of the FHIR validator (`crate::validation`) and returns its findings.

use std::borrow::Cow;

use serde::Deserialize;

use crate::model::ids::check_id;
use crate::resource_type::{self, ResourceType};
use crate::validation::{FoundRef, Validator};

/// The two top-level fields validation reads; everything else is checked for syntax only.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow, default)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// A valid line: its id and type.
#[derive(Debug, PartialEq, Eq)]
pub struct Valid<'a> {
    pub id: Cow<'a, str>,
    pub resource_type: Cow<'a, str>,
}

/// True when `text` holds a `\u0000` escape (not an escaped backslash followed by
/// `u0000`): Postgres jsonb cannot store it.
pub fn has_nul_escape(text: &[u8]) -> bool {
    // Built once: building a searcher per line showed in the loader's profile.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\\u0000"));
    for pos in FINDER.find_iter(text) {
        let backslashes = text[..pos]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return true;
        }
    }
    false
}

/// Validates one line (without its newline). `expected` is the file's type, or `None`
/// when the file name names no type and each line brings its own.
pub fn validate_line<'a>(
    line: &'a [u8],
    expected: Option<&ResourceType>,
) -> Result<Valid<'a>, String> {
    let text = json_object(line)?;
    let head: Head = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            format!("{e}").replace("expected a borrowed string", "expected a string")
        } else {
            format!("invalid JSON: {e}")
        }
    })?;
    check_head(line, head.resource_type, head.id, expected)
}

/// A line checked with the FHIR checks too: the row, and what the checks found.
#[derive(Debug)]
pub struct Checked<'a> {
    pub valid: Valid<'a>,
    /// What the checks found (`path: what; ...`), `None` for a valid resource.
    pub findings: Option<String>,
    /// Its literal references (`checks: refs` or `all`).
    pub refs: Vec<FoundRef>,
}

/// [`validate_line`] plus the FHIR checks of `validator`, in one pass over the line.
/// `Err` is a line that cannot load at all; findings leave it to the caller.
pub fn validate_line_fhir<'a>(
    line: &'a [u8],
    expected: Option<&ResourceType>,
    validator: &Validator,
) -> Result<Checked<'a>, String> {
    let text = json_object(line)?;
    let checked = validator.check(text)?;
    if let Some(hard) = checked.hard {
        return Err(hard);
    }
    let valid = check_head(line, checked.resource_type, checked.id, expected)?;
    Ok(Checked {
        valid,
        findings: checked.findings,
        refs: checked.refs,
    })
}

/// The line as text, when it is UTF-8 and starts like a JSON object.
fn json_object(line: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("line is not valid UTF-8 (byte {})", e.valid_up_to()))?;
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => "line is not a JSON object".to_string(),
            Err(e) => format!("invalid JSON: {e}"),
        });
    }
    Ok(text)
}

/// The rules on `resourceType` and `id` every line follows.
fn check_head<'a>(
    line: &[u8],
    resource_type: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    expected: Option<&ResourceType>,
) -> Result<Valid<'a>, String> {
    let rt = resource_type.ok_or_else(|| "missing resourceType".to_string())?;
    match expected {
        Some(t) if t.as_str() != rt => {
            return Err(format!(
                "resourceType {rt:?} does not match the file's type {:?}",
                t.as_str()
            ));
        }
        None if !resource_type::is_valid(&rt) => {
            return Err(format!(
                "resourceType {rt:?} is not a valid resource type name"
            ));
        }
        _ => {}
    }
    let id = id.ok_or_else(|| "missing id".to_string())?;
    check_id(&id)?;
    if has_nul_escape(line) {
        return Err("contains a \\u0000 escape, which Postgres jsonb cannot store".into());
    }
    Ok(Valid {
        id,
        resource_type: rt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> ResourceType {
        ResourceType::parse("Patient").unwrap()
    }

    #[test]
    fn valid_lines() {
        let v = validate_line(
            br#"{"resourceType":"Patient","id":"p-1.a","name":[{"family":"\u00e9\\"}]}"#,
            Some(&patient()),
        )
        .unwrap();
        assert_eq!(v.id, "p-1.a");
        let v = validate_line(br#"  {"id":"x","resourceType":"Observation"} "#, None).unwrap();
        assert_eq!(v.resource_type, "Observation");
        // escaped id still validates (as "ab")
        assert_eq!(
            validate_line(
                br#"{"resourceType":"Patient","id":"a\u0062"}"#,
                Some(&patient())
            )
            .unwrap()
            .id,
            "ab"
        );
    }

    #[test]
    fn invalid_lines_say_why() {
        let p = patient();
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "invalid JSON"),
            (b"[1,2]", "not a JSON object"),
            (b"\"str\"", "not a JSON object"),
            (br#"{"resourceType":"Patient","id":"1""#, "invalid JSON"),
            (br#"{"id":"1"}"#, "missing resourceType"),
            (br#"{"resourceType":"Patient"}"#, "missing id"),
            (
                br#"{"resourceType":"Observation","id":"1"}"#,
                "does not match the file's type",
            ),
            (br#"{"resourceType":"Patient","id":1}"#, "expected a string"),
            (br#"{"resourceType":5,"id":"1"}"#, "expected a string"),
            (
                br#"{"resourceType":"Patient","id":"a b"}"#,
                "not a valid FHIR id",
            ),
            (
                br#"{"resourceType":"Patient","id":""}"#,
                "not a valid FHIR id",
            ),
            (
                br#"{"resourceType":"Patient","id":"1","x":"\u0000"}"#,
                "\\u0000",
            ),
            (
                b"{\"resourceType\":\"Patient\",\"id\":\"1\",\"x\":\"\xff\"}",
                "UTF-8",
            ),
            (
                br#"{"resourceType":"Patient","id":"1","id":"2"}"#,
                "duplicate field",
            ),
        ];
        for (line, want) in cases {
            let err = validate_line(line, Some(&p)).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!(r#"{{"resourceType":"Patient","id":"{}"}}"#, "a".repeat(65));
        assert!(validate_line(long.as_bytes(), Some(&p))
            .unwrap_err()
            .contains("not a valid FHIR id"));
        assert!(
            validate_line(br#"{"resourceType":"pg_catalog","id":"1"}"#, None)
                .unwrap_err()
                .contains("not a valid resource type")
        );
    }

    #[test]
    fn fhir_checks_keep_the_line_rules_and_add_findings() {
        use crate::model::validation::Checks;
        let v = Validator::new(Checks::Struct);
        let p = patient();
        let ok = validate_line_fhir(
            br#"{"resourceType":"Patient","id":"a","gender":"male"}"#,
            Some(&p),
            &v,
        )
        .unwrap();
        assert_eq!((ok.valid.id.as_ref(), ok.findings), ("a", None));
        let found = validate_line_fhir(
            br#"{"resourceType":"Patient","id":"a","birthDate":"soon"}"#,
            Some(&p),
            &v,
        )
        .unwrap();
        assert_eq!(
            found.findings.as_deref(),
            Some(r#"Patient.birthDate: "soon" is not a valid date"#)
        );
        for (line, want) in [
            (
                &br#"{"resourceType":"Observation","id":"o"}"#[..],
                "does not match the file's type",
            ),
            (br#"{"resourceType":"Patient"}"#, "missing id"),
            (
                br#"{"resourceType":"Patient","id":"a b"}"#,
                "not a valid FHIR id",
            ),
            (
                br#"{"resourceType":"Patient","id":"a","id":"b"}"#,
                "duplicate field",
            ),
            (
                br#"{"resourceType":"Patient","id":1}"#,
                "id must be a string",
            ),
            (br#"{"resourceType":5,"id":"1"}"#, "expected a string"),
            (b"[1]", "not a JSON object"),
            (br#"{"resourceType":"Patient","id":"a""#, "invalid JSON"),
            (
                br#"{"resourceType":"Patient","id":"a","x":"\u0000"}"#,
                "\\u0000",
            ),
        ] {
            let err = validate_line_fhir(line, Some(&p), &v).unwrap_err();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn nul_escape_detection_respects_escaped_backslashes() {
        assert!(has_nul_escape(br#"{"a":"\u0000"}"#));
        assert!(has_nul_escape(br#"{"a":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"u0000"}"#));
    }
}
