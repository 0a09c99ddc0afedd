//! The loader against real Postgres and LocalStack S3: counts, row content, every kind
//! of bad input, strict mode, upserts, racing and crashing loaders, resuming.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use siphon::loading::{LoadOptions, Loader, Outcome};
use siphon::model::loader_file::{FileOptions, FileStatus, LoaderFile};
use siphon::sources::memory::MemorySource;
use siphon::sources::s3::S3Source;
use siphon::sources::{Location, ObjectLocation, OpenedObject, Source, SourceError};
use siphon::storage::Db;
use siphon_tests::{connect, corpus, fresh_bucket, fresh_db, gen, put, s3};

/// A file in LocalStack S3 with its pending LoaderFile, and a loader for it.
struct Case {
    db: Db,
    loader: Loader,
    file: LoaderFile,
}

async fn s3_case(key: &str, bytes: Vec<u8>, options: FileOptions, load: LoadOptions) -> Case {
    let s3 = s3().await;
    let bucket = fresh_bucket(&s3).await;
    put(&s3, &bucket, key, bytes).await;
    let db = fresh_db().await;
    let (file, created) = db
        .create_loader_file(&LoaderFile::pending(
            &ObjectLocation::new(&bucket, key),
            None,
            None,
            options,
        ))
        .await
        .unwrap();
    assert!(created);
    Case {
        loader: Loader::new(db.clone(), Arc::new(S3Source::new(s3)), load),
        db,
        file,
    }
}

