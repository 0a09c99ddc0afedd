//! The leases port's conformance suite (`siphon::lease::conformance`) against the
//! Postgres adapters, on a real database: LoaderFiles (lease in the resource) and export
//! tasks (lease in columns) keep the rules the memory adapter keeps in its unit test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;
use siphon::error::Result;
use siphon::lease::conformance::{self, Fixture};
use siphon::model::export::{ExportKind, TaskCheckpoint, TaskStatus};
use siphon::model::loader_file::{Checkpoint, FileProgress};
use siphon::model::{FileStatus, LoaderFile, ObjectLocation};
use siphon::storage::batch::Opened;
use siphon::storage::exports::{NewTask, TaskCommit};
use siphon::storage::leases::{FileLeases, TaskLeases};
use siphon::storage::Db;
use siphon::ResourceType;
use siphon_tests::fresh_db;

/// LoaderFiles: created pending; moved on and ended through a batch, as the loader
/// commits.
struct Files {
    db: Db,
    next: AtomicU32,
}

impl Files {
    async fn batch(
        &self,
        id: &str,
        owner: &str,
        progress: FileProgress,
        end: bool,
        lease: Duration,
    ) -> Result<bool> {
        let mut client = self.db.client().await?;
        let Opened::Ready(batch) = Db::begin_batch(&mut client, id, owner, None).await? else {
            panic!("a file outside any session is never halted");
        };
        let ours = batch
            .advance(id, owner, &progress, end, lease.as_secs_f64())
            .await?;
        if ours {
            batch.commit().await?;
        }
        Ok(ours)
    }
}

impl Fixture for Files {
    fn add(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let location = ObjectLocation::new("leases", format!("{n}/Patient.ndjson"));
            let file = LoaderFile::pending(&location, None, None, Default::default());
            let (file, created) = self.db.create_loader_file(&file).await?;
            assert!(created);
            Ok(file.id)
        })
    }

    fn advance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let line = self.db.loader_file(id).await?.unwrap().checkpoint.line;
            let progress = FileProgress {
                checkpoint: Some(Checkpoint {
                    line: line + 10,
                    bytes: (line + 10) * 100,
                    plain: true,
                }),
                loaded: Some(line + 10),
                ..FileProgress::default()
            };
            self.batch(id, owner, progress, false, lease).await
        })
    }

    fn finish<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let done = FileProgress::ended(FileStatus::Done, None);
            self.batch(id, owner, done, true, Duration::ZERO).await
        })
    }
}

/// Export tasks: an export of one task per piece of work; moved on by a checkpoint
/// commit, ended as `done`.
struct Tasks {
    db: Db,
}

fn export_of(task: &str) -> &str {
    task.split('/').next().unwrap()
}

impl Fixture for Tasks {
    fn add(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let id = uuid::Uuid::new_v4().to_string();
            let tasks = NewTask::ranges(&ResourceType::parse("Patient").unwrap(), &[]);
            let request = json!({"types": ["Patient"]});
            self.db
                .create_export(&id, ExportKind::Fhir, "leases", &request, &tasks, &[])
                .await?;
            Ok(format!("{id}/0"))
        })
    }

    fn advance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let checkpoint = TaskCheckpoint {
                after: Some(uuid::Uuid::new_v4().to_string()),
                ..TaskCheckpoint::default()
            };
            let commit = self
                .db
                .commit_export_task(
                    id,
                    export_of(id),
                    owner,
                    &checkpoint,
                    10,
                    lease.as_secs_f64(),
                )
                .await?;
            Ok(commit == TaskCommit::Committed)
        })
    }

    fn finish<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.db
                .end_export_task(
                    id,
                    owner,
                    TaskStatus::Done,
                    &TaskCheckpoint::default(),
                    10,
                    None,
                )
                .await
        })
    }
}

#[tokio::test]
async fn loader_file_leases_in_postgres_keep_the_rules_of_the_port() {
    let db = fresh_db().await;
    let files = Files {
        db: db.clone(),
        next: AtomicU32::new(0),
    };
    conformance::run(&FileLeases::files(db), &files).await;
}

#[tokio::test]
async fn export_task_leases_in_postgres_keep_the_rules_of_the_port() {
    let db = fresh_db().await;
    let tasks = Tasks { db: db.clone() };
    conformance::run(&TaskLeases::tasks(db), &tasks).await;
}
