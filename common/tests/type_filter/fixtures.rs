//! The rows the `_typeFilter` cases run against: for each case some hits and some near
//! misses (precision boundaries, other systems, missing elements, arrays, case and
//! accents, open periods), plus odd hand-inserted rows that must never break a query.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The `now` the cases parse with (anchors date `ap`).
pub fn now() -> DateTime<Utc> {
    at("2024-06-01T00:00:00Z")
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// (type, id, ts, resource). Resources carry no `id`/`resourceType`: the id column is
/// authoritative.
pub fn rows() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let loinc = "http://loinc.org";
    let ucum = "http://unitsofmeasure.org";
    let old = "2022-01-01T00:00:00Z";
    vec![
        (
            "Observation",
            "o01",
            "2023-01-01T00:00:00Z",
            json!({
            "status": "final",
            "meta": {"tag": [{"system": "http://ex/tags", "code": "a"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "999"},
                                {"system": loinc, "code": "1234-5"}]},
            "category": [{"coding": [{"system": "http://ex/cat", "code": "vital-signs"}]}],
            "effectiveDateTime": "2020-12-31T23:59:59Z",
            "valueQuantity": {"value": 100, "system": ucum, "code": "mg", "unit": "mg"},
            "subject": {"reference": "Patient/p1"}}),
        ),
        (
            "Observation",
            "o02",
            "2023-06-01T00:00:00Z",
            json!({
            "status": "preliminary",
            "meta": {"profile": ["http://ex/StructureDefinition/p"]},
            "code": {"coding": [{"system": "http://other.org", "code": "1234-5"}]},
            "effectiveDateTime": "2021-01-01",
            "valueQuantity": {"value": 100.4, "unit": "mg"},
            "subject": {"reference": "http://example.org/fhir/Patient/p1"}}),
        ),
        (
            "Observation",
            "o03",
            "2024-01-01T00:00:00Z",
            json!({
            "status": "final",
            "meta": {"profile": ["http://ex/StructureDefinition/p|1.0"],
                     "tag": [{"system": "http://ex/other-tags", "code": "a"}]},
            "code": {"coding": [{"code": "1234-5"}]},
            "effectivePeriod": {"start": "2020-06-01", "end": "2021-02-01"},
            "valueQuantity": {"value": 99.4, "system": ucum, "code": "mg"},
            "subject": {"reference": "Patient/p2/_history/3"}}),
        ),
        (
            "Observation",
            "o04",
            "2024-05-31T23:59:59Z",
            json!({
            "status": "amended",
            "code": {"text": "Blood Pressure"},
            "effectivePeriod": {"start": "2021-03-01T10:00:00+02:00"},
            "valueQuantity": {"value": 5, "system": ucum, "code": "g"},
            "subject": {"reference": "Group/g1"},
            "component": [{"code": {"coding": [{"system": loinc, "code": "8480-6"}]},
                           "valueQuantity": {"value": 120, "system": ucum, "code": "mm[Hg]"}}]}),
        ),
        (
            "Observation",
            "o05",
            "2024-06-01T00:00:00Z",
            json!({
            "status": "final",
            "code": {"coding": [{"system": loinc, "code": "1234-5X"}]},
            "subject": {"reference": "Patient/p10"}}),
        ),
        (
            "Observation",
            "o06",
            old,
            json!({
            "status": "cancelled",
            "code": {"coding": [{"system": loinc, "code": "15074-8", "display": "Glucose [Moles/volume]"}]},
            "effectiveDateTime": "2020",
            "subject": {"reference": "Patient/p1x"}}),
        ),
        (
            "Observation",
            "o07",
            old,
            json!({
            "status": "final",
            "effectiveTiming": {"event": ["2019-05-05T10:00:00Z", "2022-01-01T00:00:00Z"]}}),
        ),
        // Odd rows, as a hand insert may leave them: each must match nothing it should
        // not, and never make a query fail.
        (
            "Observation",
            "o08",
            old,
            json!({
            "status": "registered",
            "effectiveDateTime": "2021-02-30"}),
        ),
        (
            "Observation",
            "o09",
            old,
            json!({
            "status": 7,
            "code": "oops",
            "effectiveDateTime": "not a date",
            "valueQuantity": {"value": "100", "code": "mg"},
            "subject": "Patient/p1"}),
        ),
        (
            "Observation",
            "o10",
            old,
            json!({
            "code": {"coding": {"system": loinc, "code": "1234-5"}},
            "effectivePeriod": "2020",
            "valueQuantity": [{"value": 100, "code": "mg"}]}),
        ),
        (
            "Patient",
            "p1",
            old,
            json!({
            "meta": {"security": [{"system": "http://ex/sec", "code": "R"}]},
            "name": [{"family": "Müller", "given": ["Jörg", "Anna"]}],
            "gender": "male", "birthDate": "1980-05-17", "active": true,
            "identifier": [{"system": "http://ex/mrn", "value": "M1"}],
            "telecom": [{"system": "phone", "value": "555-1234"}],
            "address": [{"city": "Zürich", "line": ["Bahnhofstrasse 1"]}],
            "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
        ),
        (
            "Patient",
            "p2",
            old,
            json!({
            "name": [{"use": "official", "family": "MULLER", "given": ["George"]}],
            "gender": "female", "birthDate": "1980", "active": false,
            "identifier": [{"system": "http://other/mrn", "value": "M1"}],
            "address": [{"city": "Zurich"}]}),
        ),
        (
            "Patient",
            "p3",
            old,
            json!({
            "name": [{"text": "Anne Smith-Muller"}],
            "gender": "male", "birthDate": "1980-05",
            "identifier": [{"value": "M1"}],
            "telecom": [{"system": "email", "value": "a@b.c"}]}),
        ),
        (
            "Patient",
            "p4",
            old,
            json!({
            "name": [{"family": "Øster", "given": ["Łukasz"]}],
            "birthDate": "1981-01-01"}),
        ),
        (
            "Patient",
            "p5",
            old,
            json!({
            "name": [{"use": "official", "family": "Mullins"}],
            "gender": "other", "birthDate": "1979-12-31"}),
        ),
        (
            "Patient",
            "p9",
            old,
            json!({
            "name": "oops", "gender": ["male"], "birthDate": 19800517, "active": "true",
            "address": {"city": 7}}),
        ),
        (
            "Encounter",
            "e1",
            old,
            json!({"status": "finished",
            "period": {"start": "2020-01-01T00:00:00Z", "end": "2020-01-05T00:00:00Z"}}),
        ),
        (
            "Encounter",
            "e2",
            old,
            json!({"status": "finished", "period": {"start": "2020-01-04"}}),
        ),
        (
            "Encounter",
            "e3",
            old,
            json!({"status": "finished", "period": {"end": "2019-12-31"}}),
        ),
        ("Encounter", "e4", old, json!({"status": "planned"})),
        (
            "RiskAssessment",
            "r1",
            old,
            json!({"prediction": [{"probabilityDecimal": 0.5}]}),
        ),
        (
            "RiskAssessment",
            "r2",
            old,
            json!({"prediction": [{"probabilityDecimal": 0.45},
                                                            {"probabilityDecimal": 0.8}]}),
        ),
        (
            "RiskAssessment",
            "r3",
            old,
            json!({"prediction": [{"probabilityDecimal": 0.55}]}),
        ),
        (
            "RiskAssessment",
            "r4",
            old,
            json!({"prediction": [{"probabilityRange": {}}]}),
        ),
        (
            "CarePlan",
            "c1",
            old,
            json!({
            "instantiatesCanonical": ["http://ex/PlanDefinition/x"],
            "activity": [{"detail": {"scheduledTiming": {"event": ["2020-02-02"]}}}]}),
        ),
        (
            "CarePlan",
            "c2",
            old,
            json!({
            "instantiatesCanonical": ["http://ex/PlanDefinition/x|2.0"],
            "activity": [{"detail": {"scheduledPeriod": {"start": "2020-02-01", "end": "2020-02-03"}}}]}),
        ),
        (
            "CarePlan",
            "c3",
            old,
            json!({
            "instantiatesCanonical": ["http://ex/PlanDefinition/xy"]}),
        ),
    ]
}
