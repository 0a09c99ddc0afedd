//! Loading one ndjson(.gz) file into its resource table (SPEC section 3).
//!
//! ```text
//! Source --bytes--> [blocking thread: gunzip -> lines -> validate -> COPY-encode]
//!        --batches (bounded channel)--> [writer: one transaction per batch:
//!            COPY rows, record invalid lines, advance LoaderFile counts + checkpoint,
//!            all fenced by the lease] --> commit
//! ```
//!
//! Exactly-once effect: a file is claimed with a lease ([`Claim`]); each
//! batch commits its rows together with the new checkpoint, and only while the lease is
//! ours. A duplicate message finds the file busy or done; a crashed loader's lease
//! expires and the next one resumes from the last checkpoint, skipping committed lines.
//! Near the deadline the loader commits, hands the lease back and reports
//! [`Outcome::Continue`] so the caller can queue the rest.

pub mod bulk;
pub mod checks;
pub mod decode;
pub mod feed;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use self::decode::{Batch, DecodeConfig, DecodeError};
use crate::error::{Error, Result};
use crate::lease::{self, Claim, Leases};
use crate::model::export::ExportKind;
use crate::model::loader_file::{Checkpoint, FileProgress};
use crate::model::{FileStatus, LineError, LoaderFile};
use crate::resource_type::ResourceType;
use crate::sources::{Credential, Location, OpenedObject, Source, SourceError};
use crate::storage::batch::Opened;
use crate::storage::leases::FileLeases;
use crate::storage::loader_files::FileClaim;
use crate::storage::Db;

/// Tunables; the defaults suit a 256 MB Lambda.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// A longer line is a line error (default 16 MiB).
    pub max_line_bytes: usize,
    /// Rows per committed batch (default 20,000).
    pub batch_rows: usize,
    /// Encoded bytes per committed batch (default 4 MiB).
    pub batch_bytes: usize,
    /// How long a claim lasts unless renewed (default 30 s): a worker that dies stops
    /// renewing, and the sweep picks its file up soon after the lease runs out.
    pub lease: Duration,
    /// How often a live worker renews its lease (default 10 s; every batch commit renews
    /// it too).
    pub heartbeat: Duration,
    /// Stop this long before the deadline at the latest (default 10 s).
    pub deadline_margin: Duration,
    /// At most this many invalid lines are stored per file (all are counted).
    pub max_stored_errors: u64,
    /// Retries of transient failures (connection lost, network) inside one call.
    pub retries: u32,
    /// A gzip file may inflate to at most this many times its compressed size (default
    /// 100, `SIPHON_MAX_GZIP_RATIO`; plus 8 MiB always allowed): a file past it ends in
    /// `error` naming the ratio, so a tiny file cannot keep loaders busy for hours.
    pub max_expansion: u64,
    /// At most this many bytes are read from a file's source, compressed or not
    /// (default 64 GiB, `SIPHON_MAX_FILE_BYTES`): a file past it ends in `error` naming
    /// the limit, so a remote that never ends its body cannot keep a loader busy forever.
    pub max_file_bytes: u64,
    /// Test hook: fail as a crash would, before committing the N-th batch (0-based).
    #[doc(hidden)]
    pub crash_before_commit: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_line_bytes: 16 << 20,
            batch_rows: 20_000,
            batch_bytes: 4 << 20,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            deadline_margin: Duration::from_secs(10),
            max_stored_errors: 10_000,
            retries: 3,
            max_expansion: 100,
            max_file_bytes: 64 << 30,
            crash_before_commit: None,
        }
    }
}

/// How a call to [`Loader::load`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file is loaded (`status: done`).
    Done { loaded: u64, failed: u64 },
    /// The file ended in `status: error` (the message is on the LoaderFile too).
    Failed { message: String },
    /// The deadline came first: the work is committed up to `line`; call again (from a
    /// new invocation) to continue.
    Continue { line: u64 },
    /// Another loader holds the file right now (a duplicate delivery): try later.
    Busy { until: String },
    /// The file's group (one load-from-bucket call) has `thread-num` files loading: try later.
    Throttled,
    /// Nothing to do: the file is already in this state.
    NotLoadable { status: FileStatus },
    /// The file's `$import` session was paused, aborted or failed: the file stopped at
    /// its checkpoint in `status` (`paused` or `aborted`); resume re-queues it.
    Halted { status: FileStatus },
}

