//! Property-based fuzzing (proptest, stable Rust) of the parsers that read user bytes:
//! the ndjson decoder (gzip members cut anywhere, resuming), request bodies (JSON and
//! YAML), load-from-bucket and dump-to-bucket params, `$import` / `$load` bodies, the
//! `$export` kick-off, the `$dump-sql` gate, the dump-to-bucket key layout and the S3
//! Inventory readers (manifest, CSV and Parquet data files). (The URL
//! guard's targets live beside it, in `sources/http/guard.rs`, since they need its
//! crate-private resolver hook; the line validator's are at the end of this file.)
//!
//! Each target asserts no panic and an invariant a user relies on. `make test` runs
//! proptest's default 256 cases per target; `make fuzz` runs a million
//! (`PROPTEST_CASES`). Every test here is named `fuzz_*`. A failure found once is kept as
//! a plain regression test under "Found by fuzzing" below.

use std::io::Write;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use siphon::dumping::check_query;
use siphon::exporting::bucket::DumpToBucket;
use siphon::exporting::layout::{self, KeyParts};
use siphon::exporting::request::{self as export_request, KickOff, Level};
use siphon::ingestion::bucket::LoadFromBucket;
use siphon::loading::decode::{decode, Batch, DecodeConfig, DecodeError};
use siphon::loading::validate::validate_line;
use siphon::sessions::request::{parse_import, parse_load, ImportConfig, InputUrl, MAX_INPUTS};
use siphon::web::{parse_body, HeaderMap};
use siphon::ResourceType;

// ------------------------------------------------------------------ the ndjson decoder

/// One line of a generated file.
#[derive(Clone, Debug)]
enum Line {
    /// A valid Patient with this id (and some content).
    Valid { id: String, family: String },
    /// A line that is not JSON.
    Junk(String),
    /// A valid resource of another type: an error in a Patient file.
    WrongType(String),
    /// Whitespace only: skipped, not an error.
    Blank(String),
}

fn fhir_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.-]{1,64}"
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => (fhir_id(), any::<String>()).prop_map(|(id, family)| Line::Valid { id, family }),
        1 => "[^\n]{0,40}".prop_map(|s| Line::Junk(format!("#{s}"))),
        1 => fhir_id().prop_map(Line::WrongType),
        1 => "[ \t]{0,3}".prop_map(Line::Blank),
    ]
}

