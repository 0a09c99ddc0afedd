//! The value forms: tokens and escapes, date ranges, numbers and quantities, references.

use chrono::Duration;

use super::dates::date_range;
use super::tests::{clauses, now, refused, values};
use super::FilterErrorKind;
use crate::fhir::search::filter::{DateRange, LocalRef, Prefix, System, Token, Value};

fn value(v: &str) -> Value {
    values(&clauses(v)[0])[0].clone()
}

fn token(system: System, code: Option<&str>) -> Value {
    Value::Token(Token {
        system,
        code: code.map(str::to_string),
    })
}

#[test]
fn token_forms_and_escapes() {
    let is = |s: &str| System::Is(s.to_string());
    assert_eq!(value("Observation?code=a"), token(System::Any, Some("a")));
    assert_eq!(value("Observation?code=s|a"), token(is("s"), Some("a")));
    assert_eq!(
        value("Observation?code=|a"),
        token(System::Absent, Some("a"))
    );
    assert_eq!(value("Observation?code=s|"), token(is("s"), None));
    // `\,` `\|` `\$` `\\` escape; the query's own encoding comes first.
    assert_eq!(
        value("Observation?code=a\\,b"),
        token(System::Any, Some("a,b"))
    );
    assert_eq!(
        value("Observation?code=s\\|t|a"),
        token(is("s|t"), Some("a"))
    );
    assert_eq!(
        value("Observation?code=a\\\\"),
        token(System::Any, Some("a\\"))
    );
    assert_eq!(
        value("Observation?code=a%5C%2Cb"),
        token(System::Any, Some("a,b"))
    );
    assert_eq!(values(&clauses("Observation?code=a,s|b,|c")[0]).len(), 3);
    assert_eq!(value("Observation?_id=o1"), Value::Id("o1".into()));
}

fn range(v: &str) -> (Prefix, DateRange) {
    match value(&format!("Observation?date={v}")) {
        Value::Date { prefix, range } => (prefix, range),
        other => panic!("{other:?}"),
    }
}

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

#[test]
fn a_date_stands_for_the_range_of_its_precision() {
    let r = |s: &str| date_range(s).unwrap();
    let span = |s: &str| {
        let d = r(s);
        (d.low, d.high)
    };
    assert_eq!(
        span("2020"),
        (utc("2020-01-01T00:00:00Z"), utc("2021-01-01T00:00:00Z"))
    );
    assert_eq!(
        span("2020-02"),
        (utc("2020-02-01T00:00:00Z"), utc("2020-03-01T00:00:00Z"))
    );
    assert_eq!(
        span("2020-12"),
        (utc("2020-12-01T00:00:00Z"), utc("2021-01-01T00:00:00Z"))
    );
    assert_eq!(
        span("2020-02-29"),
        (utc("2020-02-29T00:00:00Z"), utc("2020-03-01T00:00:00Z"))
    );
    assert_eq!(
        span("2020-01-01T10:30"),
        (utc("2020-01-01T10:30:00Z"), utc("2020-01-01T10:31:00Z"))
    );
    assert_eq!(
        span("2020-01-01T10:30:05Z"),
        (utc("2020-01-01T10:30:05Z"), utc("2020-01-01T10:30:06Z"))
    );
    assert_eq!(
        span("2020-01-01T10:30:05.5Z").1,
        utc("2020-01-01T10:30:05.6Z")
    );
    assert_eq!(
        span("2020-01-01T10:30:05.123+02:00").0,
        utc("2020-01-01T08:30:05.123Z")
    );
    assert_eq!(
        span("2020-01-01T00:30:00-05:30").0,
        utc("2020-01-01T06:00:00Z")
    );
    // An unescaped '+' arrives as a space.
    assert_eq!(
        span("2020-01-01T10:00:00 02:00").0,
        utc("2020-01-01T08:00:00Z")
    );
    for bad in [
        "20",
        "2020-1",
        "2020-13",
        "2020-02-30",
        "2020-01-01T",
        "2020-01-01T10",
        "2020-01-01T25:00",
        "2020-01-01T10:00:00+15:00",
        "2020-01-01T10:00:00.Z",
        "2020-01-01T10:00:00.1234567890Z",
        "2020-01-01T10:00:00X",
        "0000",
        "2020-01-01 10:00",
        "2020-00",
        "2020--01",
        "ge",
        "2020-01-01T10:00:00+0200",
    ] {
        assert!(date_range(bad).is_none(), "{bad}");
    }
}

