//! The sweep's port: what it needs of the store for work whose worker died (the
//! stalled loader files and export tasks, and what it records on them), with the
//! Postgres adapter the functions use and a memory adapter for the unit tests of
//! the recovery.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::model::export::ExportTask;
use crate::model::loader_file::StoreRef;
use crate::model::{LoaderFile, Stuck};
use crate::queue::{MessageQueue, StoreSpec};
use crate::storage::Db;

/// How a stalled export task can be delivered anew when its own message is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskDelivery {
    /// A new message naming this store (its endpoint and region; never credentials).
    Store(StoreSpec),
    /// Only its own message can carry it: the request gave credentials, which never
    /// rest in the database.
    OwnMessageOnly,
}

impl TaskDelivery {
    /// How a task of a job whose bucket is `store` is delivered anew.
    pub fn of(store: &StoreRef) -> Self {
        if store.credentials {
            TaskDelivery::OwnMessageOnly
        } else {
            TaskDelivery::Store(StoreSpec::from(store))
        }
    }
}

/// Where a job's bucket is, as every kind of job stores it in its request (`store`;
/// absent: the function's own).
#[derive(Default, serde::Deserialize)]
struct JobStore {
    #[serde(default)]
    store: StoreRef,
}

/// What the sweep reads and writes about stalled work.
pub trait StalledWork: Send + Sync {
    /// In-progress files whose lease ran out more than `grace` ago and that the sweep
    /// has not acted on within `again` (unless a worker claimed them since), oldest
    /// first, at most `limit`.
    fn stalled_files(
        &self,
        grace: Duration,
        again: Duration,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<LoaderFile>>>;

    /// Records what the sweep did for a stalled file (only while it is still stalled).
    fn note_file_recovery<'a>(
        &'a self,
        id: &'a str,
        how: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Ends a stalled file in `error` saying `why`, then does what follows a file's end
    /// (its session settles, its load's tables are rebuilt). `false` when a worker
    /// claimed it meanwhile.
    fn give_up_file<'a>(
        &'a self,
        id: &'a str,
        why: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Running export tasks whose lease ran out (as [`StalledWork::stalled_files`]).
    fn stalled_tasks(
        &self,
        grace: Duration,
        again: Duration,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<ExportTask>>>;

    /// How stuck a stalled task is as the sweep acts on it now.
    fn task_stuck<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Stuck>>;

    /// Records what the sweep did for a stalled task.
    fn note_task_recovery<'a>(
        &'a self,
        id: &'a str,
        how: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<()>>;

    /// Ends a stalled task in `error` saying `why`, and its export when it was the last
    /// open task. `false` when a worker claimed it meanwhile.
    fn give_up_task<'a>(&'a self, id: &'a str, why: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// How the export's tasks are delivered anew.
    fn task_delivery<'a>(&'a self, export_id: &'a str) -> BoxFuture<'a, Result<TaskDelivery>>;
}

/// The Postgres adapter: the LoaderFile and export task tables, and the load queue a
/// given-up file's session may need (a session that settles queues its next files).
pub struct PgStalled {
    pub db: Db,
    pub load_queue: Arc<dyn MessageQueue>,
}

impl StalledWork for PgStalled {
    fn stalled_files(
        &self,
        grace: Duration,
        again: Duration,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<LoaderFile>>> {
        Box::pin(
            self.db
                .stalled_loader_files(grace.as_secs_f64(), again.as_secs_f64(), limit),
        )
    }

    fn note_file_recovery<'a>(
        &'a self,
        id: &'a str,
        how: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.db.note_recovery(id, how, stuck))
    }

    fn give_up_file<'a>(
        &'a self,
        id: &'a str,
        why: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            if !self.db.abandon_loader_file(id, why, stuck).await? {
                return Ok(false);
            }
            crate::sessions::ended::file_ended(
                &self.db,
                &*self.load_queue,
                id,
                &StoreSpec::default(),
            )
            .await?;
            Ok(true)
        })
    }

    fn stalled_tasks(
        &self,
        grace: Duration,
        again: Duration,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<ExportTask>>> {
        Box::pin(
            self.db
                .stalled_export_tasks(grace.as_secs_f64(), again.as_secs_f64(), limit),
        )
    }

    fn task_stuck<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Stuck>> {
        Box::pin(self.db.export_task_stuck(id))
    }

    fn note_task_recovery<'a>(
        &'a self,
        id: &'a str,
        how: &'a str,
        stuck: &'a Stuck,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.db.note_export_task_recovery(id, how, stuck))
    }

    fn give_up_task<'a>(&'a self, id: &'a str, why: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(crate::exporting::task::give_up(&self.db, id, why))
    }

    fn task_delivery<'a>(&'a self, export_id: &'a str) -> BoxFuture<'a, Result<TaskDelivery>> {
        Box::pin(async move {
            let Some(export) = self.db.export(export_id).await? else {
                return Ok(TaskDelivery::Store(StoreSpec::default()));
            };
            let job: JobStore = serde_json::from_value(export.request)
                .map_err(|e| Error::Internal(format!("unreadable export {export_id}: {e}")))?;
            Ok(TaskDelivery::of(&job.store))
        })
    }
}

