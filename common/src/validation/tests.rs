//! The validator on single lines: what it accepts, what it finds and how it says so.

use super::*;
use crate::model::validation::Checks;

fn check(line: &str) -> Checked<'_> {
    Validator::new(Checks::All).check(line).unwrap()
}

fn findings(line: &str) -> String {
    check(line).findings.unwrap_or_default()
}

#[test]
fn valid_resources_have_no_findings() {
    for line in [
        r#"{"resourceType":"Patient","id":"p1","active":true,"name":[{"family":"Müller","given":["Zoë","Ana María"]}],"birthDate":"1970-01-01","gender":"female","telecom":[{"system":"phone","value":"+1 555"}]}"#,
        r#"{"id":"o1","resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.5e-3,"unit":"kg"},"_status":{"extension":[{"url":"http://x.org/e","valueCode":"a"}]}}"#,
        r#"{"resourceType":"Observation","id":"o2","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"component":[{"code":{"text":"c"},"valueInteger":-3,"referenceRange":[{"low":{"value":1}}]}]}"#,
        r#"{"resourceType":"Patient","id":"p2","birthDate":"2000","_birthDate":{"extension":[{"url":"http://x.org/t","valueTime":"10:00:00"}]},"name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"http://x.org/a","valueString":"b"}]}]}]}"#,
        r##"{"resourceType":"Patient","id":"p3","contained":[{"resourceType":"Organization","id":"org","name":"Acme"}],"managingOrganization":{"reference":"#org"}}"##,
        r#"{"resourceType":"Questionnaire","id":"q","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"string","item":[{"linkId":"1.1.1","type":"display"}]}]}]}"#,
        r#"{"resourceType":"Bundle","id":"b","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"x","deceasedBoolean":false}}]}"#,
        r#"{"resourceType":"Patient","id":"p4","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">é</div>"},"extension":[{"url":"http://x.org/e","valueReference":{"reference":"Organization/o"}}]}"#,
    ] {
        let c = check(line);
        assert_eq!(c.findings, None, "{line}");
        assert!(c.hard.is_none() && c.id.is_some() && c.resource_type.is_some());
    }
}