impl Line {
    fn text(&self) -> String {
        match self {
            Line::Valid { id, family } => json!({"resourceType": "Patient", "id": id,
                                                 "name": [{"family": family}]})
            .to_string(),
            Line::Junk(s) | Line::Blank(s) => s.clone(),
            Line::WrongType(id) => json!({"resourceType": "Observation", "id": id}).to_string(),
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `bytes` as gzip members cut at `cuts` (any byte offsets, mid-line included).
fn gzip_members(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in at.into_iter().chain([bytes.len()]) {
        out.extend(gzip(&bytes[start..cut]));
        start = cut;
    }
    out
}

fn decoder_config(batch_rows: usize, skip_lines: u64) -> DecodeConfig {
    DecodeConfig {
        file_type: Some(ResourceType::parse("Patient").unwrap()),
        skip_lines,
        start: None,
        max_line_bytes: 1 << 20,
        batch_rows,
        batch_bytes: 1 << 20,
        validate_only: false,
        // Off: the line rules only (a JSON object, resourceType, id).
        validation: Default::default(),
        writes: None,
        max_expansion: 100,
        max_file_bytes: u64::MAX,
    }
}

/// Every message the decoder sends for `bytes`.
fn run(bytes: Vec<u8>, config: DecodeConfig) -> Vec<Result<Batch, (Batch, DecodeError)>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let worker = std::thread::spawn(move || decode(&bytes[..], &config, &tx));
    let mut out = Vec::new();
    while let Some(m) = rx.blocking_recv() {
        out.push(m);
    }
    worker.join().expect("the decoder does not panic");
    out
}

fn batch(m: &Result<Batch, (Batch, DecodeError)>) -> &Batch {
    match m {
        Ok(b) | Err((b, _)) => b,
    }
}

proptest! {
    /// A generated file, plain or gzip with members cut anywhere, CRLF or LF, a BOM or
    /// not, resumed after any number of committed lines: exactly the valid lines after
    /// the checkpoint load, each with its bytes unchanged (the COPY row ends with the
    /// line), in order; exactly the bad lines are errors, with their line numbers; the
    /// last batch accounts for every byte and line; checkpoints never go back.
    #[test]
    fn fuzz_decoded_lines_round_trip(
        lines in prop::collection::vec(line(), 0..40),
        crlf in any::<bool>(),
        bom in any::<bool>(),
        trailing_newline in any::<bool>(),
        compressed in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        batch_rows in 1usize..6,
        skip in any::<prop::sample::Index>(),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let texts: Vec<String> = lines.iter().map(Line::text).collect();
        let mut text = texts.join(eol);
        if trailing_newline && !texts.is_empty() {
            text.push_str(eol);
        }
        if bom {
            text.insert(0, '\u{feff}');
        }
        let line_count = if text.is_empty() { 0 } else { text.split('\n').count() as u64
            - u64::from(text.ends_with('\n')) };
        let skip_lines = skip.index(lines.len() + 1) as u64;
        let bytes = if compressed { gzip_members(text.as_bytes(), &cuts) } else { text.clone().into_bytes() };
        let out = run(bytes, decoder_config(batch_rows, skip_lines));

        let (last, rest) = out.split_last().expect("at least one message");
        prop_assert!(rest.iter().all(|m| m.as_ref().is_ok_and(|b| !b.eof)));
        let last = last.as_ref().map_err(|(_, e)| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(last.eof);
        prop_assert_eq!(last.bytes, text.len() as u64);
        prop_assert_eq!(last.last_line, line_count.max(skip_lines));
        let checkpoints: Vec<u64> = out.iter().map(|m| batch(m).last_line).collect();
        prop_assert!(checkpoints.windows(2).all(|w| w[0] <= w[1]), "{:?}", checkpoints);

        let after_skip = |n: &usize| (*n as u64) + 1 > skip_lines;
        let want_ids: Vec<&str> = lines.iter().enumerate()
            .filter(|(n, _)| after_skip(n))
            .filter_map(|(_, l)| match l { Line::Valid { id, .. } => Some(id.as_str()), _ => None })
            .collect();
        let want_errors: Vec<u64> = lines.iter().enumerate()
            .filter(|(n, l)| after_skip(n) && matches!(l, Line::Junk(_) | Line::WrongType(_)))
            .map(|(n, _)| n as u64 + 1)
            .collect();
        let mut got_ids = Vec::new();
        for m in &out {
            for chunk in &batch(m).chunks {
                for row in &chunk.rows {
                    let n = row.line as usize - 1;
                    // The COPY row carries the line's bytes as they were (jsonb version
                    // byte, then the text), without the BOM or the CR.
                    let encoded = &chunk.buf[row.start..row.end];
                    prop_assert!(encoded.ends_with(texts[n].as_bytes()), "line {} changed", row.line);
                    got_ids.push(row.id.clone());
                }
            }
        }
        prop_assert_eq!(got_ids, want_ids);
        let got_errors: Vec<u64> = out.iter().flat_map(|m| batch(m).errors.iter().map(|e| e.line)).collect();
        prop_assert_eq!(got_errors, want_errors);
    }

    /// Any bytes at all (gzip magic or not): no panic, one final message, and it is last.
    #[test]
    fn fuzz_decoder_takes_any_bytes(
        mut bytes in prop::collection::vec(any::<u8>(), 0..2048),
        magic in any::<bool>(),
        batch_rows in 1usize..4,
        max_line_bytes in 1usize..64,
    ) {
        if magic {
            bytes.splice(0..0, [0x1f, 0x8b]);
        }
        let mut config = decoder_config(batch_rows, 0);
        config.max_line_bytes = max_line_bytes;
        let out = run(bytes, config);
        let (last, rest) = out.split_last().expect("at least one message");
        prop_assert!(rest.iter().all(|m| m.as_ref().is_ok_and(|b| !b.eof)));
        prop_assert!(last.as_ref().map_or(true, |b| b.eof));
    }

    /// A gzip file cut short anywhere after its magic bytes is an error, never a shorter
    /// complete file. (Cut to its first byte it is no longer gzip: one invalid line.)
    #[test]
    fn fuzz_truncated_gzip_is_an_error(
        lines in prop::collection::vec(line(), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = lines.iter().map(Line::text).collect::<Vec<_>>().join("\n");
        let whole = gzip(text.as_bytes());
        let keep = 2 + cut.index(whole.len() - 2);
        let out = run(whole[..keep].to_vec(), decoder_config(3, 0));
        let is_gzip_error = matches!(out.last(), Some(Err((_, DecodeError::Permanent(_)))));
        prop_assert!(is_gzip_error, "{} of {} bytes: {:?}", keep, whole.len(),
            out.last().map(|m| m.as_ref().map(|b| b.eof).map_err(|(_, e)| e.clone())));
    }
}

// ------------------------------------------------------------------ request bodies

fn headers(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", content_type.parse().unwrap());
    h
}

/// JSON values of bounded size: what request bodies are made of.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
        "[a-z?-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z?-]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any bytes as JSON or YAML: an answer (a value or a 400), never a panic.
    #[test]
    fn fuzz_bodies_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), yaml in any::<bool>()) {
        let h = headers(if yaml { "text/yaml" } else { "application/json" });
        match parse_body(&h, &bytes) {
            Ok(_) => prop_assert!(!bytes.iter().all(u8::is_ascii_whitespace)),
            Err(e) => prop_assert!(matches!(e, siphon::Error::BadRequest(_))),
        }
    }

    /// A value sent as JSON or as YAML arrives as that value.
    #[test]
    fn fuzz_bodies_round_trip_in_json_and_yaml(v in json_value()) {
        let json_text = v.to_string();
        prop_assert_eq!(parse_body(&headers("application/json"), json_text.as_bytes()).unwrap(), v.clone());
        let yaml_text = serde_norway::to_string(&v).unwrap();
        if !yaml_text.trim().is_empty() {
            prop_assert_eq!(parse_body(&headers("text/yaml"), yaml_text.as_bytes()).unwrap(), v);
        }
    }

    /// Deep nesting (an attacker's `[[[[...`): a 400, not a stack overflow that kills
    /// the function.
    #[test]
    fn fuzz_deeply_nested_bodies_are_refused_not_fatal(depth in 100usize..4_000, yaml in any::<bool>(), map in any::<bool>()) {
        let (open, close) = if map { ("{\"a\":", "}") } else { ("[", "]") };
        let body = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let h = headers(if yaml { "text/yaml" } else { "application/json" });
        let _ = parse_body(&h, body.as_bytes());
    }
}

// ------------------------------------------------------------------ RPC params

/// load-from-bucket / dump-to-bucket params: their keys with plausible or hostile
/// values, plus unknown keys.
fn rpc_params(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        json_value(),
        "s3://[a-z0-9./-]{0,20}".prop_map(Value::String),
        "[a-z*?/{},.\\[\\]!-]{0,20}".prop_map(Value::String),
        prop::collection::vec("[a-z/.-]{0,8}".prop_map(Value::String), 0..4).prop_map(Value::Array),
        (0u32..10).prop_map(|n| json!(n)),
    ];
    prop::collection::btree_map(
        prop_oneof![5 => prop::sample::select(keys).prop_map(str::to_string), 1 => "[a-z-]{1,8}"],
        value,
        0..8,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

const LOAD_KEYS: &[&str] = &[
    "bucket",
    "thread-num",
    "account",
    "endpoint-url",
    "prefixes",
    "glob",
    "upsert?",
    "strict",
    "disable-idx?",
    "drop-primary-key?",
    "dry-run",
    "inventory",
];
const DUMP_KEYS: &[&str] = &[
    "bucket",
    "types",
    "query",
    "format",
    "gzip",
    "layout",
    "table",
    "endpoint-url",
    "account",
    "_since",
];

/// What `bucket_and_prefix` must give: a bucket name, never empty and without `/`.
fn check_bucket(name: &str) -> Result<(), TestCaseError> {
    prop_assert!(!name.is_empty() && !name.contains('/'), "bucket {name:?}");
    Ok(())
}

proptest! {
    /// Any params: a typed request or a 400, and what the call reads from it never panics.
    #[test]
    fn fuzz_load_from_bucket_params(params in rpc_params(LOAD_KEYS)) {
        if let Ok(p) = serde_json::from_value::<LoadFromBucket>(params) {
            if let Ok((name, prefix)) = p.bucket_and_prefix() {
                check_bucket(&name)?;
                for key_prefix in p.key_prefixes().unwrap() {
                    prop_assert!(key_prefix.starts_with(&prefix));
                }
            }
            let _ = p.matcher();
            if let Ok(o) = p.file_options() {
                prop_assert!(!o.drop_primary_key || o.upsert);
            }
            if let Ok(n) = p.threads() {
                prop_assert!(n >= 1);
            }
        }
    }

    /// dump-to-bucket params: the bucket splits into a name and a prefix that is empty
    /// or a folder (`a/b/`), never an absolute one.
    #[test]
    fn fuzz_dump_to_bucket_params(params in rpc_params(DUMP_KEYS)) {
        if let Ok(p) = serde_json::from_value::<DumpToBucket>(params) {
            if let Ok((name, prefix)) = p.bucket_and_prefix() {
                check_bucket(&name)?;
                prop_assert!(prefix.is_empty() || (prefix.ends_with('/') && !prefix.starts_with('/')),
                    "prefix {:?}", prefix);
            }
            if let Some(l) = &p.layout {
                let _ = layout::check(l);
            }
        }
    }
}

// ------------------------------------------------------------------ $import and $load

fn import_body() -> impl Strategy<Value = Value> {
    let url = prop_oneof![
        "s3://[a-z0-9./-]{0,24}",
        "https://[a-z0-9.]{1,12}/[a-zA-Z0-9./%-]{0,16}",
        "/?[a-zA-Z0-9./\\\\-]{0,24}",
        any::<String>(),
    ];
    let input = (
        prop::option::of("[A-Za-z]{0,12}"),
        prop::option::of(url),
        prop::option::of(prop::sample::select(vec![
            "url",
            "resource-file",
            "file",
            "",
        ])),
    )
        .prop_map(|(ty, url, kind)| {
            let mut o = serde_json::Map::new();
            if let Some(t) = ty {
                o.insert("type".into(), json!(t));
            }
            if let Some(u) = url {
                o.insert("url".into(), json!(u));
            }
            if let Some(k) = kind {
                o.insert("storageDetail".into(), json!({"type": k}));
            }
            Value::Object(o)
        });
    (
        prop::option::of("[A-Za-z0-9.-]{0,70}"),
        prop::option::of(prop::sample::select(vec![
            "start",
            "pause",
            "resume",
            "abort",
            "force-resume",
            "stop",
        ])),
        prop::option::of(any::<String>()),
        prop::option::of(prop::sample::select(vec![
            "application/fhir+ndjson",
            "text/csv",
        ])),
        prop::collection::vec(input, 0..5),
        json_value(),
    )
        .prop_map(|(id, action, secret, format, inputs, extra)| {
            let mut r = serde_json::Map::new();
            if let Some(v) = id {
                r.insert("id".into(), json!(v));
            }
            if let Some(v) = action {
                r.insert("action".into(), json!(v));
            }
            if let Some(v) = secret {
                r.insert("secret".into(), json!(v));
            }
            if let Some(v) = format {
                r.insert("inputFormat".into(), json!(v));
            }
            r.insert("inputs".into(), Value::Array(inputs));
            if matches!(extra, Value::Object(_)) {
                r.insert("inputSource".into(), extra);
            }
            json!({"resource": r})
        })
}

proptest! {
    /// `$import` bodies: a request or a 400. A parsed request never stores its secret,
    /// has 1..=1000 inputs when it starts, and a `resource-file` input always lands
    /// inside the import bucket and prefix.
    #[test]
    fn fuzz_import_bodies(body in prop_oneof![import_body(), json_value()]) {
        let config = ImportConfig { bucket: Some("imports".into()), prefix: "in/".into() };
        if let Ok(r) = parse_import(&body, &config) {
            prop_assert!(r.stored.get("secret").is_none());
            if r.action == siphon::sessions::Action::Start {
                prop_assert!((1..=MAX_INPUTS).contains(&r.inputs.len()));
            }
            for (n, input) in r.inputs.iter().enumerate() {
                let detail = &body["resource"]["inputs"][n]["storageDetail"]["type"];
                if let (InputUrl::S3(loc), Some("resource-file")) = (&input.url, detail.as_str()) {
                    prop_assert_eq!(&loc.bucket, "imports");
                    prop_assert!(loc.key.starts_with("in/"), "{}", loc.key);
                    prop_assert!(!loc.key.split('/').any(|s| s == ".." || s == "." || s.is_empty()),
                        "{}", loc.key);
                }
            }
        }
    }

    /// `$load` bodies: a request or a 400, never a panic.
    #[test]
    fn fuzz_load_bodies(body in prop_oneof![json_value(), rpc_params(&["source", "method", "validation", "temp_table"])]) {
        let _ = parse_load(&body);
    }
}

// ------------------------------------------------------------------ $export kick-off

fn kick_off_params() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "_outputFormat",
            "_since",
            "_type",
            "_typeFilter",
            "_elements",
            "patient",
            "includeAssociatedData",
            "_until"
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "application/fhir+ndjson",
            "Patient,Observation",
            "Patient.name",
            "2024-01-01T00:00:00Z",
            "2024-01-01",
            "9999-01-01",
            ""
        ])
        .prop_map(str::to_string),
        "[A-Za-z,.:+ -]{0,24}",
        any::<String>(),
    ];
    prop::collection::vec((name, value), 0..6)
}

