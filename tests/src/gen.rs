//! Deterministic, realistic FHIR-shaped test data.
//!
//! The same seed always gives the same bytes, on every machine: the generator uses its
//! own SplitMix64 rather than a library RNG whose stream could change between versions.
//! Resources are 0.5-3 KB, with nested arrays, references between types, unicode, and
//! characters that need escaping in JSON (quotes, backslashes, tabs, newlines).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

/// The types the generator knows.
pub const TYPES: &[&str] = &["Patient", "Encounter", "Observation", "Condition"];

/// A small, stable PRNG (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FAMILY: &[&str] = &[
    "Smith",
    "Müller",
    "García",
    "O'Brien",
    "Nguyễn",
    "Иванов",
    "田中",
    "Kowalski",
    "Dubois",
    "Šimek",
];
const GIVEN: &[&str] = &[
    "John",
    "Zoë",
    "Ana María",
    "Jean-Luc",
    "Søren",
    "Aiko",
    "Олег",
    "François",
    "Łukasz",
    "Mei",
];
const CITY: &[&str] = &[
    "Boston",
    "São Paulo",
    "Zürich",
    "Kraków",
    "Москва",
    "東京",
    "Reykjavík",
    "Ålesund",
];
const NOTES: &[&str] = &[
    "Patient reports \"mild\" pain; see C:\\records\\2024\\note.txt",
    "Line one\nline two\ttabbed",
    "Allergic to penicillin — rash (2019) ✓",
    "Follow-up in 2 weeks. BP 120/80 mmHg.",
    "Emoji check 🧪💉 and a backslash at the end \\",
    "Unicode escapes: \u{00e9}\u{4e2d}\u{1F600}",
];
const LOINC: &[(&str, &str, &str)] = &[
    ("8867-4", "Heart rate", "/min"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    ("29463-7", "Body weight", "kg"),
    ("8310-5", "Body temperature", "Cel"),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL"),
];
const SNOMED: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("35489007", "Depressive disorder"),
];

fn date(rng: &mut Rng) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        1940 + rng.below(80),
        1 + rng.below(12),
        1 + rng.below(28)
    )
}

fn instant(rng: &mut Rng) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        2015 + rng.below(10),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    )
}

/// The id of resource number `n` of a type (stable, unique per type).
pub fn id_of(resource_type: &str, n: u64) -> String {
    format!("{}-{n:08}", &resource_type[..3].to_ascii_lowercase())
}

/// Resource number `n` of `resource_type`, deterministic for (`seed`, type, `n`).
pub fn resource(resource_type: &str, n: u64, seed: u64) -> Value {
    let mut rng = Rng::new(
        seed.wrapping_mul(31)
            .wrapping_add(n)
            .wrapping_add(resource_type.len() as u64 * 1_000_003),
    );
    let id = id_of(resource_type, n);
    let patient_ref = format!("Patient/{}", id_of("Patient", rng.below(n + 1)));
    let extensions: Vec<Value> = (0..rng.below(4))
        .map(|i| json!({"url": format!("http://example.org/fhir/StructureDefinition/ext-{i}"), "valueString": rng.pick(NOTES).to_string()}))
        .collect();
    let mut value = match resource_type {
        "Patient" => {
            let names: Vec<Value> = (0..1 + rng.below(3))
                .map(|i| json!({"use": if i == 0 {"official"} else {"nickname"}, "family": rng.pick(FAMILY), "given": [rng.pick(GIVEN), rng.pick(GIVEN)]}))
                .collect();
            json!({
                "resourceType": "Patient", "id": id,
                "meta": {"versionId": "1", "lastUpdated": instant(&mut rng), "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": format!("{:03}-{:02}-{:04}", rng.below(1000), rng.below(100), rng.below(10000))},
                               {"system": "http://hospital.example.org/mrn", "value": format!("MRN{}", rng.next_u64() % 10_000_000)}],
                "active": rng.below(10) > 0,
                "name": names,
                "telecom": [{"system": "phone", "value": format!("+1-555-{:04}", rng.below(10000)), "use": "home"},
                            {"system": "email", "value": format!("{}@example.org", id)}],
                "gender": *rng.pick(&["male", "female", "other", "unknown"]),
                "birthDate": date(&mut rng),
                "address": [{"line": [format!("{} Main St.", rng.below(999)), "Apt \"B\""], "city": rng.pick(CITY), "postalCode": format!("{:05}", rng.below(99999)), "country": "US"}],
                "extension": extensions,
                "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", rng.pick(NOTES))}
            })
        }
        "Encounter" => json!({
            "resourceType": "Encounter", "id": id,
            "status": *rng.pick(&["finished", "in-progress", "planned"]),
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": *rng.pick(&["AMB", "IMP", "EMER"])},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}], "text": rng.pick(NOTES)}],
            "subject": {"reference": patient_ref},
            "participant": (0..1 + rng.below(3)).map(|i| json!({"individual": {"reference": format!("Practitioner/pr-{i}"), "display": format!("Dr. {}", rng.pick(FAMILY))}})).collect::<Vec<_>>(),
            "period": {"start": instant(&mut rng), "end": instant(&mut rng)},
            "reasonCode": [{"text": rng.pick(NOTES)}],
            "extension": extensions
        }),
        "Observation" => {
            let (code, display, unit) = *rng.pick(LOINC);
            json!({
                "resourceType": "Observation", "id": id,
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
                "subject": {"reference": patient_ref},
                "effectiveDateTime": instant(&mut rng),
                "valueQuantity": {"value": (rng.below(200_000) as f64) / 1000.0 + 0.125, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                "note": [{"text": rng.pick(NOTES)}],
                "referenceRange": [{"low": {"value": 1.5e-3}, "high": {"value": 12345678901234567890u64}}],
                "extension": extensions
            })
        }
        _ => {
            let (code, display) = *rng.pick(SNOMED);
            json!({
                "resourceType": resource_type, "id": id,
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}], "text": display},
                "subject": {"reference": patient_ref},
                "onsetDateTime": instant(&mut rng),
                "note": [{"text": rng.pick(NOTES)}, {"text": rng.pick(NOTES)}],
                "extension": extensions
            })
        }
    };
    // FHIR allows no empty arrays: a resource without extensions has no `extension`.
    if value["extension"].as_array().is_some_and(Vec::is_empty) {
        value.as_object_mut().unwrap().remove("extension");
    }
    value
}

/// `count` ndjson lines of `resource_type` (each ends with `\n`).
pub fn ndjson(resource_type: &str, count: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..count {
        serde_json::to_writer(&mut out, &resource(resource_type, n, seed)).unwrap();
        out.push(b'\n');
    }
    out
}

/// Gzips bytes (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `count` resources of `resource_type` as gzip to `out`, streaming (any size),
/// in gzip members of about `member_lines` lines each (several members, as pigz
/// writes). Returns the number of uncompressed bytes.
pub fn write_gz<W: Write>(
    out: W,
    resource_type: &str,
    count: u64,
    seed: u64,
) -> std::io::Result<u64> {
    let mut enc = GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, out),
        Compression::fast(),
    );
    let mut total = 0u64;
    let mut line = Vec::with_capacity(4096);
    for n in 0..count {
        line.clear();
        serde_json::to_writer(&mut line, &resource(resource_type, n, seed))?;
        line.push(b'\n');
        enc.write_all(&line)?;
        total += line.len() as u64;
    }
    enc.finish()?.flush()?;
    Ok(total)
}