#[test]
fn date_prefixes_and_ap_tolerance() {
    for (p, prefix) in [
        ("", Prefix::Eq),
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
    ] {
        let (got, r) = range(&format!("{p}2020"));
        assert_eq!(got, prefix, "{p}");
        assert_eq!(r.low, utc("2020-01-01T00:00:00Z"));
    }
    // ap: widened by 10% of the time to now (about 4.4 years: 161 days) each side.
    let (prefix, r) = range("ap2020");
    assert_eq!(prefix, Prefix::Ap);
    let tolerance = (now() - utc("2020-01-01T00:00:00Z")) / 10;
    assert_eq!(r.low, utc("2020-01-01T00:00:00Z") - tolerance);
    assert_eq!(r.high, utc("2021-01-01T00:00:00Z") + tolerance);
    // ... and by at least one day.
    let (_, r) = range("ap2024-06-01");
    assert_eq!(r.low, utc("2024-05-31T00:00:00Z"));
    assert_eq!(r.high - r.low, Duration::days(3));
    for bad in ["xx2020", "2020x", "gt", "ap"] {
        let e = refused(&format!("Observation?date={bad}"));
        assert_eq!(e.kind, FilterErrorKind::Invalid);
        assert_eq!(e.part, bad);
        assert!(
            e.reason.contains("prefixes eq ne gt lt ge le sa eb ap"),
            "{e}"
        );
    }
}

#[test]
fn quantities_with_and_without_units() {
    let Value::Quantity {
        number,
        system,
        code,
    } = value("Observation?value-quantity=le5.4|http://unitsofmeasure.org|mg")
    else {
        panic!()
    };
    assert_eq!(
        (number.prefix, number.value.as_str()),
        (Prefix::Le, "54e-1")
    );
    assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
    assert_eq!(code.as_deref(), Some("mg"));
    let Value::Quantity { system, code, .. } = value("Observation?value-quantity=5||mg") else {
        panic!()
    };
    assert_eq!((system, code.as_deref()), (None, Some("mg")));
    let Value::Quantity { system, code, .. } = value("Observation?value-quantity=5") else {
        panic!()
    };
    assert_eq!((system, code), (None, None));
    let Value::Number(n) = value("RiskAssessment?probability=ap0.5") else {
        panic!()
    };
    assert_eq!((n.low.as_str(), n.high.as_str()), ("45e-2", "55e-2"));
}

fn local(v: &str) -> Option<LocalRef> {
    match value(v) {
        Value::Reference(r) => r.local,
        other => panic!("{other:?}"),
    }
}

#[test]
fn reference_forms() {
    let l = local("Observation?subject=Patient/p1").unwrap();
    assert_eq!(
        (l.types, l.id, l.version, l.base),
        (vec!["Patient".to_string()], "p1".into(), None, None)
    );
    let l = local("Observation?subject=Patient/p1/_history/2").unwrap();
    assert_eq!(l.version.as_deref(), Some("2"));
    let l = local("Observation?subject=http://ex.org/fhir/Patient/p1").unwrap();
    assert_eq!(l.base.as_deref(), Some("http://ex.org/fhir/"));
    // A bare id: the parameter's target types (one for `patient`).
    assert_eq!(local("Observation?patient=p1").unwrap().types, ["Patient"]);
    assert!(local("Observation?subject=p1").unwrap().types.len() > 1);
    // A canonical or other URL naming no Type/id is kept as given.
    assert_eq!(
        local("CarePlan?instantiates-canonical=http://ex/PlanDefinition/x|2.0"),
        None
    );
    let Value::Reference(r) =
        value("CarePlan?instantiates-canonical=http://ex/PlanDefinition/x|2.0")
    else {
        panic!()
    };
    assert_eq!(r.raw, "http://ex/PlanDefinition/x|2.0");
    for (v, why) in [
        ("Observation?patient=Group/g1", "cannot point to a Group"),
        ("Observation?subject=a/b/Patient/p1", "absolute URL"),
        ("Observation?subject=Patient/", "absolute URL"),
        ("Observation?subject=x y", "absolute URL"),
        ("Observation?subject:Patient=Patient/p1", "resource id"),
        ("Observation?subject=Patient/p1/_history/a.b!", "version id"),
    ] {
        let e = refused(v);
        assert_eq!(e.kind, FilterErrorKind::Invalid, "{v}");
        assert!(e.reason.contains(why), "{v}: {e}");
    }
}