proptest! {
    /// `$export` kick-offs (query, Parameters body, Accept, Prefer): a request or a 400.
    /// A parsed one never asks for changes from the future, names only FHIR types, once
    /// each, and ignores nothing unless the client asked for lenient handling.
    #[test]
    fn fuzz_export_kick_off(
        query in kick_off_params(),
        body in prop_oneof![
            Just(None),
            kick_off_params().prop_map(|ps| Some(json!({"resourceType": "Parameters", "parameter":
                ps.into_iter().map(|(n, v)| json!({"name": n, "valueString": v})).collect::<Vec<_>>()}).to_string().into_bytes())),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        ],
        accept in prop::option::of(prop::sample::select(vec!["application/fhir+json", "text/html", "*/*", ""])),
        lenient in any::<bool>(),
        group in prop::option::of("[A-Za-z0-9.-]{1,10}"),
    ) {
        let now = Utc::now();
        let prefer = if lenient { vec!["respond-async", "handling=lenient"] } else { vec!["respond-async"] };
        let k = KickOff {
            post: body.is_some(),
            level: group.map_or(Level::System, Level::Group),
            accept,
            prefer,
            query,
            body: body.as_deref(),
            now,
        };
        if let Ok(r) = export_request::parse(k) {
            prop_assert!(r.since.is_none_or(|s| s <= now));
            if let Some(types) = &r.types {
                for (i, t) in types.iter().enumerate() {
                    prop_assert!(siphon::fhir::is_resource_type(t.as_str()));
                    prop_assert!(!types[..i].contains(t));
                }
            }
            prop_assert!(r.lenient || r.ignored.is_empty());
        }
    }
}

