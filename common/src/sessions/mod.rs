//! `$import` sessions and `$load` (SPEC section 4, `seeds/aidbox-bulk-api.md`).
//!
//! A session is a row in `siphon_import` plus one `LoaderFile` per input (its `import`
//! names the session). Inputs load through the same queue and loader as load-from-bucket.
//! Users move the session between states; workers obey at every batch commit:
//!
//! | action | from | to | files |
//! |---|---|---|---|
//! | start | (new id) | active | created `pending`, one message each |
//! | pause | active | paused | `pending` -> `paused`; loading files stop at their next batch |
//! | resume | paused | active | `paused` -> `pending`, re-queued from their checkpoints |
//! | abort | active, paused | aborted | unfinished -> `aborted`; committed rows stay |
//! | force-resume | active, paused, error | active | unfinished -> `pending` (leases taken back), re-queued |
//!
//! Any other (action, state) pair is 406; an unknown id 404; a wrong `secret` 403.
//! Workers end the session `done` when every input is done, `error` when one fails.

pub mod ended;
pub mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

pub use self::request::{Action, ImportConfig, ImportRequest, Input, InputUrl, LoadRequest};
use crate::auth;
use crate::error::{Error, Result};
use crate::loading::{LoadOptions, Loader, Outcome};
use crate::model::session::{InventorySummary, PlanProgress};
pub use crate::model::SessionStatus;
use crate::model::{FileOptions, FileStatus, LoaderFile};
use crate::queue::{LoadMessage, MessageQueue};
use crate::resource_type::ResourceType;
use crate::sources::{Location, Source, UrlGuard};
use crate::storage::imports as store;
use crate::storage::Db;

/// One input as `GET /$import/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct InputView {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Where the file is read from (a URL's query string left out).
    pub url: String,
    pub status: FileStatus,
    pub loaded: u64,
    pub failed: u64,
    /// Lines loaded with findings of asynchronous validation (listed with the invalid
    /// lines at `GET /LoaderFile/{id}/$errors`, marked `loaded`).
    #[serde(skip_serializing_if = "is_zero")]
    pub flagged: u64,
    /// Lines committed so far (the checkpoint a resume continues from).
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Since when the input's worker stopped renewing its lease (it died); the sweep
    /// gets it going again.
    #[serde(rename = "stalledSince", skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<String>,
    /// The LoaderFile (its invalid lines: `GET /LoaderFile/{id}/$errors`).
    #[serde(rename = "loaderFile")]
    pub loader_file: String,
}

/// A session as the API shows it (never its secret).
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub id: String,
    pub status: SessionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub loaded: u64,
    pub failed: u64,
    /// One line for people and the `X-Progress` header.
    pub progress: String,
    pub inputs: Vec<InputView>,
    /// An inventory import's files by status (its `inputs` then list only the failed
    /// and missing ones, at most 100 of each: such a session may have millions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, i64>>,
    /// An inventory import: the manifest, and what the planning found so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryView>,
    /// A pull import (`$import-pnp`): the remote export and how far it got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<crate::model::pull::PullProgress>,
    pub created: String,
    pub updated: String,
}

fn input_view(f: LoaderFile) -> InputView {
    InputView {
        resource_type: f.resource_type.clone(),
        url: f.origin().to_string(),
        status: f.status,
        loaded: f.loaded,
        failed: f.failed,
        flagged: f.flagged,
        line: f.checkpoint.line,
        error: f.error.clone(),
        stalled_since: f.stalled_since(chrono::Utc::now()),
        loader_file: f.id,
    }
}

/// An inventory import on its session: the manifest's summary with the planning's
/// progress as `plan`.
#[derive(Clone, Debug, Serialize)]
pub struct InventoryView {
    #[serde(flatten)]
    pub summary: Option<InventorySummary>,
    pub plan: PlanProgress,
}