/// What became of one batch.
enum Committed {
    Yes,
    /// Another loader (or a force-resume) took the lease: nothing was written.
    LeaseLost,
    /// The session is no longer active: nothing was written, the file now has this status.
    Halted(FileStatus),
}

/// Loads files through one [`Source`] into one database.
#[derive(Clone)]
pub struct Loader {
    db: Db,
    /// The files' leases (in `db`).
    leases: Arc<FileLeases>,
    source: Arc<dyn Source>,
    options: LoadOptions,
    /// The SQS receipt handle of the message this load serves, kept with the lease.
    receipt: Option<String>,
    /// How many times that message has been received (SQS `ApproximateReceiveCount`).
    receives: u32,
    /// siphon's SMART client key and the guarded client its token requests go through
    /// (files of pull imports with `auth` type `smart`).
    remote: Option<crate::auth::remote::RemoteAccess>,
}

/// What a claim means for an attempt.
enum Claimed {
    /// Load the file.
    Load(Box<LoaderFile>),
    /// Give the lease back and continue on a fresh message (see
    /// [`lease::continue_on_fresh_message`]).
    HandBack(Box<LoaderFile>),
    /// Nothing to load now: this is the outcome.
    Stop(Outcome),
}

/// What claim `claim` of file `file_id` means for an attempt served by a message
/// received `receives` times.
fn after_claim(file_id: &str, claim: FileClaim, receives: u32) -> Result<Claimed> {
    Ok(match claim {
        Claim::Held { work, progressed }
            if lease::continue_on_fresh_message(progressed, receives) =>
        {
            Claimed::HandBack(work)
        }
        Claim::Held { work, .. } => Claimed::Load(work),
        Claim::Busy { until } => Claimed::Stop(Outcome::Busy {
            until: until.unwrap_or_default(),
        }),
        Claim::Ended(status) => Claimed::Stop(Outcome::NotLoadable { status }),
        Claim::Throttled => Claimed::Stop(Outcome::Throttled),
        Claim::Missing => {
            return Err(Error::NotFound(format!(
                "LoaderFile {file_id} does not exist"
            )))
        }
    })
}

/// Why one attempt stopped.
enum Stop {
    Finished(Outcome),
    Transient(String),
}

impl Loader {
    pub fn new(db: Db, source: Arc<dyn Source>, options: LoadOptions) -> Self {
        Loader {
            leases: Arc::new(FileLeases::files(db.clone())),
            db,
            source,
            options,
            receipt: None,
            receives: 1,
            remote: None,
        }
    }

    /// Files of pull imports that authenticate with SMART Backend Services get their
    /// access tokens through `remote`.
    pub fn with_remote_access(mut self, remote: Option<crate::auth::remote::RemoteAccess>) -> Self {
        self.remote = remote;
        self
    }

    /// The load serves the SQS message with this receipt handle: if the worker dies, the
    /// sweep makes that message visible again instead of waiting for its timeout.
    pub fn with_receipt(mut self, receipt: Option<String>) -> Self {
        self.receipt = receipt;
        self
    }

    /// The message this load serves was received `receives` times. A redelivered message
    /// whose previous worker died after moving the checkpoint on is swapped for a fresh
    /// one ([`Outcome::Continue`] at once): the queue sends a message received
    /// `maxReceiveCount` times to its dead-letter queue, and that count is meant for a
    /// file that kills its worker at the same line every time, not for crashes that
    /// each got somewhere.
    pub fn with_receives(mut self, receives: u32) -> Self {
        self.receives = receives;
        self
    }

    /// Loads the file of LoaderFile `file_id`, stopping before `deadline` if given.
    /// Transient failures are retried a few times; if they persist the error is
    /// returned (the lease then expires and a later call resumes). A file of an `$import`
    /// session that ends here (done or error) still has to settle its session: callers
    /// do that (`sessions::settle`).
    pub async fn load(&self, file_id: &str, deadline: Option<Instant>) -> Result<Outcome> {
        let owner = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            let result = self.attempt(file_id, &owner, deadline).await;
            let reason = match result {
                Ok(Stop::Finished(outcome)) => return Ok(outcome),
                Ok(Stop::Transient(reason)) => reason,
                Err(e) if e.is_transient() => e.to_string(),
                Err(e) => return Err(e),
            };
            attempt += 1;
            if attempt > self.options.retries {
                tracing::error!(
                    file_id,
                    attempts = attempt,
                    reason,
                    "giving up for now; the next delivery resumes from the checkpoint"
                );
                // Hand the lease back (best effort: with the database down it simply
                // expires), so a redelivered message can resume at once.
                let _ = self.leases.release(file_id, &owner).await;
                return Err(Error::Internal(format!(
                    "transient failure, retries exhausted: {reason}"
                )));
            }
            tracing::warn!(
                file_id,
                attempt,
                reason,
                "transient failure; resuming from the last checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(500 * (1 << attempt.min(4)))).await;
        }
    }

