//! `$export?organizeOutputBy=Patient` (Bulk Data STU3): files of Patient resource blocks,
//! end to end in process (the API, the export queue and worker, Postgres, LocalStack S3).
//! Every file is read back block by block and compared with the blocks computed here from
//! the stored rows: a `Parameters` header naming the Patient, the Patient, then every
//! resource that references it through the Patient compartment's paths.

mod api_harness;
mod export_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use api_harness::{admin, setup, setup_with, Env};
use export_harness::{complete, kick_off, load, request, status_path, FHIR};
use serde_json::{json, Value};
use siphon::exporting::task::TaskOptions;
use siphon::loading::LoadOptions;
use siphon::ResourceType;
use siphon_tests::http_get;

/// A block as read from a file: its Patient id and lines (the header left out).
#[derive(Debug)]
struct Block {
    patient: String,
    lines: Vec<String>,
}

/// The files of a complete manifest, each as its blocks; checks what every file item
/// and file must be: no `type`, `count` = lines, a header first.
async fn files_of(manifest: &Value) -> Vec<Vec<Block>> {
    assert_eq!(manifest["outputOrganizedBy"], "Patient", "{manifest}");
    let mut files = Vec::new();
    for item in manifest["output"].as_array().unwrap() {
        assert!(item.get("type").is_none(), "no type on an item: {item}");
        assert!(
            item.get("continuesInFile").is_none(),
            "no block spans files"
        );
        let url = item["url"].as_str().unwrap();
        let got = http_get(url).await;
        assert_eq!(got.status, 200, "{url}");
        assert_eq!(
            got.headers.get("content-type").map(String::as_str),
            Some("application/fhir+ndjson")
        );
        let text = String::from_utf8(got.body).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, item["count"].as_u64().unwrap(), "{url}");
        let mut blocks: Vec<Block> = Vec::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["resourceType"] == "Parameters" {
                assert_eq!(v["parameter"].as_array().unwrap().len(), 1, "{line}");
                assert_eq!(v["parameter"][0]["name"], "header", "{line}");
                let reference = v["parameter"][0]["valueReference"]["reference"]
                    .as_str()
                    .unwrap();
                let patient = reference.strip_prefix("Patient/").expect(reference);
                blocks.push(Block {
                    patient: patient.to_string(),
                    lines: Vec::new(),
                });
            } else {
                let block = blocks.last_mut().expect("a file starts with a header");
                block.lines.push(line.to_string());
            }
        }
        files.push(blocks);
    }
    files
}

/// The Patient id a reference names (`Patient/x`, absolute, versioned), if any.
fn patient_of(reference: &str) -> Option<String> {
    let unversioned = match reference.split_once("/_history/") {
        Some((r, _)) => r,
        None => reference,
    };
    let (head, id) = unversioned.rsplit_once('/')?;
    (head == "Patient" || head.ends_with("/Patient")).then(|| id.to_string())
}

/// The blocks expected of the stored rows: for each stored Patient in `patients` (all
/// when `None`), the Patient's line, then for each other type in order its lines that
/// reference the Patient through `subject` or `performer`.
async fn expected(
    env: &Env,
    types: &[&str],
    patients: Option<&[&str]>,
) -> BTreeMap<String, Vec<BTreeSet<String>>> {
    let mut blocks: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    for line in api_harness::dump_lines(env, "Patient").await {
        let v: Value = serde_json::from_str(&line).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        if patients.is_some_and(|p| !p.contains(&id.as_str())) {
            continue;
        }
        let mut sets = vec![BTreeSet::new(); types.len()];
        if types[0] == "Patient" {
            sets[0].insert(line);
        }
        blocks.insert(id, sets);
    }
    for (n, ty) in types.iter().enumerate().filter(|(_, t)| **t != "Patient") {
        for line in api_harness::dump_lines(env, ty).await {
            let v: Value = serde_json::from_str(&line).unwrap();
            let mut refs = vec![v["subject"]["reference"].clone()];
            refs.extend(
                v["performer"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["reference"].clone()),
            );
            let owners: BTreeSet<String> = refs
                .iter()
                .filter_map(|r| r.as_str().and_then(patient_of))
                .collect();
            for owner in owners {
                if let Some(sets) = blocks.get_mut(&owner) {
                    sets[n].insert(line.clone());
                }
            }
        }
    }
    blocks
}

