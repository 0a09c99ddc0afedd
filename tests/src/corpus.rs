//! Bad (and awkward) input files the tests share. Each function returns the file's
//! bytes and documents what a correct loader must make of it.

use crate::gen::{gzip, ndjson};

/// 10 lines, gzipped: 5 valid Patients (lines 1, 3, 5, 9, 10 — one with CRLF and one
/// with a BOM), 2 blank lines (6, 8, not errors) and these errors:
/// line 2 invalid JSON, line 4 wrong resourceType, line 7 missing id.
pub fn mixed_patients() -> Vec<u8> {
    let lines: [&[u8]; 10] = [
        br#"{"resourceType":"Patient","id":"ok-1","name":[{"family":"One"}]}"#,
        br#"{"resourceType":"Patient","id":"bad-json","#,
        b"{\"resourceType\":\"Patient\",\"id\":\"ok-2\"}\r",
        br#"{"resourceType":"Observation","id":"wrong-type"}"#,
        b"\xEF\xBB\xBF{\"resourceType\":\"Patient\",\"id\":\"ok-3\"}",
        b"   ",
        br#"{"resourceType":"Patient","name":"no id"}"#,
        b"",
        br#"{"resourceType":"Patient","id":"ok-4","text":"tab\there, quote \" backslash \\ unicode \u00e9 \ud83d\ude00"}"#,
        br#"{"resourceType":"Patient","id":"ok-5","deceasedBoolean":false}"#,
    ];
    gzip(&lines.join(&b'\n'))
}

/// Valid lines whose content is a trap for text-format COPY and re-serialisation:
/// backslashes, escaped quotes, `\\u0000` as text (escaped backslash), big and precise
/// numbers, key order. Loaded, each must come back equal as JSON.
pub fn escaping_traps() -> Vec<&'static str> {
    vec![
        r#"{"resourceType":"Patient","id":"esc-1","text":"C:\\path\\to\\file","note":"say \"hi\""}"#,
        r#"{"resourceType":"Patient","id":"esc-2","literal":"\\u0000 is not a NUL","tab":"a\tb","nl":"a\nb"}"#,
        r#"{"resourceType":"Patient","id":"esc-3","big":123456789012345678901234567890,"precise":0.1000000000000000055511151231257827}"#,
        r#"{"resourceType":"Patient","id":"esc-4","z":1,"a":2,"uni":"\u00e9\u4e2d\ud83d\ude00","raw":"é中😀"}"#,
        r#"{"resourceType":"Patient","id":"esc-5","backslash_end":"\\","copy_markers":"\\.\n\\N"}"#,
    ]
}

/// `count` valid Patients, the gzip cut to `keep_percent` of its length.
pub fn truncated(count: u64, keep_percent: usize) -> Vec<u8> {
    let mut gz = gzip(&ndjson("Patient", count, 7));
    let keep = gz.len() * keep_percent / 100;
    gz.truncate(keep);
    gz
}

/// `count` valid Patients with bytes in the middle of the deflate data overwritten.
pub fn corrupt(count: u64) -> Vec<u8> {
    let mut gz = gzip(&ndjson("Patient", count, 7));
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 64] {
        *b = 0xA5;
    }
    gz
}

/// The same `count` Patients in `members` concatenated gzip members (as pigz or `cat
/// a.gz b.gz` write them).
pub fn multi_member(count: u64, members: u64) -> Vec<u8> {
    let all = ndjson("Patient", count, 11);
    let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
    let per = lines.len().div_ceil(members as usize);
    lines
        .chunks(per)
        .flat_map(|part| gzip(&part.concat()))
        .collect()
}

/// One resource of the invalid FHIR corpus (`tests/corpus/fhir-r4-invalid.ndjson`):
/// valid R4 but for one defect, and what validation must say about it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct InvalidCase {
    /// The resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The defect, in words.
    pub defect: String,
    /// The element path the finding must name (`Observation.valueQuantity.value`).
    pub path: String,
    /// How the finding must start after the path and `: `.
    pub says: String,
    pub resource: serde_json::Value,
}

impl InvalidCase {
    /// The finding validation must report: `path: says...`.
    pub fn finding(&self) -> String {
        format!("{}: {}", self.path, self.says)
    }
}

/// The invalid FHIR corpus: 20 resource types, one defect each.
pub fn fhir_invalid() -> Vec<InvalidCase> {
    include_str!("../corpus/fhir-r4-invalid.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("the corpus is valid JSON"))
        .collect()
}
