//! Random `_typeFilter` values for the fuzz targets (`fuzz.rs`) and the Postgres check
//! of compiled samples (`type_filter.rs`): mostly well-formed pieces, often hostile.

use proptest::prelude::*;

fn ty() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["Observation", "Patient", "Encounter", "RiskAssessment", "CarePlan"])
            .prop_map(str::to_string),
        1 => "[A-Za-z]{0,12}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    let codes = vec![
        "code",
        "date",
        "status",
        "value-quantity",
        "subject",
        "patient",
        "name",
        "family",
        "birthdate",
        "gender",
        "identifier",
        "telecom",
        "active",
        "probability",
        "_id",
        "_lastUpdated",
        "_tag",
        "_profile",
        "_security",
        "instantiates-canonical",
        "activity-date",
        "address",
        "_include",
        "_has",
        "subject.name",
        "combo-code",
    ];
    let modifiers = vec![
        "",
        ":missing",
        ":exact",
        ":contains",
        ":not",
        ":text",
        ":Patient",
        ":Group",
        ":below",
        ":in",
        ":identifier",
        ":",
        ":x'y",
    ];
    prop_oneof![
        6 => (prop::sample::select(codes), prop::sample::select(modifiers))
            .prop_map(|(c, m)| format!("{c}{m}")),
        1 => "[a-z_:.'\"-]{0,12}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    let prefixes = vec![
        "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx",
    ];
    let atoms = vec![
        "2020",
        "2020-12-31",
        "2021-01-01T00:00:00Z",
        "2021-02-30",
        "2020-01-01T10:00+05:30",
        "100",
        "1e2",
        "-0.5",
        "99999999999999999999999999999",
        "100|http://unitsofmeasure.org|mg",
        "100||mg",
        "http://loinc.org|1234-5",
        "|x",
        "x|",
        "|",
        "Patient/p1",
        "Patient/p1/_history/2",
        "http://ex.org/fhir/Patient/p1",
        "p1",
        "true",
        "muller",
        "Müller",
        "it's",
        "a\\,b",
        "a\\|b",
        "\\",
        "'; DROP TABLE x; --",
        "\"quoted\"",
        "$x",
        "%27",
        "%ZZ",
        "%00",
        "\u{1F600}",
        "a\u{0301}",
        "--",
        "/*",
        "{}",
        "[*]",
        "@ == 1",
        "like_regex",
        "E'x'",
        "\u{7}",
    ];
    prop_oneof![
        6 => (prop::sample::select(prefixes), prop::collection::vec(prop::sample::select(atoms), 1..3))
            .prop_map(|(p, a)| format!("{p}{}", a.join(","))),
        2 => any::<String>(),
        1 => "[-a-z0-9|,:.%/\\\\'\"+ ]{0,20}",
    ]
}

/// A `_typeFilter` value: `Type?name=value&...`, sometimes broken.
pub fn type_filter() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (ty(), prop::collection::vec((name(), value()), 0..4)).prop_map(|(t, params)| {
            let q: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!("{t}?{}", q.join("&"))
        }),
        1 => any::<String>(),
    ]
}

/// `sql` is made of the compiler's own vocabulary outside its quoted literals: every
/// literal (`'...'` or `E'...'`) is closed, and what lies between them has no
/// character or word a user could have put there. Returns the problem, if any.
pub fn only_quoted_literals(sql: &str) -> Result<(), String> {
    const WORDS: &[&str] = &[
        "EXISTS",
        "SELECT",
        "FROM",
        "AS",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "CROSS",
        "JOIN",
        "LATERAL",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "IS",
        "NULL",
        "AT",
        "TIME",
        "ZONE",
        "true",
        "false",
        "resource",
        "id",
        "ts",
        "tf_s",
        "tf_d",
        "tf_m",
        "tf_r",
        "v",
        "m",
        "s",
        "e",
        "lo",
        "hi",
        "jsonb_path_query",
        "jsonb_typeof",
        "starts_with",
        "strpos",
        "lower",
        "translate",
        "regexp_replace",
        "normalize",
        "NFD",
        "regexp_match",
        "timestamp",
        "timestamptz",
        "make_interval",
        "years",
        "months",
        "days",
        "hours",
        "mins",
        "secs",
        "int",
        "float8",
        "coalesce",
        "left",
        "substr",
        "interval",
        "length",
        "greatest",
        "power",
        "E",
    ];
    let mut outside = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            outside.push(c);
            continue;
        }
        // E'...' escapes backslashes; both double quotes.
        let escaped = outside.ends_with('E');
        outside.push_str("''");
        loop {
            match chars.next() {
                None => return Err("an unterminated literal".into()),
                Some('\\') if escaped => {
                    if chars.next().is_none() {
                        return Err("an unterminated E literal".into());
                    }
                }
                Some('\'') => {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
    }
    for bad in [";", "--", "/*", "\""] {
        if outside.contains(bad) {
            return Err(format!("{bad:?} outside literals"));
        }
    }
    if let Some(c) = outside
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " _.,()=<>!:*+-[]'#@?\n".contains(*c)))
    {
        return Err(format!("{c:?} outside literals"));
    }
    let word_chars = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for word in outside.split(|c: char| !word_chars(c)) {
        if word.is_empty() || word.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if !WORDS.contains(&word) {
            return Err(format!("word {word:?} outside literals"));
        }
    }
    Ok(())
}