/// Checks the files' blocks against `want`: each Patient's block once, in one file, its
/// lines those expected and in type order (the Patient first).
fn check_blocks(
    files: &[Vec<Block>],
    types: &[&str],
    want: &BTreeMap<String, Vec<BTreeSet<String>>>,
) {
    let mut seen = BTreeSet::new();
    for block in files.iter().flatten() {
        assert!(
            seen.insert(block.patient.clone()),
            "{} twice",
            block.patient
        );
        let sets = want
            .get(&block.patient)
            .unwrap_or_else(|| panic!("a block for {}, not expected", block.patient));
        let mut got = vec![BTreeSet::new(); types.len()];
        let mut last_type = 0;
        for line in &block.lines {
            let v: Value = serde_json::from_str(line).unwrap();
            let n = types
                .iter()
                .position(|t| v["resourceType"] == *t)
                .unwrap_or_else(|| panic!("a type not asked for: {line}"));
            assert!(n >= last_type, "type order in {}: {line}", block.patient);
            last_type = n;
            assert!(got[n].insert(line.clone()), "twice in a block: {line}");
        }
        assert_eq!(&got, sets, "block of {}", block.patient);
    }
    let want_blocks: BTreeSet<String> = want.keys().cloned().collect();
    assert_eq!(seen, want_blocks, "one block per Patient");
}

async fn upsert(env: &Env, ty: &str, id: &str, body: Value) {
    env.db
        .upsert(&ResourceType::parse(ty).unwrap(), id, &body)
        .await
        .unwrap();
}

#[tokio::test]
async fn files_hold_whole_patient_blocks_cut_only_between_blocks() {
    // Files close at 30 lines (at the next block); about 100 rows a task: two tasks.
    let env = setup_with(LoadOptions::default(), |e| {
        e.with("SIPHON_EXPORT_RANGE_ROWS", "100")
            .with("SIPHON_EXPORT_FILE_MAX_RESOURCES", "30")
    })
    .await;
    load(&env, "Patient", 30, 5).await;
    load(&env, "Observation", 90, 6).await;
    load(&env, "Condition", 40, 7).await;
    // In two compartments (subject and performer); versioned and absolute; a
    // Practitioner's; a Patient not stored; and a type in no compartment.
    upsert(
        &env,
        "Observation",
        "obs-90000001",
        json!({"status": "final", "code": {},
        "subject": {"reference": "Patient/pat-00000001"},
        "performer": [{"reference": "Patient/pat-00000002"}, {"reference": "Practitioner/pr-1"}]}),
    )
    .await;
    upsert(
        &env,
        "Observation",
        "obs-90000002",
        json!({"status": "final", "code": {},
        "subject": {"reference": "http://other.example/fhir/Patient/pat-00000003/_history/2"}}),
    )
    .await;
    upsert(
        &env,
        "Observation",
        "obs-90000003",
        json!({"status": "final", "code": {},
        "subject": {"reference": "Practitioner/pr-1"}}),
    )
    .await;
    upsert(
        &env,
        "Observation",
        "obs-90000004",
        json!({"status": "final", "code": {},
        "subject": {"reference": "Patient/pat-99999999"}}),
    )
    .await;
    upsert(
        &env,
        "Observation",
        "obs-90000005",
        json!({"status": "final", "code": {},
        "subject": {"reference": "Patient/pat-00000004"},
        "performer": [{"reference": "Patient/pat-00000004"}]}),
    )
    .await;
    upsert(&env, "Organization", "org-1", json!({"name": "x"})).await;

    let types = ["Patient", "Observation", "Condition"];
    let status = kick_off(
        &env,
        "/$export?organizeOutputBy=Patient&_type=Patient,Observation,Condition&allowPartialManifests=true",
    )
    .await;
    let done = complete(&env, &status).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let files = files_of(&done.body).await;
    let want = expected(&env, &types, None).await;
    assert_eq!(want.len(), 30);
    check_blocks(&files, &types, &want);
    // The versioned, absolute reference and both compartments of obs-90000001 count;
    // the Practitioner's and the unstored Patient's Observations are in no block.
    let lines: Vec<&String> = files.iter().flatten().flat_map(|b| &b.lines).collect();
    let has = |id: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("\"id\": \"{id}\"")))
            .count()
    };
    assert_eq!(
        (
            has("obs-90000001"),
            has("obs-90000002"),
            has("obs-90000003"),
            has("obs-90000004")
        ),
        (2, 1, 0, 0)
    );
    assert_eq!(has("org-1"), 0);
    // Cut between blocks: a file closes at the first block boundary after 30 lines.
    // (The last file of each of the two tasks may hold fewer.)
    let mut full = 0;
    for file in &files {
        let before_last: usize = file[..file.len() - 1]
            .iter()
            .map(|b| b.lines.len() + 1)
            .sum();
        let all = before_last + file.last().unwrap().lines.len() + 1;
        assert!(
            before_last < 30,
            "a block opened after 30 lines: {before_last}"
        );
        full += usize::from(all >= 30);
    }
    assert!(
        files.len() >= 4 && full >= files.len() - 2,
        "{} files, {full} full",
        files.len()
    );
}