#[cfg(test)]
pub use memory::{MemoryStalled, MemoryTask};

#[cfg(test)]
mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::error::Error;
    use crate::model::loader_file::{FileStatus, Recovery};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// One export task as the memory adapter keeps it.
    #[derive(Clone, Debug)]
    pub struct MemoryTask {
        pub task: ExportTask,
        pub stuck: Stuck,
        pub delivery: TaskDelivery,
        /// When the sweep last acted on it, and how; how many times.
        pub recovered: Option<(DateTime<Utc>, String)>,
        pub recoveries: u32,
    }

    /// Stalled work in memory, with the same selection rules as the Postgres adapter's
    /// queries: lease run out past the grace, not acted on within `again` unless claimed
    /// since; notes and ends only while still stalled.
    #[derive(Default)]
    pub struct MemoryStalled {
        pub files: Mutex<BTreeMap<String, LoaderFile>>,
        pub tasks: Mutex<BTreeMap<String, MemoryTask>>,
        /// Ids whose every write fails (a damaged row, the store away for it).
        pub failing: Mutex<Vec<String>>,
    }

    impl MemoryStalled {
        fn check(&self, id: &str) -> Result<()> {
            if self.failing.lock().unwrap().iter().any(|f| f == id) {
                return Err(Error::Unavailable(format!("{id}: the store is away")));
            }
            Ok(())
        }

        fn file_stalled(f: &LoaderFile, grace: Duration) -> bool {
            let cut = Utc::now() - grace;
            f.status == FileStatus::InProgress
                && f.lease.as_ref().is_some_and(|l| at(&l.until) < cut)
        }
    }

    impl StalledWork for MemoryStalled {
        fn stalled_files(
            &self,
            grace: Duration,
            again: Duration,
            limit: i64,
        ) -> BoxFuture<'_, Result<Vec<LoaderFile>>> {
            let files = self.files.lock().unwrap();
            let again = Utc::now() - again;
            let mut out: Vec<LoaderFile> = files
                .values()
                .filter(|f| Self::file_stalled(f, grace))
                .filter(|f| match &f.recovery {
                    None => true,
                    Some(r) => {
                        at(&r.at) < again
                            || f.lease
                                .as_ref()
                                .and_then(|l| l.since.as_deref())
                                .is_some_and(|s| at(s) > at(&r.at))
                    }
                })
                .cloned()
                .collect();
            out.sort_by(|a, b| {
                let until = |f: &LoaderFile| f.lease.as_ref().map(|l| at(&l.until));
                until(a).cmp(&until(b))
            });
            out.truncate(limit.max(0) as usize);
            Box::pin(async move { Ok(out) })
        }

        fn note_file_recovery<'a>(
            &'a self,
            id: &'a str,
            how: &'a str,
            stuck: &'a Stuck,
        ) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async move {
                self.check(id)?;
                let mut files = self.files.lock().unwrap();
                let Some(f) = files
                    .get_mut(id)
                    .filter(|f| Self::file_stalled(f, Duration::ZERO))
                else {
                    return Ok(false);
                };
                let count = f.recovery.as_ref().map_or(0, |r| r.count) + 1;
                f.recovery = Some(Recovery {
                    at: Utc::now().to_rfc3339(),
                    count,
                    how: how.to_string(),
                    barren: stuck.barren,
                    stuck_since: stuck.since.clone(),
                });
                Ok(true)
            })
        }

        fn give_up_file<'a>(
            &'a self,
            id: &'a str,
            why: &'a str,
            stuck: &'a Stuck,
        ) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async move {
                if !self.note_file_recovery(id, "gave up", stuck).await? {
                    return Ok(false);
                }
                let mut files = self.files.lock().unwrap();
                let f = files.get_mut(id).expect("noted above");
                f.status = FileStatus::Error;
                f.error = Some(why.to_string());
                f.lease = None;
                Ok(true)
            })
        }

        fn stalled_tasks(
            &self,
            grace: Duration,
            again: Duration,
            limit: i64,
        ) -> BoxFuture<'_, Result<Vec<ExportTask>>> {
            let (cut, again) = (Utc::now() - grace, Utc::now() - again);
            let tasks = self.tasks.lock().unwrap();
            let mut out: Vec<ExportTask> = tasks
                .values()
                .filter(|t| t.task.status == crate::model::export::TaskStatus::Running)
                .filter(|t| t.task.lease_until.as_deref().is_some_and(|u| at(u) < cut))
                .filter(|t| t.recovered.as_ref().is_none_or(|(at, _)| *at < again))
                .map(|t| t.task.clone())
                .collect();
            out.truncate(limit.max(0) as usize);
            Box::pin(async move { Ok(out) })
        }

        fn task_stuck<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Stuck>> {
            Box::pin(async move {
                self.check(id)?;
                let tasks = self.tasks.lock().unwrap();
                Ok(tasks.get(id).map(|t| t.stuck.clone()).unwrap_or_default())
            })
        }

        fn note_task_recovery<'a>(
            &'a self,
            id: &'a str,
            how: &'a str,
            _stuck: &'a Stuck,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if let Some(t) = self.tasks.lock().unwrap().get_mut(id) {
                    t.recovered = Some((Utc::now(), how.to_string()));
                    t.recoveries += 1;
                }
                Ok(())
            })
        }

        fn give_up_task<'a>(&'a self, id: &'a str, why: &'a str) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async move {
                let mut tasks = self.tasks.lock().unwrap();
                let Some(t) = tasks.get_mut(id) else {
                    return Ok(false);
                };
                t.task.status = crate::model::export::TaskStatus::Error;
                t.task.error = Some(why.to_string());
                t.task.lease_until = None;
                Ok(true)
            })
        }

        fn task_delivery<'a>(&'a self, export_id: &'a str) -> BoxFuture<'a, Result<TaskDelivery>> {
            Box::pin(async move {
                let tasks = self.tasks.lock().unwrap();
                Ok(tasks
                    .values()
                    .find(|t| t.task.export_id == export_id)
                    .map_or(TaskDelivery::Store(StoreSpec::default()), |t| {
                        t.delivery.clone()
                    }))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(request: serde_json::Value) -> TaskDelivery {
        let job: JobStore = serde_json::from_value(request).unwrap();
        TaskDelivery::of(&job.store)
    }

    #[test]
    fn a_task_is_delivered_anew_to_its_jobs_bucket_and_never_with_credentials() {
        let elsewhere = serde_json::json!({"bucket": "b", "prefix": "p/",
            "store": {"endpoint_url": "http://127.0.0.1:4566", "region": "eu-west-1"}});
        assert_eq!(
            delivery(elsewhere),
            TaskDelivery::Store(StoreSpec {
                endpoint_url: Some("http://127.0.0.1:4566".into()),
                region: Some("eu-west-1".into()),
                ..Default::default()
            })
        );
        let with_credentials = serde_json::json!({"store": {"credentials": true}});
        assert_eq!(delivery(with_credentials), TaskDelivery::OwnMessageOnly);
        let own_bucket = serde_json::json!({"session": "s", "manifest": "m"});
        assert_eq!(
            delivery(own_bucket),
            TaskDelivery::Store(StoreSpec::default())
        );
    }
}