async fn memory_case(source: MemorySource, key: &str, bytes: Vec<u8>, load: LoadOptions) -> Case {
    let loc = ObjectLocation::new("mem", key);
    source.put(loc.clone(), bytes);
    let db = fresh_db().await;
    let (file, _) = db
        .create_loader_file(&LoaderFile::pending(
            &loc,
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    Case {
        loader: Loader::new(db.clone(), Arc::new(source), load),
        db,
        file,
    }
}

impl Case {
    async fn run(&self) -> Outcome {
        self.loader.load(&self.file.id, None).await.unwrap()
    }
    async fn file(&self) -> LoaderFile {
        self.db.loader_file(&self.file.id).await.unwrap().unwrap()
    }
    async fn count(&self, table: &str) -> i64 {
        connect(&self.db)
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

fn small_batches(rows: usize) -> LoadOptions {
    LoadOptions {
        batch_rows: rows,
        ..Default::default()
    }
}

#[tokio::test]
async fn clean_load_from_s3_stores_every_line_exactly() {
    let lines = gen::ndjson("Observation", 3000, 3);
    let case = s3_case(
        "exports/Observation-001.ndjson.gz",
        gen::gzip(&lines),
        FileOptions::default(),
        small_batches(1000),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 3000,
            failed: 0
        }
    );
    let f = case.file().await;
    assert_eq!(f.status, FileStatus::Done);
    assert_eq!((f.loaded, f.failed), (3000, 0));
    assert_eq!(f.resource_type.as_deref(), Some("Observation"));
    assert!(f.size.unwrap() > 0 && f.etag.is_some() && f.start.is_some() && f.end.is_some());
    assert!(f.lease.is_none() && f.error.is_none());
    assert_eq!(f.checkpoint.line, 3000);
    // Every stored resource equals its line as Postgres reads it, and rows are 'created'.
    let c = connect(&case.db).await;
    let text = String::from_utf8(lines).unwrap();
    let ids: Vec<&str> = text.lines().collect();
    let mismatches: i64 = c
        .query_one(
            "SELECT count(*) FROM unnest($1::text[]) AS l(line)
             LEFT JOIN observation o ON o.id = (l.line::jsonb)->>'id'
             WHERE o.resource IS DISTINCT FROM l.line::jsonb OR o.status <> 'created'
                OR o.resource_type <> 'Observation'",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mismatches, 0);
    assert_eq!(case.count("observation").await, 3000);
    // One txid per committed batch, from the shared sequence.
    let txids: i64 = c
        .query_one("SELECT count(DISTINCT txid) FROM observation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(txids, 3);
}

#[tokio::test]
async fn invalid_lines_are_recorded_and_the_rest_loads() {
    let case = s3_case(
        "Patient.ndjson.gz",
        corpus::mixed_patients(),
        FileOptions::default(),
        LoadOptions::default(),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 5,
            failed: 3
        }
    );
    let f = case.file().await;
    assert_eq!((f.status, f.loaded, f.failed), (FileStatus::Done, 5, 3));
    let errors = case.db.loader_file_errors(&f.id, 100, 0).await.unwrap();
    let summary: Vec<(u64, bool)> = errors
        .iter()
        .map(|e| (e.line, !e.reason.is_empty()))
        .collect();
    assert_eq!(summary, [(2, true), (4, true), (7, true)]);
    assert!(
        errors[0].reason.starts_with("invalid JSON"),
        "{}",
        errors[0].reason
    );
    assert!(
        errors[1].reason.contains("does not match the file's type"),
        "{}",
        errors[1].reason
    );
    assert_eq!(errors[2].reason, "missing id");
    assert_eq!(
        errors[1].excerpt,
        r#"{"resourceType":"Observation","id":"wrong-type"}"#
    );
    let c = connect(&case.db).await;
    let ids: Vec<String> = c
        .query("SELECT id FROM patient ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["ok-1", "ok-2", "ok-3", "ok-4", "ok-5"]);
    let text: String = c
        .query_one(
            "SELECT resource->>'text' FROM patient WHERE id = 'ok-4'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(text, "tab\there, quote \" backslash \\ unicode é 😀");
}

#[tokio::test]
async fn escaping_traps_round_trip_and_postgres_refusals_fail_alone() {
    let mut lines: Vec<String> = corpus::escaping_traps()
        .into_iter()
        .map(String::from)
        .collect();
    // Lines only Postgres can refuse: a \u0000 escape and a number beyond numeric's range.
    lines.push(r#"{"resourceType":"Patient","id":"nul","x":"a\u0000b"}"#.into());
    lines.push(format!(
        r#"{{"resourceType":"Patient","id":"huge","x":1e{}}}"#,
        200_000
    ));
    lines.push(r#"{"resourceType":"Patient","id":"after","x":1}"#.into());
    let body = gen::gzip(lines.join("\n").as_bytes());
    let case = s3_case(
        "Patient.ndjson.gz",
        body,
        FileOptions::default(),
        LoadOptions::default(),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 6,
            failed: 2
        }
    );
    let errors = case
        .db
        .loader_file_errors(&case.file.id, 10, 0)
        .await
        .unwrap();
    assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [6, 7]);
    assert!(errors[0].reason.contains("\\u0000"), "{}", errors[0].reason);
    assert!(
        errors[1].reason.starts_with("Postgres refused the line"),
        "{}",
        errors[1].reason
    );
    let c = connect(&case.db).await;
    for line in corpus::escaping_traps() {
        let same: bool = c
            .query_one(
                "SELECT resource = $1::text::jsonb FROM patient WHERE id = ($1::text::jsonb)->>'id'",
                &[&line],
            )
            .await
            .unwrap()
            .get(0);
        assert!(same, "stored differently: {line}");
    }
    // Big numbers are kept exactly (no float rounding).
    let big: String = c
        .query_one(
            "SELECT resource->>'big' FROM patient WHERE id = 'esc-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(big, "123456789012345678901234567890");
}

#[tokio::test]
async fn strict_mode_loads_nothing_from_a_file_with_an_invalid_line() {
    let strict = FileOptions {
        strict: true,
        ..Default::default()
    };
    let case = s3_case(
        "Patient.ndjson.gz",
        corpus::mixed_patients(),
        strict,
        LoadOptions::default(),
    )
    .await;
    match case.run().await {
        Outcome::Failed { message } => assert!(
            message.contains("strict mode: 3 invalid line(s)"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let f = case.file().await;
    assert_eq!((f.status, f.loaded, f.failed), (FileStatus::Error, 0, 3));
    assert_eq!(
        case.db
            .loader_file_errors(&f.id, 10, 0)
            .await
            .unwrap()
            .len(),
        3
    );
    let c = connect(&case.db).await;
    let exists: bool = c
        .query_one("SELECT to_regclass('public.patient') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    if exists {
        assert_eq!(case.count("patient").await, 0);
    }
    // A clean file in strict mode loads.
    let clean = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 50, 1)),
        strict,
        LoadOptions::default(),
    )
    .await;
    assert_eq!(
        clean.run().await,
        Outcome::Done {
            loaded: 50,
            failed: 0
        }
    );
}

#[tokio::test]
async fn multi_member_and_plain_files_load() {
    let case = s3_case(
        "Patient.ndjson.gz",
        corpus::multi_member(1000, 7),
        FileOptions::default(),
        small_batches(300),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 1000,
            failed: 0
        }
    );
    assert_eq!(case.count("patient").await, 1000);
    // Not gzipped at all (detected by content, not by name).
    let plain = s3_case(
        "Condition.ndjson",
        gen::ndjson("Condition", 120, 2),
        FileOptions::default(),
        LoadOptions::default(),
    )
    .await;
    assert_eq!(
        plain.run().await,
        Outcome::Done {
            loaded: 120,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_file_whose_name_names_no_type_takes_each_lines_type() {
    let mut body = gen::ndjson("Patient", 10, 1);
    body.extend(gen::ndjson("Encounter", 7, 1));
    body.extend(b"{\"resourceType\":\"pg_catalog\",\"id\":\"x\"}\n");
    let case = s3_case(
        "exports/data.ndjson.gz",
        gen::gzip(&body),
        FileOptions::default(),
        LoadOptions::default(),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 17,
            failed: 1
        }
    );
    assert_eq!(case.file().await.resource_type, None);
    assert_eq!(case.count("patient").await, 10);
    assert_eq!(case.count("encounter").await, 7);
}

#[tokio::test]
async fn upsert_overwrites_and_upsert_false_reports_conflicts() {
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 100, 1)),
        FileOptions::default(),
        small_batches(40),
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 100,
            failed: 0
        }
    );
    // A second file with 50 of the same ids (new content) and 50 new ones.
    let mut second = Vec::new();
    for n in 50..150 {
        let mut r = gen::resource("Patient", n, 99);
        r["active"] = Value::Bool(false);
        second.extend(serde_json::to_vec(&r).unwrap());
        second.push(b'\n');
    }
    let loc = ObjectLocation::new(&case.file.bucket, "Patient-2.ndjson.gz");
    put(&s3().await, &loc.bucket, &loc.key, gen::gzip(&second)).await;
    let (f2, _) = case
        .db
        .create_loader_file(&LoaderFile::pending(
            &loc,
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    assert_eq!(
        case.loader.load(&f2.id, None).await.unwrap(),
        Outcome::Done {
            loaded: 100,
            failed: 0
        }
    );
    let c = connect(&case.db).await;
    let by_status: Vec<(String, i64)> = c
        .query(
            "SELECT status, count(*) FROM patient GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        by_status,
        [("created".to_string(), 100), ("updated".to_string(), 50)]
    );
    let inactive: i64 = c
        .query_one(
            "SELECT count(*) FROM patient WHERE resource->>'active' = 'false'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        inactive >= 100,
        "the second file's content won for ids 50..150"
    );
    // upsert? false: the 100 existing ids are line errors, nothing is overwritten.
    let loc3 = ObjectLocation::new(&case.file.bucket, "Patient-3.ndjson.gz");
    let mut third = gen::ndjson("Patient", 100, 5);
    third.extend(b"{\"resourceType\":\"Patient\",\"id\":\"brand-new\"}\n");
    put(&s3().await, &loc3.bucket, &loc3.key, gen::gzip(&third)).await;
    let no_upsert = FileOptions {
        upsert: false,
        ..Default::default()
    };
    let (f3, _) = case
        .db
        .create_loader_file(&LoaderFile::pending(&loc3, None, None, no_upsert))
        .await
        .unwrap();
    assert_eq!(
        case.loader.load(&f3.id, None).await.unwrap(),
        Outcome::Done {
            loaded: 1,
            failed: 100
        }
    );
    let errors = case.db.loader_file_errors(&f3.id, 1000, 0).await.unwrap();
    assert_eq!(errors.len(), 100);
    assert!(
        errors[0].reason.contains("already exists"),
        "{}",
        errors[0].reason
    );
    let seed5_content: i64 = c
        .query_one(
            "SELECT count(*) FROM patient WHERE resource = $1::text::jsonb",
            &[&serde_json::to_string(&gen::resource("Patient", 0, 5)).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seed5_content, 0, "nothing was overwritten");
}

#[tokio::test]
async fn duplicate_concurrent_loaders_load_once() {
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 5000, 1)),
        FileOptions::default(),
        small_batches(500),
    )
    .await;
    let (a, b) = tokio::join!(
        case.loader.load(&case.file.id, None),
        case.loader.load(&case.file.id, None)
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Outcome::Done { .. }));
    assert!(
        matches!(
            outcomes[0],
            Outcome::Busy { .. }
                | Outcome::NotLoadable {
                    status: FileStatus::Done
                }
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        Outcome::Done {
            loaded: 5000,
            failed: 0
        }
    );
    // The same message delivered again later: nothing to do.
    assert_eq!(
        case.run().await,
        Outcome::NotLoadable {
            status: FileStatus::Done
        }
    );
    let f = case.file().await;
    assert_eq!((f.loaded, f.failed), (5000, 0));
    let c = connect(&case.db).await;
    let row: (i64, i64) = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status = 'created') FROM patient",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(row, (5000, 5000), "each row written once");
}

#[tokio::test]
async fn a_deadline_hands_over_and_the_next_call_resumes_without_recounting() {
    let load = LoadOptions {
        batch_rows: 100,
        deadline_margin: Duration::ZERO,
        ..Default::default()
    };
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 20_000, 1)),
        FileOptions::default(),
        load,
    )
    .await;
    let mut calls = 0;
    let mut lines = Vec::new();
    let outcome = loop {
        calls += 1;
        assert!(calls < 500, "no progress");
        match case
            .loader
            .load(
                &case.file.id,
                Some(Instant::now() + Duration::from_millis(150)),
            )
            .await
            .unwrap()
        {
            Outcome::Continue { line } => {
                let f = case.file().await;
                assert_eq!(f.status, FileStatus::InProgress);
                assert_eq!(f.checkpoint.line, line);
                assert_eq!(f.loaded, line, "counts match the checkpoint");
                lines.push(line);
            }
            other => break other,
        }
    };
    assert_eq!(
        outcome,
        Outcome::Done {
            loaded: 20_000,
            failed: 0
        }
    );
    assert!(
        calls >= 2,
        "the deadline must have interrupted at least once ({calls} calls)"
    );
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "checkpoints only move forward: {lines:?}"
    );
    let c = connect(&case.db).await;
    let created: i64 = c
        .query_one("SELECT count(*) FROM patient WHERE status = 'created'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 20_000, "no line written twice");
    assert_eq!(case.file().await.loaded, 20_000);
}