#[tokio::test]
async fn group_exports_block_only_members_and_unsupported_organizations_are_refused() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 10, 5).await;
    load(&env, "Observation", 40, 6).await;
    upsert(
        &env,
        "Group",
        "g1",
        json!({"type": "person", "actual": true, "member": [
        {"entity": {"reference": "Patient/pat-00000000"}},
        {"entity": {"reference": "Patient/pat-00000003"}},
        {"entity": {"reference": "Patient/pat-00000004"}, "inactive": true}]}),
    )
    .await;

    let status = kick_off(
        &env,
        "/Group/g1/$export?organizeOutputBy=Patient&_type=Patient,Observation",
    )
    .await;
    let done = complete(&env, &status).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let types = ["Patient", "Observation"];
    let want = expected(&env, &types, Some(&["pat-00000000", "pat-00000003"])).await;
    assert_eq!(want.len(), 2);
    check_blocks(&files_of(&done.body).await, &types, &want);

    // _type without Patient: blocks still open with their header, without the Patient.
    let status = kick_off(
        &env,
        "/Patient/$export?organizeOutputBy=Patient&_type=Observation",
    )
    .await;
    let done = complete(&env, &status).await;
    let files = files_of(&done.body).await;
    let mut want = expected(&env, &["Patient", "Observation"], None).await;
    for sets in want.values_mut() {
        sets[0].clear();
    }
    check_blocks(&files, &["Patient", "Observation"], &want);

    // Another type to organize by, or Parquet: 400 naming it; lenient: ignored, said.
    for (path, why) in [
        (
            "/$export?organizeOutputBy=Encounter",
            "organizeOutputBy \"Encounter\" is not supported",
        ),
        (
            "/$export?organizeOutputBy=Patient&_outputFormat=parquet",
            "organizeOutputBy=Patient writes ndjson resource blocks, not Parquet",
        ),
    ] {
        let a = request(&env, "GET", path, FHIR, None, &admin()).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.body["resourceType"], "OperationOutcome");
        let d = a.body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(d.contains(why), "{d}");
    }
    let lenient = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async, handling=lenient"),
    ];
    let a = request(
        &env,
        "GET",
        "/$export?organizeOutputBy=Encounter&_type=Patient",
        &lenient,
        None,
        &admin(),
    )
    .await;
    let done = complete(&env, &status_path(&a)).await;
    assert!(
        done.body.get("outputOrganizedBy").is_none(),
        "{}",
        done.body
    );
    assert_eq!(done.body["output"][0]["type"], "Patient");
    assert!(
        done.body["error"].to_string().contains("organizeOutputBy"),
        "{}",
        done.body
    );
}

#[tokio::test]
async fn a_block_task_handing_over_mid_block_resumes_without_a_repeated_header() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 5_000, 5).await;
    load(&env, "Observation", 20_000, 6).await; // ~15 MB in blocks: several 5 MiB parts
    let status = kick_off(&env, "/$export?organizeOutputBy=Patient").await;
    // The deadline is 30 s away, the task's margin is 30 s: every invocation hands over
    // after its first committed part, wherever in a block that falls.
    let options = TaskOptions {
        part_bytes: 5 << 20,
        ..TaskOptions::default()
    };
    let worker = siphon::workers::ExportWorker::new(
        env.db.clone(),
        env.export_queue.clone(),
        env.exporter.sink.clone(),
        options,
        5,
    );
    let mut invocations = 0;
    let start = Instant::now();
    while siphon_local::poll_export_queue(
        &worker,
        env.export_queue.client(),
        env.export_queue.url(),
        1,
        Duration::from_secs(30),
    )
    .await
        > 0
    {
        invocations += 1;
        assert!(start.elapsed() < Duration::from_secs(180));
    }
    assert!(invocations >= 3, "{invocations} invocations");
    let done = complete(&env, &status).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let types = ["Patient", "Observation"];
    let files = files_of(&done.body).await;
    assert_eq!(files.len(), 1, "one file, written over several invocations");
    check_blocks(&files, &types, &expected(&env, &types, None).await);
}

#[tokio::test]
async fn the_patient_parameter_and_type_filters_narrow_the_blocks() {
    let env = setup(LoadOptions::default()).await;
    load(&env, "Patient", 10, 5).await;
    load(&env, "Observation", 60, 6).await;
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "organizeOutputBy", "valueString": "Patient"},
        {"name": "patient", "valueReference": {"reference": "Patient/pat-00000002"}},
        {"name": "patient", "valueReference": {"reference": "Patient/pat-00000005"}},
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "_typeFilter", "valueString": "Observation?code=http://loinc.org|8867-4"}]});
    let a = request(&env, "POST", "/Patient/$export", FHIR, Some(body), &admin()).await;
    let done = complete(&env, &status_path(&a)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let types = ["Patient", "Observation"];
    let mut want = expected(&env, &types, Some(&["pat-00000002", "pat-00000005"])).await;
    let mut kept = 0;
    for sets in want.values_mut() {
        sets[1].retain(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            v["code"]["coding"][0]["code"] == "8867-4"
        });
        kept += sets[1].len();
    }
    assert!(
        kept > 0,
        "the filter keeps some of the two Patients' Observations"
    );
    check_blocks(&files_of(&done.body).await, &types, &want);
}