/// An inventory import's view: counts by status, the planning's progress, and the
/// failed and missing files.
fn inventory_view(
    id: &str,
    row: store::ImportRow,
    counts: Vec<(String, i64, i64, i64)>,
    listed: Vec<LoaderFile>,
) -> SessionView {
    let files: std::collections::BTreeMap<String, i64> =
        counts.iter().map(|(s, n, ..)| (s.clone(), *n)).collect();
    let total: i64 = files.values().sum();
    let done = files.get("done").copied().unwrap_or(0);
    let loaded = counts.iter().map(|c| c.2 as u64).sum();
    let failed = counts.iter().map(|c| c.3 as u64).sum();
    let plan = row.request.plan.unwrap_or_default();
    let planning = if plan.done {
        String::new()
    } else {
        format!(
            "planning ({} objects staged, {} queued), ",
            plan.staged,
            plan.new + plan.changed
        )
    };
    let progress = format!(
        "{}: {planning}{done}/{total} files done, {loaded} resources loaded, {failed} invalid lines",
        row.status.as_str()
    );
    let inventory = InventoryView {
        summary: row.request.inventory.clone(),
        plan,
    };
    SessionView {
        resource_type: "BulkImportSession",
        id: id.to_string(),
        status: row.status,
        error: row.error,
        loaded,
        failed,
        progress,
        inputs: listed.into_iter().map(input_view).collect(),
        files: Some(files),
        inventory: Some(inventory),
        pull: None,
        created: row.created,
        updated: row.updated,
    }
}

fn view(id: &str, row: store::ImportRow, files: Vec<LoaderFile>) -> SessionView {
    let done = files
        .iter()
        .filter(|f| f.status == FileStatus::Done)
        .count();
    let loaded = files.iter().map(|f| f.loaded).sum();
    let failed = files.iter().map(|f| f.failed).sum();
    let pull = row.request.pull.clone();
    let pulling = match &pull {
        Some(p) if !p.done => format!(
            "pulling ({}{}), ",
            p.stage,
            p.remote_progress
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        _ => String::new(),
    };
    let progress = format!(
        "{}: {pulling}{done}/{} inputs done, {loaded} resources loaded, {failed} invalid lines",
        row.status.as_str(),
        files.len()
    );
    SessionView {
        resource_type: "BulkImportSession",
        id: id.to_string(),
        status: row.status,
        error: row.error,
        loaded,
        failed,
        progress,
        inputs: files.into_iter().map(input_view).collect(),
        files: None,
        inventory: None,
        pull,
        created: row.created,
        updated: row.updated,
    }
}

/// The answer to a `$import` request: 201 when a session was created, else 200.
pub struct Acted {
    pub created: bool,
    pub session: SessionView,
}

/// The answer to a `$load`.
pub enum Loaded {
    /// Finished within the time budget.
    Finished {
        session: String,
        loaded: u64,
        failed: u64,
        /// Lines loaded with findings of asynchronous validation.
        flagged: u64,
    },
    /// Still loading: the session finishes the work.
    Continuing(Box<SessionView>),
}

/// The session service: what the API calls.
pub struct Imports {
    pub db: Db,
    /// The load queue.
    pub queue: Arc<dyn MessageQueue>,
    /// Reads inputs for `$load`'s synchronous part (buckets and URLs).
    pub source: Arc<dyn Source>,
    pub guard: Arc<dyn UrlGuard>,
    pub config: ImportConfig,
    /// How long `$load` loads inline before handing over to the queue (default 20 s:
    /// API Gateway answers 504 after 29 s).
    pub sync_budget: Duration,
    /// Verifies session secrets under the failure budget of client secrets.
    pub auth: Arc<auth::Authenticator>,
    /// The export queue, where a pull's planning runs (`force-resume` of a pull whose
    /// planning failed queues it again); `None` where no export worker is wired.
    pub task_queue: Option<Arc<dyn MessageQueue>>,
}

/// Who acts on a session, from where.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub who: &'a auth::Principal,
    /// The caller's address (the failure budget of session secrets is kept per source).
    pub source: Option<&'a str>,
}