#[tokio::test]
async fn a_crash_before_commit_resumes_from_the_checkpoint_after_the_lease_expires() {
    let crashing = LoadOptions {
        batch_rows: 300,
        lease: Duration::from_secs(2),
        crash_before_commit: Some(3),
        retries: 0,
        ..Default::default()
    };
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 3000, 1)),
        FileOptions::default(),
        crashing,
    )
    .await;
    let err = case.loader.load(&case.file.id, None).await.unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    let f = case.file().await;
    assert_eq!(
        (f.status, f.checkpoint.line, f.loaded),
        (FileStatus::InProgress, 900, 900)
    );
    assert_eq!(
        case.count("patient").await,
        900,
        "the crashed batch left nothing"
    );
    // While the lease lives, a redelivered message finds the file busy.
    let healthy = Loader::new(
        case.db.clone(),
        Arc::new(S3Source::new(s3().await)),
        small_batches(300),
    );
    assert!(matches!(
        healthy.load(&case.file.id, None).await.unwrap(),
        Outcome::Busy { .. }
    ));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        healthy.load(&case.file.id, None).await.unwrap(),
        Outcome::Done {
            loaded: 3000,
            failed: 0
        }
    );
    let c = connect(&case.db).await;
    let created: i64 = c
        .query_one("SELECT count(*) FROM patient WHERE status = 'created'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 3000);
}