    async fn attempt(&self, file_id: &str, owner: &str, deadline: Option<Instant>) -> Result<Stop> {
        let file = match self.claim(file_id, owner).await? {
            Ok(file) => file,
            Err(stop) => return Ok(stop),
        };
        // Renewed while this attempt runs; stopped (dropped) whatever way it ends, so a
        // crash (or an injected one) stops renewing as a dead process would.
        let _heartbeat = lease::hold(
            self.leases.clone(),
            "LoaderFile",
            file_id,
            owner,
            self.options.lease,
            self.options.heartbeat,
        );
        let file_type = match &file.resource_type {
            Some(t) => Some(ResourceType::parse(t)?),
            None => None,
        };
        tracing::info!(file_id, file = %file.origin(), from_line = file.checkpoint.line, "loading");
        if file.options.strict && !file.validated {
            if let Some(stop) = self.strict_prepass(&file, owner, file_type.clone()).await? {
                return Ok(stop);
            }
        }
        let config = DecodeConfig {
            file_type,
            skip_lines: file.checkpoint.line,
            start: None,
            max_line_bytes: self.options.max_line_bytes,
            batch_rows: self.options.batch_rows,
            batch_bytes: self.options.batch_bytes,
            validate_only: false,
            validation: file.options.validation,
            writes: file.writes.clone(),
            max_expansion: self.options.max_expansion,
            max_file_bytes: self.options.max_file_bytes,
        };
        let mut rx = match self.open(&file, owner, config).await? {
            Ok(rx) => rx,
            Err(stop) => return Ok(stop),
        };
        let mut client = self.db.client().await?;
        let mut state = Progress::from_checkpoint(&file);
        loop {
            if let Some(deadline) = deadline {
                let margin = self.options.deadline_margin.max(state.slowest * 2);
                if Instant::now() + margin >= deadline {
                    drop(rx);
                    return self.hand_over(file_id, owner).await;
                }
            }
            let Some(message) = rx.recv().await else {
                return Ok(Stop::Transient("the decoder stopped unexpectedly".into()));
            };
            let (batch, decode_error) = match message {
                Ok(batch) => (batch, None),
                Err((batch, e)) => (batch, Some(e)),
            };
            let eof = batch.eof;
            let started = Instant::now();
            let committed = self
                .commit_batch(&mut client, &file, owner, batch, &mut state)
                .await?;
            state.slowest = state.slowest.max(started.elapsed());
            if let Some(stop) = committed_stop(&file, committed, &state) {
                return Ok(stop);
            }
            if let Some(stop) = self
                .read_on(&file, owner, decode_error, eof, &state)
                .await?
            {
                return Ok(stop);
            }
        }
    }

    /// After a committed batch: stop when the decoder failed (transiently: retry from
    /// the checkpoint; corrupt gzip: the file ends in error) or the file ended.
    async fn read_on(
        &self,
        file: &LoaderFile,
        owner: &str,
        decode_error: Option<DecodeError>,
        eof: bool,
        state: &Progress,
    ) -> Result<Option<Stop>> {
        let file_id = file.id.as_str();
        Ok(match decode_error {
            Some(DecodeError::Source(reason)) => Some(Stop::Transient(reason)),
            Some(DecodeError::Permanent(message)) => {
                tracing::error!(file_id, file = %file.origin(), error = message, "file failed");
                self.db
                    .fail_loader_file(file_id, Some(owner), &message)
                    .await?;
                Some(Stop::Finished(Outcome::Failed { message }))
            }
            None if eof => {
                tracing::info!(
                    file_id,
                    loaded = state.loaded,
                    failed = state.failed,
                    "file loaded"
                );
                record_file_loaded(file, state);
                Some(Stop::Finished(Outcome::Done {
                    loaded: state.loaded,
                    failed: state.failed,
                }))
            }
            None => None,
        })
    }

