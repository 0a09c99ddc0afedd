//! The planning of a pull import, run by the export workers like an inventory import's
//! (a task claimed under a lease renewed by a heartbeat, checkpointed, re-delivered by
//! the sweep when its worker dies):
//!
//! 1. **kick off** the remote export; the status URL is the checkpoint.
//! 2. **poll** the status URL; while the remote answers 202 the task parks (its message
//!    re-queued with the `Retry-After` delay, clamped; its lease held until then, so the
//!    sweep steps in only when no worker picks it up); `X-Progress` is shown on the
//!    session. 429 and 5xx are waited out the same way, up to [`MAX_FAILURES`] in a row.
//! 3. **read the manifest**, page by page (`link` `next`): each output file becomes an
//!    input of the session (a LoaderFile whose id is fixed by its place, so a page
//!    read again after a crash finds its files there) and goes on the load queue; a
//!    checkpoint after each page.
//!
//! 4. **wait for the loads**: the task parks, waking every [`LOADED_POLL`], until the
//!    session has ended; then it tells the remote it is done with the files (`DELETE` on
//!    the status URL, which Bulk Data lets a server take as the signal to drop them).
//!
//! The session's state is obeyed at every step: paused, new files are created paused
//! (resume queues them); aborted, the planning stops and the remote export is cancelled
//! (`DELETE` on its status URL), whether files are still being listed or all are queued.
//! A token siphon fetched itself (`smart`) that the remote refuses with 401 is dropped
//! and a new one fetched, counted as a failed request.
//!
//! A planning that failed (the session in `error`) runs again on `force-resume`, from its
//! checkpoint: the next manifest page if pages were taken, else a new kick-off
//! (`sessions::restart_pull_planning`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::remote::{Failure, Manifest, Poll, Remote};
use crate::auth::remote::RemoteCredentials;
use crate::error::{Error, Result};
use crate::exporting::task::{self, claim, Served, TaskOptions, TaskOutcome};
use crate::model::export::TaskStatus;
use crate::model::pull::{PullCheckpoint, PullJob, PullProgress};
use crate::model::session::SessionRequest;
use crate::model::submission::{first_input, Submission, SubmittedManifest};
use crate::model::{FileOptions, FileStatus, LoaderFile, Location, SessionStatus};
use crate::queue::{LoadMessage, MessageQueue};
use crate::sessions::input_file_id;
use crate::sources::http::HttpSource;
use crate::storage::exports::TaskCommit;
use crate::storage::{imports, submissions, Db};

/// 429, 5xx or network failures in a row after which a pull gives up.
pub const MAX_FAILURES: u32 = 8;

/// How often a pull whose files are all queued looks whether its session has ended.
pub const LOADED_POLL: Duration = Duration::from_secs(10);

/// How often a replacing manifest looks whether the rows of the one it replaces are gone.
pub const WITHDRAW_POLL: Duration = Duration::from_secs(2);

/// How a run of a pull task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PullOutcome {
    /// As an export task's run.
    Task(TaskOutcome),
    /// The remote is still working (or asked to wait): run again after the delay.
    Wait(Duration),
}

/// Runs pull tasks.
pub struct Puller {
    pub db: Db,
    /// The load queue (the pulled files' messages).
    pub load_queue: Arc<dyn MessageQueue>,
    /// Reaches the remote, through the URL guard.
    pub http: HttpSource,
    /// siphon's SMART client key and the tokens it holds (`auth` type `smart`).
    pub credentials: Arc<RemoteCredentials>,
    pub options: TaskOptions,
}

struct Run {
    task: String,
    export: String,
    owner: String,
    job: PullJob,
    checkpoint: PullCheckpoint,
    /// What the session shows.
    progress: PullProgress,
    /// A submitted manifest's submission, as its session stores it.
    submission: Option<Box<Submission>>,
}

impl Run {
    /// A submitted manifest's entry in its submission.
    fn manifest(&self) -> Option<&SubmittedManifest> {
        let place = self.job.submitted?.place;
        self.submission.as_ref()?.manifests.get(place as usize)
    }
}