/// S3 as it is, recording each ranged open: the offset asked and the one answered.
struct RecordingRanges {
    inner: S3Source,
    seen: std::sync::Mutex<Vec<(u64, u64)>>,
}
impl Source for RecordingRanges {
    fn open<'a>(
        &'a self,
        l: &'a Location,
        if_match: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<OpenedObject, SourceError>> {
        self.open_from(l, if_match, None, 0)
    }
    fn open_from<'a>(
        &'a self,
        l: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a siphon::sources::Credential>,
        from: u64,
    ) -> futures::future::BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            let opened = self.inner.open_from(l, if_match, credential, from).await?;
            self.seen.lock().unwrap().push((from, opened.offset));
            Ok(opened)
        })
    }
}

#[tokio::test]
async fn a_plain_file_resumes_from_its_checkpoint_with_a_ranged_read() {
    let crashing = LoadOptions {
        batch_rows: 300,
        lease: Duration::from_secs(2),
        crash_before_commit: Some(3),
        retries: 0,
        ..Default::default()
    };
    let text = gen::ndjson("Patient", 3000, 1);
    let case = s3_case(
        "Patient.ndjson",
        text.clone(),
        FileOptions::default(),
        crashing,
    )
    .await;
    let err = case.loader.load(&case.file.id, None).await.unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    // The checkpoint: 900 lines, the bytes up to the end of the 900th, a plain file.
    let end_of_900: usize = text
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(899)
        .unwrap()
        .0
        + 1;
    let f = case.file().await;
    assert_eq!(
        (f.checkpoint.line, f.checkpoint.bytes, f.checkpoint.plain),
        (900, end_of_900 as u64, true)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let source = Arc::new(RecordingRanges {
        inner: S3Source::new(s3().await),
        seen: Default::default(),
    });
    let healthy = Loader::new(case.db.clone(), source.clone(), small_batches(300));
    assert_eq!(
        healthy.load(&case.file.id, None).await.unwrap(),
        Outcome::Done {
            loaded: 3000,
            failed: 0
        }
    );
    // LocalStack's S3 answered the range: the committed 900 lines were not read again.
    assert_eq!(
        *source.seen.lock().unwrap(),
        vec![(end_of_900 as u64, end_of_900 as u64)]
    );
    let f = case.file().await;
    assert_eq!((f.loaded, f.checkpoint.line), (3000, 3000));
    assert_eq!(f.size, Some(text.len() as u64), "the whole object's size");
    let c = connect(&case.db).await;
    let rows: (i64, i64) = c
        .query_one("SELECT count(*), count(DISTINCT id) FROM patient", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(rows, (3000, 3000));
}

#[tokio::test]
async fn postgres_connection_dropped_mid_load_is_retried_to_exact_counts() {
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 30_000, 1)),
        FileOptions::default(),
        small_batches(200),
    )
    .await;
    let db = case.db.clone();
    let id = case.file.id.clone();
    let killer = tokio::spawn(async move {
        let admin = connect(&db).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let f = db.loader_file(&id).await.unwrap().unwrap();
            if f.loaded > 2000 {
                let killed: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND application_name = 'siphon' AND query ILIKE '%COPY%') k",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if killed > 0 {
                    return f.loaded;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        0
    });
    let outcome = case.run().await;
    let killed_at = killer.await.unwrap();
    assert!(killed_at > 0, "the connection was killed mid-load");
    assert_eq!(
        outcome,
        Outcome::Done {
            loaded: 30_000,
            failed: 0
        }
    );
    assert_eq!(case.count("patient").await, 30_000);
}