/// The LoaderFile id of a session's n-th input.
pub fn input_file_id(session: &str, n: usize) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("siphon:import:{session}:{n}").as_bytes(),
    )
    .to_string()
}

/// Checks that `who` may write what a load of `inputs` writes: each typed input's
/// type, or some type when an input's lines name their own (each line is checked then).
fn require_writes(who: &auth::Principal, inputs: &[Input]) -> Result<()> {
    for input in inputs {
        match &input.resource_type {
            Some(t) => who.require_write(t.as_str())?,
            None => who.require_some_write()?,
        }
    }
    Ok(())
}

impl Imports {
    /// Handles `POST /$import`.
    pub async fn act(&self, body: &Value, caller: Caller<'_>) -> Result<Acted> {
        let request = request::parse_import(body, &self.config)?;
        if request.action == Action::Start {
            require_writes(caller.who, &request.inputs)?;
            let options = request.options;
            return self.start(request, options, caller.who).await;
        }
        let id = request.id.as_deref().expect("checked by parse_import");
        self.transition(id, request.action, request.secret.as_deref(), caller)
            .await?;
        Ok(Acted {
            created: false,
            session: self.view(id, caller.who).await?,
        })
    }

    /// `GET /$import/{id}`: 404 unless `who` owns the session (or is the admin).
    pub async fn view(&self, id: &str, who: &auth::Principal) -> Result<SessionView> {
        self.owned(id, who).await?;
        view_session(&self.db, id).await
    }

    /// 404 unless session `id` exists and `who` may see it.
    async fn owned(&self, id: &str, who: &auth::Principal) -> Result<store::ImportRow> {
        let client = self.db.client().await?;
        match store::read(&**client, id, false).await? {
            Some(row) if who.owns(row.owner.as_deref()) => Ok(row),
            _ => Err(not_found(id)),
        }
    }
}

/// A session as `GET /$import/{id}` shows it.
pub async fn view_session(db: &Db, id: &str) -> Result<SessionView> {
    {
        let client = db.client().await?;
        let row = store::read(&**client, id, false)
            .await?
            .ok_or_else(|| not_found(id))?;
        if row.request.is_inventory() {
            let counts = store::file_counts(&**client, id).await?;
            let mut listed = store::files_with_status(&**client, id, "error", 100).await?;
            listed.extend(store::files_with_status(&**client, id, "missing", 100).await?);
            return Ok(inventory_view(id, row, counts, listed));
        }
        let files = store::files(&**client, id).await?;
        Ok(view(id, row, files))
    }
}

