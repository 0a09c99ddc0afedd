//! The parser's rules and refusals: combination, names, modifiers, what is refused.

use chrono::{DateTime, Utc};

use super::*;
use crate::fhir::search::filter::{Clause, StringMode, System, Target, Test, Token, Value};

pub(super) fn now() -> DateTime<Utc> {
    "2024-06-01T00:00:00Z".parse().unwrap()
}

pub(super) fn clauses(v: &str) -> Vec<Clause> {
    parse_one(v, now()).unwrap().1.clauses
}

pub(super) fn refused(v: &str) -> FilterError {
    parse_one(v, now()).expect_err(v)
}

pub(super) fn values(c: &Clause) -> &[Value] {
    match &c.test {
        Test::AnyOf { values, .. } => values,
        t => panic!("{t:?}"),
    }
}

#[test]
fn values_for_one_type_are_ored_and_parameters_anded() {
    let filters = parse_type_filters(
        &[
            "Observation?code=a&status=final",
            "Patient?gender=male",
            "Observation?status=amended",
        ],
        now(),
    )
    .unwrap();
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[0].resource_type, "Observation");
    assert_eq!(filters[0].queries.len(), 2);
    assert_eq!(filters[0].queries[0].clauses.len(), 2);
    assert_eq!(
        filters[0].queries[0].text,
        "Observation?code=a&status=final"
    );
    assert_eq!(filters[1].resource_type, "Patient");
    // A comma ORs values inside one clause; a repeated parameter is another clause.
    let c = clauses("Observation?status=final,amended&date=ge2020&date=lt2021");
    assert_eq!(c.len(), 3);
    assert_eq!(values(&c[0]).len(), 2);
    // An empty query keeps every resource of the type.
    assert!(clauses("Observation?").is_empty());
}

#[test]
fn the_query_is_form_decoded() {
    let c = clauses("Observation?code=http%3A%2F%2Floinc.org%7C1234-5&value-string=a+b");
    assert_eq!(
        values(&c[0]),
        [Value::Token(Token {
            system: System::Is("http://loinc.org".into()),
            code: Some("1234-5".into()),
        })]
    );
    assert!(matches!(&values(&c[1])[0], Value::String { text, .. } if text == "a b"));
    let e = refused("Observation?code=%FF");
    assert_eq!(e.kind, FilterErrorKind::Invalid);
    assert!(e.reason.contains("UTF-8"), "{e}");
}

#[test]
fn targets_follow_the_parameter() {
    assert_eq!(clauses("Observation?_id=a")[0].target, Target::Id);
    assert_eq!(
        clauses("Observation?_lastUpdated=2020")[0].target,
        Target::LastUpdated
    );
    let Target::Elements(paths) = &clauses("Observation?combo-code=x")[0].target else {
        panic!()
    };
    let names: Vec<&str> = paths.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(names, ["code", "component.code"]);
}

#[test]
fn modifiers_each_type_takes() {
    let test = |v: &str| clauses(v).remove(0).test;
    assert_eq!(test("Observation?code:missing=true"), Test::Missing(true));
    assert_eq!(
        test("Patient?birthdate:missing=false"),
        Test::Missing(false)
    );
    assert!(matches!(
        test("Observation?code:not=a"),
        Test::AnyOf { negate: true, .. }
    ));
    assert!(
        matches!(&values(&clauses("Observation?code:text=gluc")[0])[0], Value::TokenText(t) if t == "gluc")
    );
    for (v, mode) in [
        ("Patient?family=Mu", StringMode::StartsWith),
        ("Patient?family:exact=Mu", StringMode::Exact),
        ("Patient?family:contains=Mu", StringMode::Contains),
    ] {
        let c = clauses(v);
        let Value::String { mode: m, .. } = &values(&c[0])[0] else {
            panic!("{v}")
        };
        assert_eq!(*m, mode, "{v}");
    }
    let c = clauses("Observation?subject:Patient=p1");
    let Value::Reference(r) = &values(&c[0])[0] else {
        panic!()
    };
    assert_eq!(r.local.as_ref().unwrap().types, ["Patient"]);
}

#[test]
fn unsupported_modifiers_are_named() {
    for (v, part) in [
        ("Observation?code:below=a", "code:below"),
        ("Observation?code:in=http://vs", "code:in"),
        ("Observation?code:exact=a", "code:exact"),
        ("Patient?family:not=a", "family:not"),
        ("Observation?subject:identifier=a|b", "subject:identifier"),
        ("Observation?date:exact=2020", "date:exact"),
        ("Observation?_id:not=a", "_id:not"),
        ("Observation?_profile:below=http://x", "_profile:below"),
    ] {
        let e = refused(v);
        assert_eq!(e.kind, FilterErrorKind::Unsupported, "{v}");
        assert_eq!(e.part, part, "{v}");
        assert!(e.reason.contains("supported:"), "{e}");
        assert!(e.to_string().contains(v), "{e}");
    }
    // :Type must be a resource type the parameter may point to.
    assert!(refused("Observation?subject:Nope=p1")
        .reason
        .contains("not an R4 resource type"));
    assert!(refused("Observation?patient:Group=g1")
        .reason
        .contains("cannot point to a Group"));
    assert!(refused("Observation?code:missing=maybe")
        .reason
        .contains("true or false"));
}