// ------------------------------------------------------------------ the $dump-sql gate

/// The functions the gate refuses (`dumping::REFUSED`; `pg_sleep` is allowed, the
/// statement timeout bounds it).
const REFUSED_NAMES: &[&str] = &[
    "set_config",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "dblink",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "current_setting",
];

/// `name` written as Postgres would still read it: any ASCII case, quoted, schema-
/// qualified, or as a Unicode-escaped identifier (`U&"set\005fconfig"`).
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    (prop::collection::vec(any::<bool>(), name.len()), 0..4u8).prop_map(move |(upper, how)| {
        let cased: String = name
            .chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        match how {
            0 => cased,
            1 => format!("\"{name}\""),
            2 => format!("pg_catalog.{cased}"),
            _ => format!("U&\"{}\"", name.replace('_', "\\005f")),
        }
    })
}

proptest! {
    /// Any text: the gate answers (ok or 400/403) without panicking, and what it lets
    /// through starts with a read keyword.
    #[test]
    fn fuzz_dump_sql_gate_takes_any_text(q in prop_oneof![any::<String>(), "(?i)(select|with|values|table|insert|copy)[ (a-z0-9_,*;'\"&\\\\)]{0,40}"]) {
        if check_query(&q).is_ok() {
            let first = q.trim_start().to_ascii_lowercase();
            prop_assert!(["select", "with", "values", "table"].iter().any(|k| first.starts_with(k)), "{:?}", q);
        }
    }

    /// A refused function, however it is spelled, is refused.
    #[test]
    fn fuzz_dump_sql_gate_refuses_dangerous_functions_however_spelled(
        name in prop::sample::select(REFUSED_NAMES).prop_flat_map(spelled),
        before in "(?i)select [a-z0-9_, ]{0,12}",
        after in "[a-z0-9_ ,()'*]{0,12}",
    ) {
        let q = format!("{before} {name}('x') {after}");
        prop_assert!(check_query(&q).is_err(), "{:?} passed the gate", q);
    }
}