#[test]
fn findings_name_the_element_path_and_what_is_wrong() {
    let obs = r#""resourceType":"Observation","id":"o","code":{"text":"x"}"#;
    let cases: Vec<(String, &str)> = vec![
        (r#"{"resourceType":"Patient","id":"p","birthDate":"yesterday"}"#.into(), r#"Patient.birthDate: "yesterday" is not a valid date"#),
        (r#"{"resourceType":"Patient","id":"p","colour":"blue"}"#.into(), "Patient.colour: unknown element"),
        (r#"{"resourceType":"Patient","id":"p","name":{"family":"x"}}"#.into(), "Patient.name: expected an array (of an object (HumanName)), found an object"),
        (r#"{"resourceType":"Patient","id":"p","gender":["male"]}"#.into(), "Patient.gender: expected a single value (max 1) of a string (code), found an array"),
        (format!("{{{obs}}}"), "Observation.status: missing (min 1)"),
        (format!(r#"{{{obs},"status":"final","valueQuantity":{{"value":"1.5"}}}}"#), "Observation.valueQuantity.value: expected a number (decimal), found a string"),
        (format!(r#"{{{obs},"status":"final","valueString":"a","valueInteger":1}}"#), "Observation.valueInteger: only one type of value[x] may be present"),
        (format!(r#"{{{obs},"status":"final","value":1}}"#), "Observation.value: unknown element"),
        (r#"{"resourceType":"Patient","id":"p","multipleBirthInteger":1.5}"#.into(), "Patient.multipleBirthInteger: 1.5 is not a valid integer"),
        (r#"{"resourceType":"Patient","id":"p","active":"yes"}"#.into(), "Patient.active: expected a boolean (boolean), found a string"),
        (r#"{"resourceType":"Patient","id":"p","name":[]}"#.into(), "Patient.name: empty array"),
        (r#"{"resourceType":"Patient","id":"p","gender":null}"#.into(), "Patient.gender: null is not allowed"),
        (r#"{"resourceType":"Patient","id":"p","maritalStatus":{}}"#.into(), "Patient.maritalStatus: empty object"),
        (r#"{"resourceType":"Patient","id":"p","name":[{"given":[""]}]}"#.into(), "Patient.name[0].given[0]: empty string"),
        (r#"{"resourceType":"Patient","id":"p","contained":[{"resourceType":"Observation","id":"c","status":"final"}]}"#.into(), "Patient.contained[0].code: missing (min 1)"),
        (r#"{"resourceType":"Patient","id":"p","contained":[{"resourceType":"Spaceship","id":"c"}]}"#.into(), r#"Patient.contained[0]: "Spaceship" is not an R4 resource type"#),
        (r#"{"resourceType":"Patient","id":"p","extension":[{"valueString":"x"}]}"#.into(), "Patient.extension[0].url: missing (min 1)"),
        (r#"{"resourceType":"Patient","id":"p","gender":"male","gender":"female"}"#.into(), "Patient.gender: duplicate property"),
        (r#"{"resourceType":"Patient","id":"p","photo":[{"data":"not base64!"}]}"#.into(), r#"Patient.photo[0].data: "not base64!" is not a valid base64Binary"#),
        (r#"{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},"issued":"2020-01-01"}"#.into(), r#"Observation.issued: "2020-01-01" is not a valid instant"#),
        (r#"{"resourceType":"Patient","id":"p","communication":[{"language":{"text":"x"},"preferred":true,"_preferred":"x"}]}"#.into(), "Patient.communication[0]._preferred: expected an object (Element), found a string"),
        (r#"{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},"subject":{"reference":"Medication/m"}}"#.into(), "Observation.subject: Medication/m is not an allowed target"),
    ];
    for (line, want) in &cases {
        let got = findings(line);
        assert!(got.contains(want), "{line}\n  want: {want}\n  got:  {got}");
    }
}

#[test]
fn id_and_resource_type_come_out_wherever_they_are() {
    let c =
        check(r#"{"id":"late","status":"final","code":{"text":"x"},"resourceType":"Observation"}"#);
    assert_eq!(
        (c.id.as_deref(), c.resource_type.as_deref()),
        (Some("late"), Some("Observation"))
    );
    assert_eq!(c.findings, None);
    let c = check(r#"{"resourceType":"NotFhir","id":"x"}"#);
    assert_eq!(c.resource_type.as_deref(), Some("NotFhir"));
    assert!(c.findings.unwrap().contains("is not an R4 resource type"));
    let c = check(r#"{"resourceType":"Patient","id":"a","id":"b"}"#);
    assert!(c.hard.unwrap().contains("duplicate field `id`"));
    let c = check(r#"{"resourceType":"Patient","id":7}"#);
    assert!(c.hard.unwrap().contains("id must be a string"));
    let bad = Validator::new(Checks::Struct).check(r#"{"resourceType":"Patient","id":"p""#);
    assert!(bad.unwrap_err().contains("invalid JSON"));
    let bad = Validator::new(Checks::Struct).check(r#"{"resourceType":"Patient","id":"p"} x"#);
    assert!(bad.unwrap_err().contains("trailing"));
}

#[test]
fn checks_choose_what_is_reported() {
    let line = r#"{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},"colour":1,"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Medication/m"}],"hasMember":[{"reference":"http://x.org/Observation/1"}]}"#;
    let structure = Validator::new(Checks::Struct).check(line).unwrap();
    assert_eq!(
        structure.findings.as_deref(),
        Some("Observation.colour: unknown element")
    );
    assert!(
        structure.refs.is_empty(),
        "struct does not collect references"
    );
    let refs = Validator::new(Checks::Refs).check(line).unwrap();
    let findings = refs.findings.unwrap();
    assert!(
        findings.starts_with("Observation.performer[0]: Medication/m is not an allowed target"),
        "{findings}"
    );
    assert!(!findings.contains("colour"));
    let found: Vec<(String, &str, String)> = refs
        .refs
        .into_iter()
        .map(|r| (r.path, r.target_type, r.id))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "Observation.subject".to_string(),
                "Patient",
                "p1".to_string()
            ),
            (
                "Observation.performer[0]".to_string(),
                "Medication",
                "m".to_string()
            ),
        ]
    );
}

#[test]
fn many_findings_are_capped_and_counted() {
    let props: Vec<String> = (0..30).map(|i| format!(r#""x{i}":1"#)).collect();
    let line = format!(
        r#"{{"resourceType":"Patient","id":"p",{}}}"#,
        props.join(",")
    );
    let got = findings(&line);
    assert_eq!(got.matches("unknown element").count(), 20);
    assert!(got.ends_with("and 10 more"), "{got}");
}