impl Puller {
    /// Runs pull task `task_id` until it ends, must wait, or `deadline` nears.
    pub async fn run(
        &self,
        task_id: &str,
        served: Served<'_>,
        deadline: Option<Instant>,
    ) -> Result<PullOutcome> {
        let claimed = match claim(&self.db, &self.options, task_id, served).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(PullOutcome::Task(outcome)),
        };
        let job: PullJob = serde_json::from_value(claimed.export.request.clone()).map_err(|e| {
            Error::Internal(format!("unreadable pull job {}: {e}", claimed.export.id))
        })?;
        let (status, request) = self.session(&job.session).await?;
        let mut run = Run {
            task: claimed.task.id.clone(),
            export: claimed.export.id.clone(),
            owner: claimed.owner.clone(),
            checkpoint: claimed.task.checkpoint.pull.clone().unwrap_or_default(),
            progress: request.pull.unwrap_or_default(),
            submission: request.submission,
            job,
        };
        let replaced = run.manifest().is_some_and(|m| m.replaced);
        let outcome = match status {
            Some(SessionStatus::Aborted) => return self.stop(&mut run).await,
            // A submitted manifest that was replaced: what it loaded goes.
            Some(SessionStatus::Active | SessionStatus::Paused) if replaced => {
                Box::pin(self.withdraw(&mut run)).await
            }
            // Every file is queued: wait for them to load.
            Some(SessionStatus::Active | SessionStatus::Paused) if run.checkpoint.done => {
                Ok(PullOutcome::Wait(LOADED_POLL))
            }
            Some(SessionStatus::Active | SessionStatus::Paused) => {
                self.pull(&mut run, deadline).await
            }
            _ if run.checkpoint.done => return self.finish(&run).await,
            _ => {
                // The session ended some other way (a file failed; deleted): nothing
                // more to pull.
                self.release(&run).await;
                self.end(&run, TaskStatus::Cancelled, None).await?;
                return Ok(PullOutcome::Task(TaskOutcome::Cancelled));
            }
        };
        match outcome {
            Ok(PullOutcome::Wait(wait)) => {
                // Park: no heartbeat while waiting; the lease runs until the message
                // comes back, so the sweep steps in only if nobody picks it up.
                drop(claimed);
                let hold = wait.saturating_sub(Duration::from_secs(1)).as_secs_f64();
                match self.commit(&run, hold).await? {
                    Ok(()) => Ok(PullOutcome::Wait(wait)),
                    Err(stop) => Ok(PullOutcome::Task(stop)),
                }
            }
            Ok(other) => Ok(other),
            Err(e) if e.is_transient() => Err(e),
            Err(e) if run.job.submitted.is_some() => {
                // One manifest of a submission failing does not end the others: it is
                // reported in its outcome, and may be replaced.
                self.manifest_failed(&mut run, &e.to_string()).await?;
                Ok(PullOutcome::Wait(LOADED_POLL))
            }
            Err(e) => {
                self.fail(&mut run, &e.to_string()).await?;
                Ok(PullOutcome::Task(TaskOutcome::Ended(TaskStatus::Error)))
            }
        }
    }

    async fn session(&self, id: &str) -> Result<(Option<SessionStatus>, SessionRequest)> {
        let client = self.db.client().await?;
        let row = imports::read(&**client, id, false).await?;
        Ok(match row {
            Some(r) => (Some(r.status), r.request),
            None => (None, SessionRequest::default()),
        })
    }

    fn remote<'a>(&'a self, job: &'a PullJob, authorization: &Option<String>) -> Remote<'a> {
        Remote {
            http: &self.http,
            job,
            authorization: authorization.clone(),
        }
    }

    /// The `Authorization` value the remote gets (for `smart`, a token fetched now or
    /// held); a token endpoint that fails is a failed request like any other.
    async fn authorization(&self, job: &PullJob) -> std::result::Result<Option<String>, Failure> {
        self.credentials
            .authorization(&self.http, &job.auth, &job.export_url)
            .await
            .map_err(Failure::from_source)
    }

    async fn pull(&self, run: &mut Run, deadline: Option<Instant>) -> Result<PullOutcome> {
        let authorization = match self.authorization(&run.job).await {
            Ok(a) => a,
            Err(f) => return self.failed(run, f),
        };
        let authorization = &authorization;
        if let Some(submitted) = run.job.submitted {
            // A submitted manifest: no kick-off, no polling; its pages start at its URL,
            // once the manifest it replaces has had its rows removed.
            if run.checkpoint.pages == 0 && run.checkpoint.next_page.is_none() {
                let waiting = submitted.replaces.is_some_and(|r| {
                    run.submission
                        .as_ref()
                        .and_then(|s| s.manifests.get(r as usize))
                        .is_some_and(|m| !m.removed)
                });
                if waiting {
                    return Ok(PullOutcome::Wait(WITHDRAW_POLL));
                }
                run.checkpoint.next_page = Some(run.job.export_url.clone());
            }
            return Box::pin(self.read_pages(run, None, authorization, deadline)).await;
        }
        // 1. Kick off.
        let status_url = match run.checkpoint.status_url.clone() {
            Some(u) => u,
            None => match self.remote(&run.job, authorization).kick_off().await {
                Ok(u) => {
                    tracing::info!(session = run.job.session, "remote export kicked off");
                    run.checkpoint.failures = 0;
                    run.checkpoint.status_url = Some(u.clone());
                    run.progress.stage = "exporting".into();
                    self.show(run).await?;
                    // The status URL first: a worker dying now must not kick off twice.
                    if let Err(stop) = self.commit(run, self.options.lease.as_secs_f64()).await? {
                        return Ok(PullOutcome::Task(stop));
                    }
                    u
                }
                Err(f) => return self.failed(run, f),
            },
        };
        // 2. Poll, until the first manifest page.
        let mut page: Option<Manifest> = None;
        if run.checkpoint.pages == 0 {
            match self.remote(&run.job, authorization).poll(&status_url).await {
                Ok(Poll::Working { wait, progress }) => {
                    run.checkpoint.failures = 0;
                    run.progress.remote_progress = progress;
                    self.show(run).await?;
                    return Ok(PullOutcome::Wait(wait));
                }
                Ok(Poll::Manifest(m)) => page = Some(m),
                Err(f) => return self.failed(run, f),
            }
        }
        Box::pin(self.read_pages(run, page, authorization, deadline)).await
    }

    /// Step 3: reads the manifest pages from `page` (the first, when polling just gave
    /// it) or the checkpoint's next page on.
    async fn read_pages(
        &self,
        run: &mut Run,
        mut page: Option<Manifest>,
        authorization: &Option<String>,
        deadline: Option<Instant>,
    ) -> Result<PullOutcome> {
        loop {
            let manifest = match page.take() {
                Some(m) => m,
                None => match run.checkpoint.next_page.clone() {
                    None => break,
                    Some(next) => match self.remote(&run.job, authorization).page(&next).await {
                        Ok(m) => m,
                        Err(f) => return self.failed(run, f),
                    },
                },
            };
            self.take_page(run, &manifest).await?;
            if let Err(stop) = self.commit(run, self.options.lease.as_secs_f64()).await? {
                return Ok(PullOutcome::Task(stop));
            }
            if run.checkpoint.next_page.is_some()
                && deadline.is_some_and(|d| Instant::now() + self.options.deadline_margin >= d)
            {
                task::release(&self.db, &run.task, &run.owner).await?;
                return Ok(PullOutcome::Task(TaskOutcome::Continue));
            }
        }
        // Every file is an input; the session settles when they have loaded, and the
        // task waits for that to tell the remote.
        run.checkpoint.done = true;
        run.progress.stage = "loading".into();
        run.progress.done = true;
        self.show(run).await?;
        if let Some(submitted) = run.job.submitted {
            // The checkpoint first: the manifest shows read only once its task is.
            if let Err(stop) = self.commit(run, self.options.lease.as_secs_f64()).await? {
                return Ok(PullOutcome::Task(stop));
            }
            self.patch_manifest_of(run, submitted.place, serde_json::json!({"read": true}))
                .await?;
        }
        crate::sessions::settle(&self.db, &run.job.session).await?;
        tracing::info!(
            session = run.job.session,
            pages = run.checkpoint.pages,
            files = run.checkpoint.files,
            "remote export pulled: every file is queued"
        );
        Ok(PullOutcome::Wait(LOADED_POLL))
    }

    /// Every file was queued and the session has ended: the remote is told siphon is
    /// done with its files, and the task ends.
    async fn finish(&self, run: &Run) -> Result<PullOutcome> {
        self.release(run).await;
        if !self.end(run, TaskStatus::Done, None).await? {
            return Ok(PullOutcome::Task(TaskOutcome::Busy));
        }
        Ok(PullOutcome::Task(TaskOutcome::Done {
            count: run.checkpoint.files as i64,
            bytes: 0,
        }))
    }

    /// `DELETE` on the remote's status URL, if there is one: a running export is
    /// cancelled, a finished one may drop its files. Best effort: the answer is logged.
    async fn release(&self, run: &Run) {
        let Some(status_url) = &run.checkpoint.status_url else {
            return;
        };
        let released = match self.authorization(&run.job).await {
            Ok(authorization) => {
                self.remote(&run.job, &authorization)
                    .cancel(status_url)
                    .await
            }
            Err(f) => Err(f),
        };
        match released {
            Ok(status) => {
                tracing::info!(
                    session = run.job.session,
                    status,
                    "remote export released (DELETE)"
                )
            }
            Err(f) => {
                tracing::warn!(session = run.job.session, failure = ?f, "could not release the remote export")
            }
        }
    }

    /// A failed request: wait and try again, or (permanent, or too many in a row) an
    /// error that fails the pull.
    fn failed(&self, run: &mut Run, failure: Failure) -> Result<PullOutcome> {
        match failure {
            Failure::Later { wait, why } => {
                let failures = run.checkpoint.failures + 1;
                run.checkpoint.failures = failures;
                if failures >= MAX_FAILURES {
                    return Err(Error::BadRequest(format!(
                        "the remote failed {failures} times in a row; last: {why}"
                    )));
                }
                tracing::warn!(
                    session = run.job.session,
                    failures,
                    wait_s = wait.as_secs(),
                    error = why,
                    "remote not ready; waiting"
                );
                Ok(PullOutcome::Wait(wait))
            }
            Failure::Unauthorized(why)
                if self.credentials.forget(&run.job.auth, &run.job.export_url) =>
            {
                // A token siphon fetched was refused: a new one on the next run.
                self.failed(
                    run,
                    Failure::Later {
                        wait: super::remote::MIN_WAIT,
                        why: format!("{why}; fetching a new token"),
                    },
                )
            }
            Failure::Permanent(why) | Failure::Unauthorized(why) => Err(Error::BadRequest(why)),
        }
    }

    /// Makes each output file of a manifest page an input of the session and queues it.
    async fn take_page(&self, run: &mut Run, manifest: &Manifest) -> Result<()> {
        run.checkpoint.failures = 0;
        run.checkpoint.requires_token |= manifest.requires_access_token;
        let paused = self.session(&run.job.session).await?.0 == Some(SessionStatus::Paused);
        let first = run.checkpoint.files as usize
            + run
                .job
                .submitted
                .map_or(0, |s| first_input(s.place) as usize);
        let mut files = Vec::with_capacity(manifest.output.len());
        for (i, output) in manifest.output.iter().enumerate() {
            let n = first + i;
            let ty = crate::ResourceType::parse(&output.resource_type).map_err(|_| {
                Error::BadRequest(format!(
                    "manifest file {n}: {:?} is not a resource type",
                    output.resource_type.chars().take(80).collect::<String>()
                ))
            })?;
            self.http.check(&output.url).await.map_err(|e| {
                Error::BadRequest(format!("manifest file {n} ({}): {e}", ty.as_str()))
            })?;
            let location = Location::Url(output.url.clone());
            let options = FileOptions {
                // A submission's rows can be removed again (stopped, or replaced).
                record_txids: run.job.submitted.is_some(),
                ..FileOptions::default()
            };
            let mut file = LoaderFile::pending_at(&location, options)
                .owned_by(run.job.owner.clone(), run.job.writes.clone());
            file.id = input_file_id(&run.job.session, n);
            file.import = Some(run.job.session.clone());
            file.input = Some(n as u32);
            file.resource_type = Some(ty.as_str().to_string());
            if paused {
                file.status = FileStatus::Paused;
            }
            files.push(file);
        }
        self.db.create_loader_files(&files).await?;
        // The session shows `requiresToken` before any file is queued: the loader reads
        // it there to decide whether to send the token.
        run.progress.requires_token = run.checkpoint.requires_token;
        self.show(run).await?;
        if !paused && !files.is_empty() {
            // Every file of the page, created now or by an attempt that died before its
            // checkpoint: a message too many is ignored by the loader (exactly once).
            let messages: Vec<LoadMessage> = files
                .iter()
                .map(|f| LoadMessage::for_file(f, Default::default()))
                .collect();
            crate::queue::send(&*self.load_queue, &messages, None).await?;
        }
        run.checkpoint.pages += 1;
        run.checkpoint.files += files.len() as u32;
        run.checkpoint.next_page = manifest.next().map(str::to_string);
        run.progress.pages = run.checkpoint.pages;
        run.progress.files = run.checkpoint.files;
        run.progress.remote_errors += manifest.error.len() as u32;
        run.progress.requires_token = run.checkpoint.requires_token;
        run.progress.remote_progress = None;
        self.show(run).await
    }

    /// Commits the checkpoint (fenced by the lease), holding the lease `hold_secs`.
    async fn commit(
        &self,
        run: &Run,
        hold_secs: f64,
    ) -> Result<std::result::Result<(), TaskOutcome>> {
        let mut checkpoint = crate::model::export::TaskCheckpoint::default();
        checkpoint.pull = Some(run.checkpoint.clone());
        match self
            .db
            .commit_export_task(
                &run.task,
                &run.export,
                &run.owner,
                &checkpoint,
                run.checkpoint.files as i64,
                hold_secs,
            )
            .await?
        {
            TaskCommit::Committed => Ok(Ok(())),
            TaskCommit::LeaseLost => Ok(Err(TaskOutcome::Busy)),
            TaskCommit::Cancelled => Ok(Err(TaskOutcome::Cancelled)),
        }
    }

    /// Shows the progress on the session (a submitted manifest's on its entry).
    async fn show(&self, run: &Run) -> Result<()> {
        if let Some(submitted) = run.job.submitted {
            let patch = serde_json::json!({"pages": run.progress.pages, "files": run.progress.files,
                                           "requiresToken": run.progress.requires_token});
            return self.patch_manifest_of(run, submitted.place, patch).await;
        }
        let client = self.db.client().await?;
        imports::set_pull(&**client, &run.job.session, &run.progress).await
    }

    async fn patch_manifest_of(
        &self,
        run: &Run,
        place: u32,
        patch: serde_json::Value,
    ) -> Result<()> {
        let client = self.db.client().await?;
        submissions::patch_manifest(&**client, &run.job.session, place, &patch).await
    }

    /// Reading a submitted manifest failed for good: its entry says why, and the task
    /// waits like a read one (it may still be replaced, or its session stopped).
    async fn manifest_failed(&self, run: &mut Run, why: &str) -> Result<()> {
        let place = run.job.submitted.map_or(0, |s| s.place);
        tracing::warn!(
            session = run.job.session,
            place,
            error = why,
            "submitted manifest failed"
        );
        run.checkpoint.done = true;
        if let Err(stop) = self.commit(run, self.options.lease.as_secs_f64()).await? {
            tracing::info!(
                session = run.job.session,
                ?stop,
                "manifest task lost its lease"
            );
            return Ok(());
        }
        self.patch_manifest_of(run, place, serde_json::json!({"error": why}))
            .await?;
        crate::sessions::settle(&self.db, &run.job.session).await
    }

    /// A submitted manifest was replaced: its files stop (a loader holding one loses its
    /// lease, so its next batch does not commit: the same fence as a session's abort),
    /// then the rows they wrote are removed and the files forgotten, and the task ends.
    async fn withdraw(&self, run: &mut Run) -> Result<PullOutcome> {
        let place = run.job.submitted.map_or(0, |s| s.place);
        let session = run.job.session.clone();
        if run.manifest().is_some_and(|m| m.removed) {
            // Done by an attempt that died before it ended the task.
            self.end(run, TaskStatus::Cancelled, None).await?;
            return Ok(PullOutcome::Task(TaskOutcome::Cancelled));
        }
        let files = {
            let client = self.db.client().await?;
            // Committed before the rows are read: a batch of these files either
            // committed before this (its rows are removed below) or never will.
            submissions::move_manifest_files(
                &**client,
                &session,
                place,
                &["pending", "paused", "in-progress"],
                "aborted",
            )
            .await?;
            submissions::manifest_files(&**client, &session, place).await?
        };
        let removed = {
            let mut client = self.db.client().await?;
            let client: &mut tokio_postgres::Client = &mut client;
            let tx = client.transaction().await?;
            let removed = submissions::remove_rows(&tx, &files).await?;
            submissions::forget_files(&tx, &files).await?;
            submissions::patch_manifest(
                &tx,
                &session,
                place,
                &serde_json::json!({"removed": true}),
            )
            .await?;
            tx.commit().await?;
            removed
        };
        tracing::info!(
            session,
            place,
            files = files.len(),
            removed,
            "replaced manifest withdrawn: its rows are removed"
        );
        self.end(run, TaskStatus::Cancelled, None).await?;
        crate::sessions::settle(&self.db, &session).await?;
        Ok(PullOutcome::Task(TaskOutcome::Cancelled))
    }

    /// Ends the task as its owner; `false` when the lease was lost.
    async fn end(&self, run: &Run, status: TaskStatus, why: Option<&str>) -> Result<bool> {
        let mut checkpoint = crate::model::export::TaskCheckpoint::default();
        checkpoint.pull = Some(run.checkpoint.clone());
        let ended = self
            .db
            .end_export_task(
                &run.task,
                &run.owner,
                status,
                &checkpoint,
                run.checkpoint.files as i64,
                why,
            )
            .await?;
        self.db.settle_export(&run.export).await?;
        Ok(ended)
    }

    /// The pull failed for good: the task and the session end in error, saying why.
    /// A remote export none of whose files was taken is released (`DELETE`); one whose
    /// files are inputs is kept, for the loads still reading them and for a force-resume
    /// to go on from the next page (the remote drops it when its files expire).
    async fn fail(&self, run: &mut Run, why: &str) -> Result<()> {
        tracing::error!(session = run.job.session, error = why, "pull import failed");
        if run.checkpoint.pages == 0 {
            self.release(run).await;
        }
        self.end(run, TaskStatus::Error, Some(why)).await?;
        run.progress.done = true;
        self.show(run).await?;
        let client = self.db.client().await?;
        imports::set_status(
            &**client,
            &run.job.session,
            SessionStatus::Error,
            Some(&format!("pull failed: {why}")),
        )
        .await
    }

    /// The session was aborted: the remote export is cancelled, the planning ends, and
    /// files it created but nobody loads are aborted.
    async fn stop(&self, run: &mut Run) -> Result<PullOutcome> {
        self.release(run).await;
        self.end(run, TaskStatus::Cancelled, None).await?;
        self.db.cancel_export(&run.export).await?;
        run.progress.stage = "aborted".into();
        run.progress.done = true;
        self.show(run).await?;
        let client = self.db.client().await?;
        imports::move_files(
            &**client,
            &run.job.session,
            &["pending", "paused"],
            "aborted",
        )
        .await?;
        tracing::info!(
            session = run.job.session,
            "pull stopped: the session was aborted"
        );
        Ok(PullOutcome::Task(TaskOutcome::Cancelled))
    }
}