// ------------------------------------------------------------------ key layouts

/// Layouts built from what layouts are made of, hostile pieces included.
fn layout_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "{table_name}",
            "{load_id}",
            "{file_id}",
            "{ext}",
            "{YYYY}",
            "{MM}",
            "{DD}",
            "{curr_date}",
            "{timestamp}",
            "{Q}",
            "{dddd}",
            "{S}"
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "/", ".", "..", "{", "}", "\\", "\u{0}", "\n", "%2e", "_", "-"
        ])
        .prop_map(str::to_string),
        "[a-z0-9]{1,4}",
        "\\{[a-z_]{0,12}\\}",
    ];
    prop::collection::vec(piece, 1..12).prop_map(|p| p.concat())
}

fn parts_at(started: DateTime<Utc>) -> KeyParts<'static> {
    KeyParts {
        table: "patient",
        load_id: "1795473296.123456",
        file_id: "1_00001",
        ext: "ndjson.gz",
        started,
    }
}

proptest! {
    /// A layout that passes the check renders keys that stay inside the prefix: no
    /// leading `/`, no `.` or `..` segment, no backslash or control character, and no
    /// brace left over (every placeholder filled).
    #[test]
    fn fuzz_layouts_that_pass_never_leave_the_prefix(
        l in prop_oneof![layout_text(), any::<String>()],
        secs in 0i64..4_102_444_800,
        nanos in 0u32..1_000_000_000,
    ) {
        if layout::check(&l).is_ok() {
            let key = layout::render(&l, &parts_at(Utc.timestamp_opt(secs, nanos).unwrap()));
            prop_assert!(!key.starts_with('/'), "{:?} -> {:?}", l, key);
            prop_assert!(!key.split('/').any(|s| s == ".." || s == "."), "{:?} -> {:?}", l, key);
            prop_assert!(!key.chars().any(|c| c.is_control() || c == '\\'), "{:?} -> {:?}", l, key);
            prop_assert!(!key.contains('{') && !key.contains('}'), "{:?} -> {:?}", l, key);
        }
    }
}