    /// Claims the file's lease: the file, or why this attempt stops before it starts.
    async fn claim(
        &self,
        file_id: &str,
        owner: &str,
    ) -> Result<std::result::Result<LoaderFile, Stop>> {
        let claim = self
            .leases
            .claim(file_id, owner, self.options.lease, self.receipt.as_deref())
            .await?;
        let outcome = match after_claim(file_id, claim, self.receives)? {
            Claimed::Load(file) => return Ok(Ok(*file)),
            Claimed::Stop(outcome) => outcome,
            Claimed::HandBack(file) => {
                self.leases.release(file_id, owner).await?;
                tracing::info!(
                    file_id,
                    file = %file.origin(),
                    line = file.checkpoint.line,
                    receives = self.receives,
                    "redelivered after a worker that got somewhere died: continuing on a fresh message"
                );
                Outcome::Continue {
                    line: file.checkpoint.line,
                }
            }
        };
        Ok(Err(Stop::Finished(outcome)))
    }

    /// The deadline is near: releases the lease at the last checkpoint, for the next
    /// message to continue from.
    async fn hand_over(&self, file_id: &str, owner: &str) -> Result<Stop> {
        self.leases.release(file_id, owner).await?;
        let line = self
            .db
            .loader_file(file_id)
            .await?
            .map(|f| f.checkpoint.line)
            .unwrap_or(0);
        tracing::info!(
            file_id,
            line,
            "deadline near: handing over at the checkpoint"
        );
        Ok(Stop::Finished(Outcome::Continue { line }))
    }

    /// The credential a pull import's file is fetched with: its job's `Authorization`
    /// (a SMART access token fetched now or held) when its manifest required one, and a
    /// submission provider's headers, both only on the kick-off (manifest) URL's origin.
    /// A token that cannot be had is the file's source error (transient: retried;
    /// refused: the file fails saying why). `renew` drops the token held first (the
    /// remote refused it); the answer says whether the credential holds such a token.
    async fn pull_credential(
        &self,
        file: &LoaderFile,
        location: &Location,
        renew: bool,
    ) -> Result<std::result::Result<(Credential, bool), SourceError>> {
        let none = Ok(Ok((Credential::default(), false)));
        let (Some(session), Location::Url(url)) = (&file.import, location) else {
            return none;
        };
        // The job the file came from, and whether its manifest required the token (shown
        // on the session, or on the submitted manifest, before its files were queued).
        let request = {
            let client = self.db.client().await?;
            crate::storage::imports::read(&**client, session, false).await?
        };
        let Some(request) = request.map(|r| r.request) else {
            return none;
        };
        let (job_id, requires) = match (&request.submission, &request.pull, file.input) {
            (Some(sub), _, Some(input)) => {
                let place = crate::model::submission::place_of(input);
                let Some(m) = sub.manifests.get(place as usize) else {
                    return none;
                };
                (m.job(session), m.requires_token)
            }
            (None, Some(pull), _) => (session.clone(), pull.requires_token),
            _ => return none,
        };
        let Some(export) = self.db.export(&job_id).await? else {
            return none;
        };
        if export.kind != ExportKind::Pull {
            return none;
        }
        let job: crate::model::pull::PullJob = serde_json::from_value(export.request)
            .map_err(|e| Error::Internal(format!("unreadable pull job {job_id}: {e}")))?;
        let headers = job.headers_for(url);
        if !job.credential_goes_to(url, requires) {
            return Ok(Ok((
                Credential {
                    authorization: None,
                    headers,
                },
                false,
            )));
        }
        let found = match &self.remote {
            Some(remote) => {
                let fetched = renew && remote.forget(&job.auth, &job.export_url);
                let renewable = matches!(job.auth, crate::model::pull::RemoteAuth::Smart { .. });
                remote
                    .authorization(&job.auth, &job.export_url)
                    .await
                    .map(|a| (a, renewable && !fetched))
            }
            None => crate::auth::remote::RemoteAccess::without_key(&job.auth).map(|a| (a, false)),
        };
        Ok(found.map(|(authorization, renewable)| {
            (
                Credential {
                    authorization,
                    headers,
                },
                renewable,
            )
        }))
    }