impl Imports {
    /// `GET /$import`: the sessions of `owner` (`None`: all), newest first. A session
    /// that cannot be shown (a damaged row) is logged and left out, not the whole list.
    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SessionView>> {
        let ids = {
            let client = self.db.client().await?;
            store::ids(&**client, owner, limit, offset).await?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match view_session(&self.db, &id).await {
                Ok(v) => out.push(v),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::error!(session = id, error = %e, "cannot show an import session; left out of the list");
                }
            }
        }
        Ok(out)
    }

    async fn locations(&self, inputs: &[Input]) -> Result<Vec<Location>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (n, input) in inputs.iter().enumerate() {
            out.push(match &input.url {
                InputUrl::S3(o) => Location::S3(o.clone()),
                InputUrl::Web(url) => {
                    self.guard
                        .check(url)
                        .await
                        .map_err(|e| Error::BadRequest(format!("inputs[{n}]: {e}")))?;
                    Location::Url(url.clone())
                }
            });
        }
        Ok(out)
    }

    async fn create(
        &self,
        request: &ImportRequest,
        options: FileOptions,
        who: &auth::Principal,
    ) -> Result<(String, Vec<LoaderFile>)> {
        let locations = self.locations(&request.inputs).await?;
        let id = request
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let secret_hash = request
            .secret
            .as_deref()
            .map(auth::hash_secret)
            .transpose()?;
        let client = self.db.client().await?;
        let owner = who.job_owner();
        if !store::insert(
            &**client,
            &id,
            secret_hash.as_deref(),
            &request.stored,
            owner.as_deref(),
        )
        .await?
        {
            let status = store::read(&**client, &id, false)
                .await?
                .map(|r| r.status.as_str())
                .unwrap_or("unknown");
            return Err(Error::Conflict(format!(
                "import session {id} already exists (status {status}); choose another id"
            )));
        }
        drop(client);
        let files: Vec<LoaderFile> = request
            .inputs
            .iter()
            .zip(locations)
            .enumerate()
            .map(|(n, (input, location))| {
                let mut file = LoaderFile::pending_at(&location, options)
                    .owned_by(owner.clone(), who.writes());
                file.id = input_file_id(&id, n);
                file.import = Some(id.clone());
                file.input = Some(n as u32);
                file.resource_type = input
                    .resource_type
                    .as_ref()
                    .map(|t| t.as_str().to_string())
                    .or(file.resource_type);
                file
            })
            .collect();
        self.db.create_loader_files(&files).await?;
        tracing::info!(session = id, inputs = files.len(), "import session started");
        Ok((id, files))
    }

    async fn start(
        &self,
        request: ImportRequest,
        options: FileOptions,
        who: &auth::Principal,
    ) -> Result<Acted> {
        let (id, files) = self.create(&request, options, who).await?;
        self.enqueue(&id, &files).await?;
        Ok(Acted {
            created: true,
            session: view_session(&self.db, &id).await?,
        })
    }

    /// Queues the files; if that fails the session ends in `error` saying so.
    async fn enqueue(&self, id: &str, files: &[LoaderFile]) -> Result<()> {
        let messages: Vec<LoadMessage> = files
            .iter()
            .map(|f| LoadMessage::for_file(f, Default::default()))
            .collect();
        if let Err(e) = crate::queue::send(&*self.queue, &messages, None).await {
            tracing::error!(session = id, error = %e, "cannot queue the inputs");
            let client = self.db.client().await?;
            let why = format!("could not queue the inputs: {e}; use force-resume to retry");
            store::set_status(&**client, id, SessionStatus::Error, Some(&why)).await?;
            return Err(e);
        }
        Ok(())
    }

    /// Owner and secret first, outside any transaction: Argon2id runs on the blocking
    /// pool under the failure budget, with no row locked meanwhile.
    async fn check_secret(&self, id: &str, secret: Option<&str>, caller: Caller<'_>) -> Result<()> {
        let unlocked = self.owned(id, caller.who).await?;
        let Some(hash) = &unlocked.secret_hash else {
            return Ok(());
        };
        let ok = match secret {
            Some(s) => {
                self.auth
                    .verify_guarded(&format!("$import/{id}"), caller.source, s, hash)
                    .await?
            }
            None => false,
        };
        if !ok {
            return Err(Error::Forbidden(format!(
                "the secret does not match the one import session {id} was started with"
            )));
        }
        Ok(())
    }

    async fn transition(
        &self,
        id: &str,
        action: Action,
        secret: Option<&str>,
        caller: Caller<'_>,
    ) -> Result<()> {
        let change = action
            .change()
            .ok_or_else(|| Error::Internal("start creates a session".into()))?;
        self.check_secret(id, secret, caller).await?;
        let mut client = self.db.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let row = store::read(&tx, id, true)
            .await?
            .ok_or_else(|| not_found(id))?;
        let to = change.to;
        // An inventory import read with `account` keys: the keys travel only in its
        // queue messages, so once its files stop nothing could queue them again.
        let inventory = row.request.inventory.as_ref();
        if action == Action::Pause && inventory.is_some_and(|i| i.credentials) {
            return Err(Error::NotAcceptable(format!(
                "cannot pause import session {id}: it reads with `account` keys, which siphon never stores; abort it and start again"
            )));
        }
        if !change.from.contains(&row.status) {
            return Err(Error::NotAcceptable(format!(
                "cannot {} import session {id}: it is {}",
                change.verb,
                row.status.as_str()
            )));
        }
        store::set_status(&tx, id, to, None).await?;
        store::move_files(&tx, id, change.files_from, change.files_to).await?;
        let planning = match (action, &row.request.pull) {
            (Action::ForceResume, Some(pull)) => restart_pull_planning(&tx, id, pull).await?,
            _ => None,
        };
        if let Some(message) = planning {
            let queue = self.task_queue.as_ref().ok_or_else(|| {
                Error::Internal(
                    "a pull's planning runs on the export workers: set SIPHON_EXPORT_QUEUE_URL for the API"
                        .into(),
                )
            })?;
            // Before the commit: a worker's claim waits for it (see `restart_planning`).
            crate::queue::send(&**queue, &[message], None).await?;
        }
        let fed = inventory.is_some();
        let requeue: Vec<LoaderFile> = if fed {
            Vec::new()
        } else {
            store::files_with_status(&tx, id, FileStatus::Pending.as_str(), i64::MAX).await?
        };
        tx.commit().await?;
        if fed && to == SessionStatus::Active {
            // An inventory import's files are fed, `thread-num` at a time.
            let threads = inventory.map_or(4, |i| i.threads);
            crate::loading::feed::feed(&self.db, &*self.queue, id, threads, &Default::default())
                .await?;
        }
        tracing::info!(session = id, action = ?action, from = row.status.as_str(), to = to.as_str(), "import session changed");
        if to == SessionStatus::Active {
            if !requeue.is_empty() {
                self.enqueue(id, &requeue).await?;
            }
            // Every input may have finished while the session was paused.
            settle(&self.db, id).await?;
        }
        Ok(())
    }

    /// Handles `POST /$load` and `POST /{type}/$load`: one input, loaded here while the
    /// budget lasts, then handed to the queue.
    pub async fn load(
        &self,
        body: &Value,
        resource_type: Option<ResourceType>,
        who: &auth::Principal,
    ) -> Result<Loaded> {
        let load = request::parse_load(body)?;
        let request = ImportRequest {
            id: Some(format!("load-{}", uuid::Uuid::new_v4())),
            action: Action::Start,
            secret: None,
            inputs: vec![Input {
                resource_type,
                url: load.url,
            }],
            options: FileOptions::default(),
            stored: json!({"load": body}),
        };
        require_writes(who, &request.inputs)?;
        let options = FileOptions {
            strict: load.strict,
            validation: load.validation,
            ..FileOptions::default()
        };
        let started = Instant::now();
        let (id, files) = self.create(&request, options, who).await?;
        let file = &files[0];
        let loader = Loader::new(
            self.db.clone(),
            self.source.clone(),
            LoadOptions {
                deadline_margin: Duration::from_secs(1),
                ..LoadOptions::default()
            },
        );
        let deadline = started + self.sync_budget;
        // Boxed: a load's future is deep (source, decoder, batches), and this one runs
        // inside the API's request, on its stack.
        let outcome = Box::pin(loader.load(&file.id, Some(deadline))).await;
        if let Ok(Outcome::Done { .. } | Outcome::Failed { .. }) = &outcome {
            if options.validation.refs() {
                // The load has ended: its references resolve now, which may load parked
                // lines or fail them.
                crate::validation::resolve::finish(&self.db, &id).await?;
            }
            settle(&self.db, &id).await?;
        }
        match outcome {
            Ok(Outcome::Done { .. }) => {
                // The file's counts, with what resolving references made of them.
                let f =
                    self.db.loader_file(&file.id).await?.ok_or_else(|| {
                        Error::Internal(format!("LoaderFile {} vanished", file.id))
                    })?;
                Ok(Loaded::Finished {
                    session: id,
                    loaded: f.loaded,
                    failed: f.failed,
                    flagged: f.flagged,
                })
            }
            Ok(Outcome::Failed { message }) => Err(Error::BadRequest(format!(
                "{message} (import session {id})"
            ))),
            Ok(_) => {
                self.enqueue(&id, std::slice::from_ref(file)).await?;
                Ok(Loaded::Continuing(Box::new(
                    view_session(&self.db, &id).await?,
                )))
            }
            Err(e) if e.is_transient() => {
                // The queue retries what this call could not finish.
                self.enqueue(&id, std::slice::from_ref(file)).await?;
                Ok(Loaded::Continuing(Box::new(
                    view_session(&self.db, &id).await?,
                )))
            }
            Err(e) => Err(e),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("import session {id} not found"))
}