#[test]
fn result_parameters_chains_and_has_are_refused() {
    for p in [
        "_include",
        "_revinclude",
        "_sort",
        "_elements",
        "_count",
        "_summary",
    ] {
        let e = refused(&format!("Observation?{p}=x"));
        assert_eq!(e.kind, FilterErrorKind::Unsupported);
        assert_eq!(e.part, p);
        assert!(e.reason.contains("not allowed inside a _typeFilter"), "{e}");
    }
    assert_eq!(
        refused("Observation?_include:iterate=x").part,
        "_include:iterate"
    );
    for v in [
        "Observation?subject.name=x",
        "Observation?subject:Patient.name=x",
    ] {
        let e = refused(v);
        assert!(e.reason.contains("chained"), "{e}");
    }
    let e = refused("Patient?_has:Observation:patient:code=1234-5");
    assert!(e.reason.contains("_has"), "{e}");
}

#[test]
fn unknown_composite_and_special_parameters_are_refused() {
    for (v, part) in [
        ("Observation?nope=1", "nope"),
        ("Observation?code-value-quantity=a$5", "code-value-quantity"),
        ("Location?near=1|2|3|km", "near"),
        ("Patient?email=a@b.c", "email"),
        ("Observation?_text=x", "_text"),
        ("Observation?_source=x", "_source"),
        ("Observation?_list=x", "_list"),
    ] {
        let e = refused(v);
        assert_eq!(
            (e.kind, e.part.as_str()),
            (FilterErrorKind::Unsupported, part),
            "{v}"
        );
        assert!(
            e.reason.contains("not a search parameter siphon supports"),
            "{e}"
        );
    }
}

#[test]
fn malformed_values_are_invalid() {
    for (v, why) in [
        ("Observation", "resource type, '?'"),
        ("Nope?code=a", "not an R4 resource type"),
        ("observation?code=a", "not an R4 resource type"),
        ("Observation?code", "needs '='"),
        ("Observation?code=", "empty value"),
        ("Observation?=a", "name is missing"),
        (
            "Observation?code=a,,b",
            "empty value in a comma-separated list",
        ),
        ("Observation?code=|", "system or a code"),
        ("Observation?code=a|b|c", "a token is"),
        ("Observation?code=a%00", "NUL"),
        ("Observation?date=2020-13", "a date is"),
        ("Observation?value-quantity=5|mg", "a quantity is"),
        ("Observation?value-quantity=abc", "a number is"),
    ] {
        let e = refused(v);
        assert_eq!(e.kind, FilterErrorKind::Invalid, "{v}: {e}");
        assert!(e.reason.contains(why), "{v}: {e}");
    }
}

#[test]
fn lenient_parsing_keeps_the_good_values_and_reports_the_rest() {
    let (filters, refused) = parse_type_filters_lenient(
        &["Observation?code=a", "Observation?code:below=b", "Nope?x=y"],
        now(),
    );
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].queries.len(), 1);
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].type_filter, "Observation?code:below=b");
    let err: crate::error::Error = refused[1].clone().into();
    assert!(matches!(err, crate::error::Error::BadRequest(m) if m.contains("Nope")));
    // The strict form stops at the first refusal.
    assert!(parse_type_filters(&["Observation?code=a", "Nope?x=y"], now()).is_err());
}

#[test]
fn supported_params_list_the_capability_statement_entries() {
    let obs = supported_params("Observation");
    assert!(obs.contains(&("code", ParamType::Token)));
    assert!(obs.contains(&("date", ParamType::Date)));
    assert!(obs.contains(&("value-quantity", ParamType::Quantity)));
    assert!(obs.contains(&("_lastUpdated", ParamType::Date)));
    assert!(!obs.iter().any(|(c, _)| *c == "code-value-quantity"));
    assert!(supported_params("Nope").is_empty());
    // Every listed parameter parses.
    for (code, kind) in obs {
        let value = match kind {
            ParamType::Date => "2020",
            ParamType::Number | ParamType::Quantity => "5",
            ParamType::Reference => "Patient/x",
            _ => "x",
        };
        let v = format!("Observation?{code}={value}");
        if kind == ParamType::Reference && parse_one(&v, now()).is_err() {
            // Parameters that cannot point to a Patient.
            assert!(refused(&v).reason.contains("cannot point"), "{v}");
            continue;
        }
        parse_one(&v, now()).unwrap();
    }
}