// ------------------------------------------------------------------ the line validator

proptest! {
    /// Any bytes: a verdict, never a panic; a line called valid is a JSON object whose
    /// `resourceType` and `id` are the ones reported, the id a FHIR id.
    #[test]
    fn fuzz_validator_verdicts_match_the_line(
        line in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (fhir_id(), json_value()).prop_map(|(id, v)| json!({"resourceType": "Patient", "id": id, "x": v}).to_string().into_bytes()),
            "\\{\"resourceType\": ?\"[A-Za-z]{0,8}\", ?\"id\": ?\"[^\"]{0,70}\"\\}".prop_map(String::into_bytes),
        ],
        typed in any::<bool>(),
    ) {
        let patient = ResourceType::parse("Patient").unwrap();
        if let Ok(valid) = validate_line(&line, typed.then_some(&patient)) {
            let v: Value = serde_json::from_slice(&line).expect("a valid line is JSON");
            prop_assert_eq!(v["resourceType"].as_str(), Some(valid.resource_type.as_ref()));
            prop_assert_eq!(v["id"].as_str(), Some(valid.id.as_ref()));
            prop_assert!(siphon::model::ids::is_valid_id(&valid.id));
            if typed {
                prop_assert_eq!(valid.resource_type.as_ref(), "Patient");
            }
        }
    }

    /// A generated valid Patient is valid, whatever its content.
    #[test]
    fn fuzz_validator_accepts_valid_patients(id in fhir_id(), v in json_value()) {
        let line = json!({"resourceType": "Patient", "id": id, "extension": [{"valueString": v.to_string()}]}).to_string();
        let patient = ResourceType::parse("Patient").unwrap();
        let valid = validate_line(line.as_bytes(), Some(&patient)).unwrap();
        prop_assert_eq!(valid.id.as_ref(), id.as_str());
    }
}

// ------------------------------------------------------------------ S3 Inventory readers

use siphon::inventory::manifest::{decode_key, md5_hex, CsvColumns, FileFormat, Manifest};
use siphon::inventory::rows::{self as inventory_rows, InventoryRow};

/// The columns of a CSV inventory without versions: Bucket, Key, Size,
/// LastModifiedDate, ETag.
fn csv_columns() -> CsvColumns {
    CsvColumns {
        count: 5,
        key: 1,
        size: 2,
        modified: 3,
        etag: 4,
        latest: None,
        delete_marker: None,
    }
}