#[tokio::test]
async fn truncated_gzip_fails_with_the_line_and_keeps_committed_rows() {
    let case = s3_case(
        "Patient.ndjson.gz",
        corpus::truncated(2000, 60),
        FileOptions::default(),
        small_batches(100),
    )
    .await;
    let message = match case.run().await {
        Outcome::Failed { message } => message,
        other => panic!("{other:?}"),
    };
    assert!(
        message.starts_with("gzip stream truncated after line "),
        "{message}"
    );
    let f = case.file().await;
    assert_eq!(f.status, FileStatus::Error);
    assert_eq!(f.error.as_deref(), Some(message.as_str()));
    let rows = case.count("patient").await;
    assert!(rows > 500 && rows < 2000, "{rows}");
    assert_eq!(f.loaded as i64, rows, "committed rows stay and are counted");
    let after: i64 = message.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(after >= rows, "{after} vs {rows}");
}

#[tokio::test]
async fn corrupt_gzip_fails_with_a_clear_message() {
    let case = s3_case(
        "Patient.ndjson.gz",
        corpus::corrupt(2000),
        FileOptions::default(),
        LoadOptions::default(),
    )
    .await;
    match case.run().await {
        Outcome::Failed { message } => assert!(
            message.starts_with("gzip data corrupt after line"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(case.file().await.status, FileStatus::Error);
}

#[tokio::test]
async fn a_missing_object_ends_in_error() {
    let s3 = s3().await;
    let bucket = fresh_bucket(&s3).await;
    let db = fresh_db().await;
    let (file, _) = db
        .create_loader_file(&LoaderFile::pending(
            &ObjectLocation::new(&bucket, "gone/Patient.ndjson.gz"),
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    let loader = Loader::new(
        db.clone(),
        Arc::new(S3Source::new(s3)),
        LoadOptions::default(),
    );
    match loader.load(&file.id, None).await.unwrap() {
        Outcome::Failed { message } => assert!(message.contains("does not exist"), "{message}"),
        other => panic!("{other:?}"),
    }
    let f = db.loader_file(&file.id).await.unwrap().unwrap();
    assert_eq!(f.status, FileStatus::Error);
    assert!(f
        .error
        .unwrap()
        .contains(&format!("s3://{bucket}/gone/Patient.ndjson.gz")));
}

/// LocalStack accepts any credentials, so "access denied" cannot happen there: this
/// source stands in for S3 refusing the read (the mapping from S3's error codes is
/// `sources::s3::classify`).
struct DenyingSource;
impl Source for DenyingSource {
    fn open<'a>(
        &'a self,
        l: &'a Location,
        _: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(async move {
            Err(SourceError::AccessDenied(format!(
                "object {l}: access denied (AccessDenied)"
            )))
        })
    }
}

#[tokio::test]
async fn access_denied_ends_in_error() {
    let db = fresh_db().await;
    let (file, _) = db
        .create_loader_file(&LoaderFile::pending(
            &ObjectLocation::new("b", "Patient.ndjson.gz"),
            None,
            None,
            FileOptions::default(),
        ))
        .await
        .unwrap();
    let loader = Loader::new(db.clone(), Arc::new(DenyingSource), LoadOptions::default());
    assert!(matches!(
        loader.load(&file.id, None).await.unwrap(),
        Outcome::Failed { .. }
    ));
    let f = db.loader_file(&file.id).await.unwrap().unwrap();
    assert_eq!(
        f.error.as_deref(),
        Some("object s3://b/Patient.ndjson.gz: access denied (AccessDenied)")
    );
}

#[tokio::test]
async fn an_overlong_line_is_a_line_error_not_an_out_of_memory() {
    let mut body = gen::ndjson("Patient", 3, 1);
    body.extend(
        format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"big\",\"x\":\"{}\"}}\n",
            "y".repeat(50_000)
        )
        .as_bytes(),
    );
    body.extend(
        gen::ndjson("Patient", 6, 2)
            .split(|&b| b == b'\n')
            .nth(5)
            .unwrap(),
    );
    let load = LoadOptions {
        max_line_bytes: 10_000,
        ..Default::default()
    };
    let case = memory_case(
        MemorySource::new().chunked(777),
        "Patient.ndjson.gz",
        gen::gzip(&body),
        load,
    )
    .await;
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 4,
            failed: 1
        }
    );
    let errors = case
        .db
        .loader_file_errors(&case.file.id, 10, 0)
        .await
        .unwrap();
    assert_eq!(errors[0].line, 4);
    assert_eq!(
        errors[0].reason,
        "line is longer than the limit of 10000 bytes"
    );
}

#[tokio::test]
async fn a_source_failing_mid_stream_is_transient_and_resumes_later() {
    let body = gen::gzip(&gen::ndjson("Patient", 4000, 1));
    let cut = body.len() / 2;
    let flaky = MemorySource::new().chunked(4096).failing_after(cut);
    let load = LoadOptions {
        batch_rows: 200,
        retries: 1,
        lease: Duration::from_millis(500),
        ..Default::default()
    };
    let case = memory_case(flaky, "Patient.ndjson.gz", body.clone(), load).await;
    let err = case.loader.load(&case.file.id, None).await.unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let f = case.file().await;
    assert_eq!(f.status, FileStatus::InProgress);
    assert!(f.loaded > 0 && f.loaded == f.checkpoint.line, "{f:?}");
    // The network heals; once the lease has expired, a new call finishes the file.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let healthy = MemorySource::new();
    healthy.put(f.location(), body);
    let loader = Loader::new(case.db.clone(), Arc::new(healthy), small_batches(200));
    assert_eq!(
        loader.load(&f.id, None).await.unwrap(),
        Outcome::Done {
            loaded: 4000,
            failed: 0
        }
    );
    assert_eq!(case.count("patient").await, 4000);
}

#[tokio::test]
async fn progress_is_visible_while_a_file_loads() {
    let case = s3_case(
        "Patient.ndjson.gz",
        gen::gzip(&gen::ndjson("Patient", 20_000, 1)),
        FileOptions::default(),
        small_batches(500),
    )
    .await;
    let db = case.db.clone();
    let id = case.file.id.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2000 {
            let f = db.loader_file(&id).await.unwrap().unwrap();
            seen.push(f.loaded);
            if f.status == FileStatus::Done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    });
    assert_eq!(
        case.run().await,
        Outcome::Done {
            loaded: 20_000,
            failed: 0
        }
    );
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().any(|&n| n > 0 && n < 20_000),
        "an intermediate count was visible: {seen:?}"
    );
}