    /// Opens the object and starts the decoder thread. Permanent source errors end the
    /// file in `error`.
    async fn open(
        &self,
        file: &LoaderFile,
        owner: &str,
        mut config: DecodeConfig,
    ) -> Result<
        std::result::Result<mpsc::Receiver<std::result::Result<Batch, (Batch, DecodeError)>>, Stop>,
    > {
        let location = file.origin();
        // A plain file resumes where its committed lines end, if the store reads ranges.
        let checkpoint = file.checkpoint;
        let from = if checkpoint.plain && config.skip_lines == checkpoint.line {
            checkpoint.bytes
        } else {
            0
        };
        let object = match self.open_object(file, &location, from).await? {
            Ok(o) => o,
            Err(e) => return Ok(Err(self.unopened(file, owner, &location, e).await?)),
        };
        if file.size.is_none() || file.etag.is_none() {
            let client = self.db.client().await?;
            let found = FileProgress {
                size: object.size,
                etag: object.etag.clone(),
                ..FileProgress::default()
            };
            Db::patch_loader_file_as(&**client, &file.id, owner, &found, false).await?;
        }
        if from > 0 && object.offset == from {
            tracing::info!(file_id = %file.id, file = %location, from_line = checkpoint.line, from_byte = from, "reading the rest of the file from its checkpoint");
            config.start = Some(checkpoint);
        }
        let (tx, rx) = mpsc::channel(1);
        let body = SyncIoBridge::new(object.body);
        tokio::task::spawn_blocking(move || decode::decode(body, &config, &tx));
        Ok(Ok(rx))
    }

    /// The object from byte `from`, with the authorization its source needs; a token
    /// siphon fetched and the remote refused is fetched again once.
    async fn open_object(
        &self,
        file: &LoaderFile,
        location: &Location,
        from: u64,
    ) -> Result<std::result::Result<OpenedObject, SourceError>> {
        let mut renew = false;
        loop {
            let (credential, renewable) = match self.pull_credential(file, location, renew).await? {
                Ok(found) => found,
                Err(e) => return Ok(Err(e)),
            };
            let opened = self
                .source
                .open_from(location, file.etag.as_deref(), credential.some(), from)
                .await;
            if renewable && matches!(opened, Err(SourceError::AccessDenied(_))) {
                tracing::info!(file_id = %file.id, file = %location, "the remote refused siphon's token; fetching a new one");
                renew = true;
                continue;
            }
            return Ok(opened);
        }
    }

    /// What a file that could not be opened becomes: a transient failure is tried
    /// again; otherwise the file ends failed (an object an inventory listed but that is
    /// gone or changed, as missing).
    async fn unopened(
        &self,
        file: &LoaderFile,
        owner: &str,
        location: &Location,
        e: SourceError,
    ) -> Result<Stop> {
        match e {
            SourceError::Transient(reason) => Ok(Stop::Transient(reason)),
            e @ (SourceError::NotFound(_) | SourceError::Changed(_))
                if file.inventory.is_some() =>
            {
                // Inventories lag the bucket: an object listed may be gone or rewritten.
                let message = format!(
                    "missing: {} was listed by the inventory but {}; not loaded (the next inventory tells whether it was deleted or rewritten)",
                    location,
                    if matches!(e, SourceError::NotFound(_)) { "no longer exists" } else { "changed since" }
                );
                tracing::warn!(file_id = %file.id, file = %location, "listed by the inventory but missing");
                self.db.miss_loader_file(&file.id, owner, &message).await?;
                Ok(Stop::Finished(Outcome::Failed { message }))
            }
            e => {
                let message = e.to_string();
                tracing::error!(file_id = %file.id, file = %location, error = message, "cannot open the file");
                self.db
                    .fail_loader_file(&file.id, Some(owner), &message)
                    .await?;
                Ok(Stop::Finished(Outcome::Failed { message }))
            }
        }
    }

