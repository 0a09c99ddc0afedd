//! One row per (parameter type, modifier or prefix, value): the `_typeFilter` values
//! (several are ORed) and the ids they must select among `fixtures::rows()`.

type Case = (&'static [&'static str], &'static [&'static str]);

pub const CASES: &[Case] = &[
    // date on dateTime, date (day and year precision), Period (closed, open), Timing.
    (&["Observation?date=2020"], &["o01", "o06"]),
    (&["Observation?date=2021-01-01"], &["o02"]),
    (
        &["Observation?date=lt2021-01-01"],
        &["o01", "o03", "o06", "o07"],
    ),
    (
        &["Observation?date=gt2020-12-31"],
        &["o02", "o03", "o04", "o07", "o08"],
    ),
    (
        &["Observation?date=ge2021-01-01"],
        &["o02", "o03", "o04", "o07", "o08"],
    ),
    (
        &["Observation?date=le2020-12-31"],
        &["o01", "o03", "o06", "o07"],
    ),
    (&["Observation?date=sa2020"], &["o02", "o04", "o07", "o08"]),
    (&["Observation?date=eb2021"], &["o01", "o06", "o07"]),
    (
        &["Observation?date=ne2020"],
        &["o02", "o03", "o04", "o07", "o08"],
    ),
    (
        &["Observation?date=ap2021-03-01"],
        &["o01", "o02", "o03", "o04", "o06", "o08"],
    ),
    (
        &["Observation?date=sa2021-03-01T07:59:59Z"],
        &["o04", "o07", "o08"],
    ),
    (
        &["Observation?date=sa2021-03-01T08:00:00Z"],
        &["o07", "o08"],
    ),
    (
        &["Observation?date=sa2021-03-01T09:59:59%2B02:00"],
        &["o04", "o07", "o08"],
    ),
    (
        &["Observation?date=sa2021-03-01T09:59:59+02:00"],
        &["o04", "o07", "o08"],
    ),
    (&["Observation?date=2019-05-05T10:00:00Z"], &["o07"]),
    (&["Observation?date:missing=true"], &["o05"]),
    (&["Encounter?date=2020-01"], &["e1"]),
    (&["Encounter?date=ge2020-01-05"], &["e2"]),
    (&["Encounter?date=lt2020-01-01"], &["e3"]),
    (&["Encounter?date=sa2019-12-31"], &["e1", "e2"]),
    (&["Encounter?date=eb2020-01-05"], &["e3"]),
    (&["Encounter?date:missing=true"], &["e4"]),
    (&["Patient?birthdate=1980"], &["p1", "p2", "p3"]),
    (&["Patient?birthdate=1980-05"], &["p1", "p3"]),
    (&["Patient?birthdate=lt1980"], &["p5"]),
    (&["Patient?birthdate=eb1980-01-01"], &["p5"]),
    (&["Patient?birthdate=gt1980-12-31"], &["p4"]),
    (
        &["Patient?birthdate=ge1980-05-17"],
        &["p1", "p2", "p3", "p4"],
    ),
    (&["CarePlan?activity-date=2020-02-02"], &["c1"]),
    (&["CarePlan?activity-date=ap2020-02-02"], &["c1", "c2"]),
    // _lastUpdated on the ts column.
    (&["Observation?_lastUpdated=2024-05-31"], &["o04"]),
    (&["Observation?_lastUpdated=gt2024-05-31"], &["o05"]),
    (
        &["Observation?_lastUpdated=lt2023"],
        &["o06", "o07", "o08", "o09", "o10"],
    ),
    (&["Observation?_lastUpdated=ge2024"], &["o03", "o04", "o05"]),
    (
        &["Observation?_lastUpdated=le2023-01-01"],
        &["o01", "o06", "o07", "o08", "o09", "o10"],
    ),
    // token on CodeableConcept, Coding, code, Identifier, ContactPoint, boolean.
    (&["Observation?code=1234-5"], &["o01", "o02", "o03", "o10"]),
    (
        &["Observation?code=http://loinc.org|1234-5"],
        &["o01", "o10"],
    ),
    (
        &["Observation?code=http%3A%2F%2Floinc.org%7C1234-5"],
        &["o01", "o10"],
    ),
    (&["Observation?code=|1234-5"], &["o03"]),
    (
        &["Observation?code=http://loinc.org|"],
        &["o01", "o05", "o06", "o10"],
    ),
    (
        &["Observation?code:not=http://loinc.org|1234-5"],
        &["o02", "o03", "o04", "o05", "o06", "o07", "o08", "o09"],
    ),
    (&["Observation?code:text=blood"], &["o04"]),
    (&["Observation?code:text=GLUC"], &["o06"]),
    (&["Observation?code=8480-6"], &[]),
    (&["Observation?combo-code=8480-6"], &["o04"]),
    (
        &["Observation?status=final,amended"],
        &["o01", "o03", "o04", "o05", "o07"],
    ),
    (&["Observation?category=vital-signs"], &["o01"]),
    (
        &["Observation?category=http://ex/cat|vital-signs"],
        &["o01"],
    ),
    (&["Observation?category=http://other|vital-signs"], &[]),
    (&["Observation?_tag=http://ex/tags|a"], &["o01"]),
    (&["Observation?_tag=a"], &["o01", "o03"]),
    (&["Observation?_id=o01,o03"], &["o01", "o03"]),
    (&["Observation?_id=o1"], &[]),
    (&["Patient?gender=male"], &["p1", "p3", "p9"]),
    (&["Patient?gender:not=male"], &["p2", "p4", "p5"]),
    (&["Patient?identifier=M1"], &["p1", "p2", "p3"]),
    (&["Patient?identifier=http://ex/mrn|M1"], &["p1"]),
    (&["Patient?identifier=|M1"], &["p3"]),
    (&["Patient?telecom=555-1234"], &["p1"]),
    (&["Patient?telecom=phone|555-1234"], &["p1"]),
    (&["Patient?telecom=email|555-1234"], &[]),
    (&["Patient?active=true"], &["p1"]),
    (&["Patient?active=false"], &["p2"]),
    (&["Patient?_security=R"], &["p1"]),
    // uri.
    (
        &["Observation?_profile=http://ex/StructureDefinition/p"],
        &["o02"],
    ),
    // quantity and number.
    (&["Observation?value-quantity=100"], &["o01", "o02", "o10"]),
    (
        &["Observation?value-quantity=100|http://unitsofmeasure.org|mg"],
        &["o01"],
    ),
    (
        &["Observation?value-quantity=100||mg"],
        &["o01", "o02", "o10"],
    ),
    (
        &["Observation?value-quantity=ge99.4"],
        &["o01", "o02", "o03", "o10"],
    ),
    (
        &["Observation?value-quantity=gt99.4"],
        &["o01", "o02", "o10"],
    ),
    (&["Observation?value-quantity=lt10"], &["o04"]),
    (
        &["Observation?value-quantity=ap100"],
        &["o01", "o02", "o03", "o10"],
    ),
    (&["Observation?value-quantity=ne100"], &["o03", "o04"]),
    (
        &["Observation?value-quantity=1e2"],
        &["o01", "o02", "o03", "o10"],
    ),
    (
        &["Observation?value-quantity:missing=true"],
        &["o05", "o06", "o07", "o08"],
    ),
    (
        &["Observation?component-value-quantity=120||mm[Hg]"],
        &["o04"],
    ),
    (&["Observation?combo-value-quantity=120"], &["o04"]),
    (&["RiskAssessment?probability=0.5"], &["r1", "r2"]),
    (&["RiskAssessment?probability=0.50"], &["r1"]),
    (&["RiskAssessment?probability=gt0.5"], &["r2", "r3"]),
    (&["RiskAssessment?probability=ap0.5"], &["r1", "r2", "r3"]),
    (&["RiskAssessment?probability=ne0.5"], &["r2", "r3"]),
    // reference: relative, absolute, versioned, bare id, :Type, canonical.
    (&["Observation?subject=Patient/p1"], &["o01", "o02"]),
    (&["Observation?patient=p1"], &["o01", "o02"]),
    (&["Observation?subject:Patient=p2"], &["o03"]),
    (&["Observation?subject=Patient/p2/_history/3"], &["o03"]),
    (&["Observation?subject=Patient/p2/_history/4"], &[]),
    (
        &["Observation?subject=http://example.org/fhir/Patient/p1"],
        &["o01", "o02"],
    ),
    (
        &["Observation?subject=http://other.org/fhir/Patient/p1"],
        &["o01"],
    ),
    (&["Observation?subject=g1"], &["o04"]),
    (&["Observation?subject=Group/g1"], &["o04"]),
    (
        &["Observation?subject:missing=true"],
        &["o07", "o08", "o10"],
    ),
    (&["Patient?general-practitioner=Practitioner/dr1"], &["p1"]),
    (&["Patient?general-practitioner=dr1"], &["p1"]),
    (&["Patient?general-practitioner:Organization=dr1"], &[]),
    (
        &["CarePlan?instantiates-canonical=http://ex/PlanDefinition/x"],
        &["c1", "c2"],
    ),
    // string: starts-with, folded; :exact; :contains; HumanName and Address parts.
    (&["Patient?family=muller"], &["p1", "p2"]),
    (&["Patient?family=MULL"], &["p1", "p2", "p5"]),
    (&["Patient?family:exact=Müller"], &["p1"]),
    (&["Patient?family:exact=muller"], &[]),
    (&["Patient?name=jorg"], &["p1"]),
    (&["Patient?name=anne"], &["p3"]),
    (&["Patient?name=official"], &[]),
    (&["Patient?name:contains=muller"], &["p1", "p2", "p3"]),
    (&["Patient?name=oster"], &["p4"]),
    (&["Patient?given=LUKASZ"], &["p4"]),
    (&["Patient?address-city=zurich"], &["p1", "p2"]),
    (&["Patient?address=bahnhof"], &["p1"]),
    (&["Patient?family:missing=true"], &["p3", "p9"]),
    // AND inside a query, OR across values and across repeated _typeFilters.
    (&["Observation?code=1234-5&status=final"], &["o01", "o03"]),
    (
        &["Observation?code=1234-5", "Observation?status=amended"],
        &["o01", "o02", "o03", "o04", "o10"],
    ),
    (
        &["Observation?status=final,amended&value-quantity=lt10"],
        &["o04"],
    ),
    (
        &["Observation?date=ge2020&date=lt2021"],
        &["o01", "o03", "o06", "o07"],
    ),
    (
        &["Patient?gender=female", "Patient?family=mullins"],
        &["p2", "p5"],
    ),
    (&["Patient?"], &["p1", "p2", "p3", "p4", "p5", "p9"]),
];