/// Reads `bytes` as an inventory data file of `format`; every row, or the error.
fn read_inventory(bytes: &[u8], format: FileFormat) -> siphon::Result<Vec<InventoryRow>> {
    let path = std::env::temp_dir().join(format!("siphon-fuzz-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, bytes).unwrap();
    let mut rows = Vec::new();
    let read = inventory_rows::read(&path, "data/x", format, &csv_columns(), 7, &mut |b| {
        rows.extend(b);
        Ok(())
    });
    std::fs::remove_file(&path).unwrap();
    read.map(|_| rows)
}

/// URL-encodes a key as S3 Inventory's CSV does (form encoding: a space is `+`).
fn url_encoded(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A small valid Parquet inventory file (the columns S3 writes, as it types them).
fn parquet_inventory(keys: &[String]) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use std::sync::Arc;
    let n = keys.len();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "bucket",
            Arc::new(StringArray::from(vec!["b"; n])) as ArrayRef,
        ),
        (
            "key",
            Arc::new(StringArray::from(keys.to_vec())) as ArrayRef,
        ),
        (
            "size",
            Arc::new(Int64Array::from(vec![10i64; n])) as ArrayRef,
        ),
        (
            "last_modified_date",
            Arc::new(TimestampMillisecondArray::from(vec![
                1_795_400_000_000i64;
                n
            ])) as ArrayRef,
        ),
        (
            "e_tag",
            Arc::new(StringArray::from(vec!["0123abcd"; n])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

proptest! {
    /// Any manifest bytes whose checksum matches: a manifest or a 400, never a panic;
    /// what parses answers its format and columns (or a 400) without panicking either.
    #[test]
    fn fuzz_inventory_manifests_take_any_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            (any::<String>(), any::<String>(), "(CSV|Parquet|ORC|csv|[a-z]{0,6})")
                .prop_map(|(schema, key, format)| json!({
                    "sourceBucket": "src", "destinationBucket": "arn:aws:s3:::inv",
                    "creationTimestamp": "1795400000000", "fileFormat": format,
                    "fileSchema": schema, "files": [{"key": key, "size": 1, "MD5checksum": "00"}]
                }).to_string().into_bytes()),
        ],
        wrong in any::<bool>(),
    ) {
        let checksum = if wrong { "0".repeat(32) } else { md5_hex(&bytes) };
        match Manifest::parse(&bytes, checksum.as_bytes(), "manifest.json") {
            Ok(m) => {
                prop_assert!(!wrong || md5_hex(&bytes) == checksum);
                let _ = m.format();
                let _ = m.csv_columns();
                let _ = m.column_names();
            }
            Err(e) => prop_assert!(matches!(e, siphon::Error::BadRequest(_)), "{e:?}"),
        }
    }

    /// Any bytes gzipped as a CSV data file: rows or a 400, never a panic.
    #[test]
    fn fuzz_inventory_csv_takes_any_rows(text in prop_oneof![
        any::<String>(),
        "([a-z\"+%,0-9\\-:TZ.\n]{0,20}){0,20}",
    ]) {
        match read_inventory(&gzip(text.as_bytes()), FileFormat::Csv) {
            Ok(_) => {}
            Err(e) => prop_assert!(matches!(e, siphon::Error::BadRequest(_)), "{e:?}"),
        }
    }

    /// Keys of any characters, URL-encoded as S3 writes them, read back exactly, with
    /// their size and quoted ETag; a non-gzip file is a 400.
    #[test]
    fn fuzz_inventory_csv_keys_round_trip(keys in prop::collection::vec("\\PC{1,24}", 1..20), raw in any::<bool>()) {
        let mut csv = String::new();
        for k in &keys {
            csv.push_str(&format!("\"b\",\"{}\",\"42\",\"2026-11-22T01:00:00.000Z\",\"abc123\"\n", url_encoded(k)));
        }
        if raw {
            let e = read_inventory(csv.as_bytes(), FileFormat::Csv).unwrap_err();
            prop_assert!(matches!(e, siphon::Error::BadRequest(_)), "{e:?}");
            return Ok(());
        }
        let rows = read_inventory(&gzip(csv.as_bytes()), FileFormat::Csv).unwrap();
        let got: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let want: Vec<&str> = keys.iter().map(String::as_str).collect();
        prop_assert_eq!(got, want);
        for r in &rows {
            prop_assert_eq!(r.size, Some(42));
            prop_assert_eq!(r.etag.as_deref(), Some("\"abc123\""));
            prop_assert!(r.current());
        }
        for k in &keys {
            prop_assert_eq!(decode_key(&url_encoded(k)).unwrap(), k.clone());
        }
    }

    /// A Parquet inventory with bytes flipped, cut or appended: its rows or a 400, never
    /// a panic (a panic would abort the worker: release builds abort on panic).
    #[test]
    fn fuzz_inventory_parquet_takes_damaged_files(
        keys in prop::collection::vec("[a-zA-Z0-9/._ -]{1,16}", 1..12),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = parquet_inventory(&keys);
        let whole = bytes.clone();
        for (at, b) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        bytes.extend_from_slice(&junk);
        match read_inventory(&bytes, FileFormat::Parquet) {
            Ok(rows) => {
                if bytes == whole {
                    let got: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
                    let want: Vec<&str> = keys.iter().map(String::as_str).collect();
                    prop_assert_eq!(got, want);
                }
            }
            Err(e) => prop_assert!(matches!(e, siphon::Error::BadRequest(_)), "{e:?}"),
        }
    }
}

// ------------------------------------------------------------------ found by fuzzing

/// `fuzz_dump_sql_gate_refuses_dangerous_functions_however_spelled` found that a refused
/// function written as a Unicode-escaped identifier passed the gate (Postgres reads
/// `U&"set\005fconfig"` as `set_config`). The role and the read-only transaction still
/// stood behind it; the gate now refuses `U&"` identifiers.
#[test]
fn fuzz_found_unicode_escaped_identifiers_pass_the_dump_sql_gate() {
    for q in [
        r#"seLECt  U&"set\005fconfig"('x') "#,
        r#"select U&"pg\005fread\005fbinary\005ffile"('x')"#,
        r#"select * from u&"pg\005fread\005ffile"('/etc/passwd')"#,
    ] {
        assert!(
            matches!(check_query(q), Err(siphon::Error::Forbidden(_))),
            "{q}"
        );
    }
    // Ordinary queries, U& string constants included, still pass.
    check_query("select id, resource->>'u&' from patient").unwrap();
}

/// `fuzz_layouts_that_pass_never_leave_the_prefix` found that a `}` between two
/// placeholders passed the layout check (only one before the first `{` or after the last
/// `}` was caught) and ended up in every key: `{table_name}}{load_id}` ->
/// `patient}1795473296.123456.ndjson`. The check now refuses it like any stray `}`.
#[test]
fn fuzz_found_a_stray_brace_between_placeholders_passes_the_layout_check() {
    for l in ["{table_name}}{table_name}", "{YYYY}/}/{MM}", "a}{ext}"] {
        let e = layout::check(l).unwrap_err();
        assert!(e.to_string().contains("without its {"), "{l}: {e}");
    }
    layout::check("{table_name}/{YYYY}-{MM}/{load_id}.{file_id}.{ext}").unwrap();
}

/// `fuzz_export_kick_off` (20,000 cases) found that `_since` with a multi-byte character
/// across its 20th byte panicked the kick-off (`raw[19..]` on a non-boundary): any
/// client could crash an API request with `GET /$export?_since=...`. It is now a 400.
#[test]
fn fuzz_found_a_multibyte_since_panicked_the_export_kick_off() {
    for since in [
        "\u{1cd0}0AA0A  T\u{10ec2}0\u{2ceb0}",
        "2024-01-01T00:00:0\u{e9}+01:00",
    ] {
        let e = export_request::parse_instant(since).unwrap_err();
        assert!(matches!(e, siphon::Error::BadRequest(_)), "{since:?}: {e}");
        let k = KickOff {
            post: false,
            level: Level::System,
            accept: Some("application/fhir+json"),
            prefer: vec!["respond-async"],
            query: vec![("_since".into(), since.into())],
            body: None,
            now: Utc::now(),
        };
        assert!(matches!(
            export_request::parse(k),
            Err(siphon::Error::BadRequest(_))
        ));
    }
}

// ------------------------------------------------------------------ _typeFilter

#[path = "type_filter/gen.rs"]
mod type_filter_gen;
#[path = "type_filter/quoted.rs"]
mod type_filter_quoted;

proptest! {
    /// Any `_typeFilter` string: parsing never panics, and what parses compiles to SQL
    /// whose user-supplied parts are all quoted literals (the Postgres side of this,
    /// running such SQL, is in `type_filter.rs`).
    #[test]
    fn fuzz_type_filter_parses_and_compiles_to_quoted_sql(value in type_filter_gen::type_filter()) {
        let now = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
        let (filters, refused) =
            siphon::exporting::type_filter::parse_type_filters_lenient(&[value.as_str()], now);
        prop_assert_eq!(filters.len() + refused.len(), 1);
        for e in &refused {
            prop_assert!(!e.to_string().is_empty());
        }
        for f in &filters {
            let columns = siphon::storage::filter::Columns::default();
            let sql = siphon::storage::filter::filter_condition(f, &columns).unwrap();
            if let Err(why) = type_filter_quoted::only_quoted_literals(&sql) {
                prop_assert!(false, "{}: {}\n{}", value, why, sql);
            }
        }
    }
}