    /// Strict mode: validate the whole file before loading any of it.
    async fn strict_prepass(
        &self,
        file: &LoaderFile,
        owner: &str,
        file_type: Option<ResourceType>,
    ) -> Result<Option<Stop>> {
        let config = DecodeConfig {
            file_type,
            skip_lines: 0,
            start: None,
            max_line_bytes: self.options.max_line_bytes,
            batch_rows: self.options.batch_rows,
            batch_bytes: self.options.batch_bytes,
            validate_only: true,
            validation: file.options.validation,
            writes: file.writes.clone(),
            max_expansion: self.options.max_expansion,
            max_file_bytes: self.options.max_file_bytes,
        };
        let mut rx = match self.open(file, owner, config).await? {
            Ok(rx) => rx,
            Err(stop) => return Ok(Some(stop)),
        };
        let mut errors: Vec<LineError> = Vec::new();
        let mut invalid = 0u64;
        while let Some(message) = rx.recv().await {
            let (batch, error) = match message {
                Ok(b) => (b, None),
                Err((b, e)) => (b, Some(e)),
            };
            invalid += batch.errors.len() as u64;
            let room = (self.options.max_stored_errors as usize).saturating_sub(errors.len());
            errors.extend(batch.errors.into_iter().take(room));
            match error {
                Some(DecodeError::Source(reason)) => return Ok(Some(Stop::Transient(reason))),
                Some(DecodeError::Permanent(message)) => {
                    self.db
                        .fail_loader_file(&file.id, Some(owner), &message)
                        .await?;
                    return Ok(Some(Stop::Finished(Outcome::Failed { message })));
                }
                None if batch.eof => break,
                None => {}
            }
        }
        let mut client = self.db.client().await?;
        let Opened::Ready(tx) = Db::begin_batch(&mut client, &file.id, owner, None).await? else {
            unreachable!("a batch without a session is never halted")
        };
        if invalid > 0 {
            tx.record_errors(&file.id, &errors, self.options.max_stored_errors)
                .await?;
            let message = format!(
                "strict mode: {invalid} invalid line(s), nothing loaded (first at line {})",
                errors[0].line
            );
            let refused = FileProgress {
                failed: Some(invalid),
                loaded: Some(0),
                ..FileProgress::ended(FileStatus::Error, Some(&message))
            };
            tx.advance(&file.id, owner, &refused, true, 0.0).await?;
            tx.commit().await?;
            return Ok(Some(Stop::Finished(Outcome::Failed { message })));
        }
        let lease = self.options.lease.as_secs_f64();
        let validated = FileProgress {
            validated: Some(true),
            ..FileProgress::default()
        };
        tx.advance(&file.id, owner, &validated, false, lease)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Writes one batch and advances the LoaderFile in one transaction. Writes nothing
    /// when the lease was lost or the file's session is not active (then the file is
    /// marked paused or aborted, keeping its checkpoint).
    async fn commit_batch(
        &self,
        client: &mut deadpool_postgres::Object,
        file: &LoaderFile,
        owner: &str,
        mut batch: Batch,
        state: &mut Progress,
    ) -> Result<Committed> {
        self.prepare_tables(client, file, &batch, state).await?;
        let strict = file.options.strict;
        let tx = match Db::begin_batch(client, &file.id, owner, file.import.as_deref()).await? {
            Opened::Ready(tx) => tx,
            Opened::Halted(status) => return Ok(Committed::Halted(status)),
        };
        let kept = checks::keep_refs(&tx, file, &mut batch).await?;
        let (loaded, mut errors) = write_rows(&tx, file, &mut batch, state).await?;
        if strict && !errors.is_empty() {
            // Validated up front, so only Postgres can refuse a line here.
            drop(tx);
            return Err(self.strict_refusal(file, owner, &errors[0]).await);
        }
        let flagged = checks::merge_findings(&mut errors, std::mem::take(&mut batch.findings));
        let loaded_total = state.loaded + loaded;
        let failed_total = state.failed + errors.len() as u64;
        let flagged_total = state.flagged + flagged.len() as u64;
        let room = self
            .options
            .max_stored_errors
            .saturating_sub(state.failed + state.flagged);
        errors.extend(flagged);
        errors.sort_by_key(|e| e.line);
        tx.record_errors(&file.id, &errors, room).await?;
        let (parked, pending_refs) = (
            state.parked + kept.parked,
            state.pending_refs + kept.pending,
        );
        let progress = Progress {
            loaded: loaded_total,
            failed: failed_total,
            flagged: flagged_total,
            parked,
            pending_refs,
            ..Progress::from_checkpoint(file)
        }
        .after(&batch);
        let lease = self.options.lease.as_secs_f64();
        if !tx
            .advance(&file.id, owner, &progress, batch.eof, lease)
            .await?
        {
            return Ok(Committed::LeaseLost);
        }
        if self.options.crash_before_commit == Some(state.batches) {
            return Err(Error::Internal("injected crash before commit".into()));
        }
        tx.commit().await?;
        state.batches += 1;
        state.loaded = loaded_total;
        state.failed = failed_total;
        state.flagged = flagged_total;
        state.parked = parked;
        state.pending_refs = pending_refs;
        state.line = batch.last_line;
        state.bytes = batch.bytes;
        tracing::debug!(file_id = %file.id, line = batch.last_line, loaded = loaded_total, failed = failed_total, "batch committed");
        Ok(Committed::Yes)
    }

    /// Strict mode: the first line Postgres refused ends the file in error.
    async fn strict_refusal(&self, file: &LoaderFile, owner: &str, first: &LineError) -> Error {
        let message = format!("strict mode: line {} refused: {}", first.line, first.reason);
        if let Err(e) = self
            .db
            .fail_loader_file(&file.id, Some(owner), &message)
            .await
        {
            return e;
        }
        Error::BadRequest(message)
    }

    /// Creates the tables of the batch's types, and puts each into bulk mode the first
    /// time this attempt writes to it when the file asks for bulk loading.
    async fn prepare_tables(
        &self,
        client: &deadpool_postgres::Object,
        file: &LoaderFile,
        batch: &Batch,
        state: &mut Progress,
    ) -> Result<()> {
        for chunk in &batch.chunks {
            self.db
                .ensure_table(&***client, &chunk.resource_type)
                .await?;
            if file.options.bulk() && state.bulk.insert(chunk.resource_type.clone()) {
                // Once per type and attempt; later calls find the table in bulk mode.
                self.db
                    .enter_bulk_mode(
                        &chunk.resource_type,
                        &file.load_owner(),
                        file.options.disable_indexes,
                        file.options.drop_primary_key,
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// The figures of a file that has just loaded, over all its runs (the worker records
/// each run's time and the file's counts): the bytes it read, the time from its start to
/// now, and its resources per second over that time.
fn record_file_loaded(file: &LoaderFile, state: &Progress) {
    use crate::metrics::{bytes, per_second, seconds};
    let mut figures = vec![bytes("BytesRead", state.bytes)];
    let took = file
        .start
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        });
    if let Some(took) = took {
        figures.push(seconds("FileSeconds", took));
        figures.push(per_second("ResourcesPerSecond", state.loaded, took));
    }
    crate::metrics::record("load", None, &figures);
}

struct Progress {
    line: u64,
    /// Uncompressed bytes read up to `line`.
    bytes: u64,
    loaded: u64,
    failed: u64,
    /// Lines loaded with validation findings (`enable: async`).
    flagged: u64,
    /// Lines parked until their references resolve, and references waiting.
    parked: u64,
    pending_refs: u64,
    try_direct: bool,
    batches: u64,
    slowest: Duration,
    /// Types whose table was put in bulk mode (or found there) in this attempt.
    bulk: std::collections::HashSet<ResourceType>,
}

impl Progress {
    /// Where an attempt starts: the file's last checkpoint and counts.
    fn from_checkpoint(file: &LoaderFile) -> Self {
        Progress {
            line: file.checkpoint.line,
            bytes: file.checkpoint.bytes,
            loaded: file.loaded,
            failed: file.failed,
            flagged: file.flagged,
            parked: file.parked,
            pending_refs: file.pending_refs,
            try_direct: true,
            batches: 0,
            slowest: Duration::ZERO,
            bulk: Default::default(),
        }
    }
}

impl Progress {
    /// The file's progress once `batch` commits with these counts: the checkpoint moves
    /// to its last line, and the file is done at the end of the file.
    fn after(&self, batch: &Batch) -> FileProgress {
        let counted = |n: u64| (n > 0).then_some(n);
        let mut progress = FileProgress {
            loaded: Some(self.loaded),
            failed: Some(self.failed),
            flagged: counted(self.flagged),
            parked: counted(self.parked),
            pending_refs: counted(self.pending_refs),
            // A batch that ends where the attempt began (the stream failed while reading
            // past committed lines) keeps the checkpoint's bytes: they locate the rest.
            checkpoint: Some(Checkpoint {
                line: batch.last_line,
                bytes: if batch.last_line > self.line {
                    batch.bytes
                } else {
                    self.bytes
                },
                plain: batch.plain,
            }),
            ..FileProgress::default()
        };
        if batch.eof {
            progress.status = Some(FileStatus::Done);
            progress.end = Some(crate::model::loader_file::now_rfc3339());
        }
        progress
    }
}

/// Writes the batch's rows in its transaction: the rows loaded, and the batch's invalid
/// lines with those Postgres refused, in line order.
async fn write_rows(
    tx: &crate::storage::batch::BatchTx<'_>,
    file: &LoaderFile,
    batch: &mut Batch,
    state: &mut Progress,
) -> Result<(u64, Vec<LineError>)> {
    let txid = tx.next_txid().await?;
    if file.options.record_txids {
        // Boxed: this future is part of every load's, which a synchronous `$load` runs
        // inside the API's request.
        Box::pin(tx.record_txid(&file.id, txid)).await?;
    }
    let mut loaded = 0u64;
    let mut errors = std::mem::take(&mut batch.errors);
    for mut chunk in std::mem::take(&mut batch.chunks) {
        crate::storage::copy_in::set_txid(&mut chunk, txid);
        let result = tx
            .write(chunk, file.options.upsert, state.try_direct)
            .await?;
        if result.conflicted {
            state.try_direct = false; // ids exist: go straight to the upsert path
        }
        loaded += result.loaded;
        errors.extend(result.errors);
    }
    errors.sort_by_key(|e| e.line);
    Ok((loaded, errors))
}

/// Why an attempt stops after a batch that was not committed; `None` when it was.
fn committed_stop(file: &LoaderFile, committed: Committed, state: &Progress) -> Option<Stop> {
    match committed {
        Committed::Yes => None,
        Committed::LeaseLost => {
            tracing::warn!(file_id = %file.id, "lease lost to another loader; stopping");
            Some(Stop::Finished(Outcome::Busy {
                until: String::new(),
            }))
        }
        Committed::Halted(status) => {
            tracing::info!(
                file_id = %file.id,
                session = file.import.as_deref(),
                status = status.as_str(),
                line = state.line,
                "session not active: stopped at the checkpoint"
            );
            Some(Stop::Finished(Outcome::Halted { status }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::memory::MemoryLeases;
    use crate::model::ObjectLocation;

    type Files = MemoryLeases<Box<LoaderFile>, FileStatus>;

    fn files() -> Files {
        let files = Files::default();
        let location = ObjectLocation::new("bucket", "Patient.ndjson");
        let file = LoaderFile::pending(&location, None, None, Default::default());
        files.add("f", Box::new(file));
        files
    }

    async fn decide(files: &Files, owner: &str, lease_ms: u64, receives: u32) -> Result<Claimed> {
        let lease = Duration::from_millis(lease_ms);
        after_claim("f", files.claim("f", owner, lease, None).await?, receives)
    }

    #[tokio::test]
    async fn only_a_redelivery_after_a_worker_that_got_somewhere_hands_back() {
        let files = files();
        assert!(matches!(
            decide(&files, "a", 50, 1).await,
            Ok(Claimed::Load(_))
        ));
        assert!(files.advance("f", "a", Duration::from_millis(50)));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // a died having moved the file on; b's message is a first delivery: it loads.
        assert!(matches!(
            decide(&files, "b", 50, 1).await,
            Ok(Claimed::Load(_))
        ));
        assert!(files.advance("f", "b", Duration::from_millis(50)));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // b died having moved it on too; c serves the same message again: fresh one.
        assert!(matches!(
            decide(&files, "c", 50, 2).await,
            Ok(Claimed::HandBack(_))
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
        // c got nowhere: d loads, and its message's receive count goes on counting.
        assert!(matches!(
            decide(&files, "d", 50, 3).await,
            Ok(Claimed::Load(_))
        ));
    }

    #[tokio::test]
    async fn held_ended_throttled_or_missing_files_stop_the_attempt_saying_why() {
        let files = files();
        assert!(matches!(
            decide(&files, "a", 60_000, 1).await,
            Ok(Claimed::Load(_))
        ));
        match decide(&files, "b", 60_000, 1).await {
            Ok(Claimed::Stop(Outcome::Busy { until })) => {
                assert!(
                    chrono::DateTime::parse_from_rfc3339(&until).is_ok(),
                    "{until}"
                )
            }
            _ => panic!("another loader's live lease: busy"),
        }
        assert!(files.end("f", "a", FileStatus::Done));
        assert!(matches!(
            decide(&files, "b", 60_000, 1).await,
            Ok(Claimed::Stop(Outcome::NotLoadable {
                status: FileStatus::Done
            }))
        ));
        assert!(matches!(
            after_claim("f", Claim::Throttled, 1),
            Ok(Claimed::Stop(Outcome::Throttled))
        ));
        match after_claim("gone", Claim::Missing, 1) {
            Err(Error::NotFound(m)) => assert_eq!(m, "LoaderFile gone does not exist"),
            _ => panic!("a missing file is an error"),
        }
    }
}