/// `force-resume` of a pull session, inside the caller's transaction: when its planning
/// ended in error, the planning is made pending again from its checkpoint
/// ([`PullCheckpoint::restarted`](crate::model::pull::PullCheckpoint::restarted): a new
/// kick-off unless manifest pages were taken) and the session shows it. Returns the
/// message that runs it, to send before the transaction commits (a worker's claim waits
/// for the commit; a commit that fails leaves the task in error, and the message finds
/// nothing to do). `None` when the planning did not fail.
async fn restart_pull_planning(
    tx: &tokio_postgres::Transaction<'_>,
    session: &str,
    progress: &crate::model::pull::PullProgress,
) -> Result<Option<crate::exporting::ExportMessage>> {
    let task = crate::model::pull::planning_task(session);
    let Some(mut checkpoint) = crate::storage::exports::failed_task(tx, &task).await? else {
        return Ok(None);
    };
    let pull = checkpoint.pull.take().unwrap_or_default().restarted();
    store::set_pull(tx, session, &progress.restarted(&pull)).await?;
    checkpoint.pull = Some(pull);
    crate::storage::exports::restart_task(tx, &task, &checkpoint).await?;
    tracing::info!(session, "pull planning restarted (force-resume)");
    Ok(Some(crate::exporting::ExportMessage {
        task,
        store: Default::default(),
    }))
}

/// Called by the loader when one of a session's files has finished (done or error),
/// and by an inventory import's planning when it ends: ends the session `done` when
/// every input is done (or, for an inventory, missing) and no planning is left, `error`
/// when one failed. Counts in SQL, so a session of a million files settles as fast.
pub async fn settle(db: &Db, import: &str) -> Result<()> {
    let mut client = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let tx = client.transaction().await?;
    let Some(row) = store::read(&tx, import, true).await? else {
        return Ok(());
    };
    if row.status != SessionStatus::Active {
        return Ok(());
    }
    let counts = store::file_counts(&tx, import).await?;
    let planning = row.request.is_planning();
    let failed = counts.iter().any(|(s, ..)| s == "error");
    if failed {
        let f = store::files_with_status(&tx, import, "error", 1)
            .await?
            .into_iter()
            .next();
        let why = match f {
            Some(f) => format!(
                "{} ({}{}) failed: {}",
                f.input
                    .map(|n| format!("input {n}"))
                    .unwrap_or_else(|| "file".into()),
                f.resource_type
                    .as_deref()
                    .map(|t| format!("{t} "))
                    .unwrap_or_default(),
                f.origin(),
                f.error.as_deref().unwrap_or("unknown error")
            ),
            None => "a file failed".into(),
        };
        tracing::error!(session = import, error = why, "import session failed");
        store::set_status(&tx, import, SessionStatus::Error, Some(&why)).await?;
    } else if !planning
        && counts
            .iter()
            .all(|(s, ..)| s == FileStatus::Done.as_str() || s == FileStatus::Missing.as_str())
    {
        let files: i64 = counts.iter().map(|(_, n, ..)| n).sum();
        tracing::info!(session = import, inputs = files, "import session done");
        store::set_status(&tx, import, SessionStatus::Done, None).await?;
        if row.request.submission.is_some() {
            // A completed submission takes no more requests: nothing will remove its
            // rows by their transactions now.
            crate::storage::submissions::forget_txids(&tx, import).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
