//! `$bulk-submit` and `$bulk-submit-status` (Bulk Data IG 4.0.0): siphon as the Data
//! Consumer. A Data Provider names manifests of Bulk Data files; siphon reads them and
//! loads every file exactly once, as the inputs of one `$import` session per submission.
//!
//! - Each submitted manifest is a pull job of the session (`model::submission::job_id`),
//!   run by the export workers like a `$import-pnp` planning, without kick-off or
//!   polling: its pages are read from `manifestUrl` and its files queued.
//! - `replacesManifestUrl`: the replaced manifest's job removes the rows its files wrote
//!   (`storage::submissions`), then the replacing manifest's files load.
//! - `stopped`: the session is aborted and every row the submission wrote is removed,
//!   before the answer.
//! - `completed`: the session ends once every manifest is read and every file loaded.
//! - A second submission of the same submitter while one runs: 429.
//! - `oauthMetadataUrl`: only the one an admin registered on the calling Client
//!   (`bulkSubmit`, `model::submission::ProviderAuth`); siphon then signs as the client id
//!   registered there (SMART Backend Services) and sends the token to the manifest's
//!   origin only. `fileRequestHeader`s go with every request on that origin.
//!
//! Rows that a submission overwrote are not brought back when it is removed: siphon keeps
//! no history (see `docs/pull-import.md`).

use serde_json::{json, Value};

use super::submission_request::{parse_status, parse_submit, SubmitRequest};
use crate::auth::remote::RemoteCredentials;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::exporting::ExportMessage;
use crate::model::export::ExportKind;
use crate::model::pull::{same_origin, PullJob, RemoteAuth, SubmittedJob};
use crate::model::session::SessionRequest;
use crate::model::submission::{
    self, ProviderAuth, Submission, SubmissionStatus, SubmittedManifest, MAX_MANIFESTS,
};
use crate::model::{FileStatus, LoaderFile, SessionStatus};
use crate::queue::{self, MessageQueue};
use crate::sources::UrlGuard;
use crate::storage::clients::ClientStore;
use crate::storage::{imports, submissions, Db};

/// The logical model a status manifest follows (`manifestType`).
pub const STATUS_MANIFEST_TYPE: &str =
    "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkSubmitStatusManifest";

/// Line errors of one file listed in its manifest's outcome file.
pub const OUTCOME_LINES_PER_FILE: i64 = 1000;

/// An OperationOutcome with one issue.
pub fn outcome(severity: &str, code: &str, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "details": {"text": text}}]
    })
}

/// What a `$bulk-submit` did, for its 200 answer.
pub struct Submitted {
    pub session: String,
    pub outcome: Value,
}

/// Handles `POST /$bulk-submit`.
pub async fn submit(
    db: &Db,
    task_queue: &dyn MessageQueue,
    guard: &dyn UrlGuard,
    credentials: &RemoteCredentials,
    body: &Value,
    who: &Principal,
) -> Result<Submitted> {
    let request = parse_submit(body)?;
    who.require_some_write()?;
    if let Some(url) = &request.manifest_url {
        guard
            .check(url)
            .await
            .map_err(|e| Error::BadRequest(format!("manifestUrl: {e}")))?;
    }
    let auth = manifest_auth(db, credentials, &request, who).await?;
    let ids = Ids::of(&who.client_id, &request);
    let session = ids.session.clone();

    let mut client = db.client().await?;
    let client: &mut tokio_postgres::Client = &mut client;
    let tx = client.transaction().await?;
    submissions::lock_submitter(&tx, &ids.submitter_key).await?;
    let mut sub = open(db, &tx, &request, &ids).await?;
    let mut done = Done::default();
    let replaced = replace(&mut sub, &request, &session, &mut done)?;
    add_manifest(
        &tx,
        &mut sub,
        &request,
        (replaced, auth),
        &ids,
        who,
        &mut done,
    )
    .await?;
    let status = request.status.unwrap_or(SubmissionStatus::InProgress);
    sub.status = status;
    if status == SubmissionStatus::Stopped {
        done.said.push(stop(&tx, &session, &mut sub).await?);
    }
    submissions::set(&tx, &session, &sub).await?;
    tx.commit().await?;

    for job in &done.jobs {
        let message = ExportMessage {
            task: format!("{job}/0"),
            store: Default::default(),
        };
        queue::send(task_queue, &[message], None).await?;
    }
    if status == SubmissionStatus::Completed {
        crate::sessions::settle(db, &session).await?;
        done.said
            .push("submission completed: it ends when every file has loaded".into());
    }
    if done.said.is_empty() {
        done.said.push(format!("submission is {}", status.as_str()));
    }
    Ok(Submitted {
        outcome: outcome("information", "informational", &done.said.join("; ")),
        session,
    })
}

/// How the manifest's job authenticates to its provider: with `oauthMetadataUrl`, as
/// the client id registered on the calling Client's `bulkSubmit`, if the URL is the one
/// registered there and the manifest is on its origin (the token goes nowhere else).
async fn manifest_auth(
    db: &Db,
    credentials: &RemoteCredentials,
    request: &SubmitRequest,
    who: &Principal,
) -> Result<RemoteAuth> {
    let (Some(asked), Some(manifest)) = (&request.oauth_metadata_url, &request.manifest_url) else {
        return Ok(RemoteAuth::None);
    };
    let bad = |m: String| Err(Error::BadRequest(m));
    let registered = ClientStore::client(db, &who.client_id)
        .await?
        .and_then(|c| c.bulk_submit);
    let Some(registered) = registered else {
        return bad(format!(
            "oauthMetadataUrl: client {:?} has no bulkSubmit registration saying how siphon authenticates to its servers (an admin adds one to the Client)",
            who.client_id
        ));
    };
    let registered = ProviderAuth::parse(&registered).map_err(Error::BadRequest)?;
    if !registered.names(asked) {
        return bad(format!(
            "oauthMetadataUrl {asked:?} is not the one registered for client {:?}",
            who.client_id
        ));
    }
    if !same_origin(asked, manifest) {
        return bad("manifestUrl must be on the oauthMetadataUrl's origin: siphon's token for the provider goes there only".into());
    }
    if !credentials.configured() {
        return bad("oauthMetadataUrl needs siphon's own client key: set SIPHON_CLIENT_KEY or SIPHON_CLIENT_KEY_ARN".into());
    }
    Ok(RemoteAuth::Smart {
        client_id: registered.client_id,
        scope: registered.scope,
        metadata: Some(registered.oauth_metadata_url),
    })
}

/// The names of one submission: its owner (the calling client), its key, its
/// submitter's key and its session.
struct Ids {
    owner: String,
    key: String,
    submitter_key: String,
    session: String,
}

impl Ids {
    fn of(owner: &str, request: &SubmitRequest) -> Self {
        let key = submission::key(owner, &request.submitter, &request.submission_id);
        Ids {
            owner: owner.to_string(),
            submitter_key: submission::submitter_key(owner, &request.submitter),
            session: submission::session_id(&key),
            key,
        }
    }
}

/// What one request did: what the answer says, and the pull jobs to wake after commit.
#[derive(Default)]
struct Done {
    said: Vec<String>,
    jobs: Vec<String>,
}

/// The submission the request is about, locked: the stored one (refused once it takes
/// no more requests), or a new one (refused while another of its submitter runs).
async fn open(
    db: &Db,
    tx: &tokio_postgres::Transaction<'_>,
    request: &SubmitRequest,
    ids: &Ids,
) -> Result<Box<Submission>> {
    let session = &ids.session;
    let Some(row) = imports::read(tx, session, true).await? else {
        return start(db, tx, request, ids).await;
    };
    let sub = row
        .request
        .submission
        .clone()
        .ok_or_else(|| Error::Internal(format!("session {session} is not a submission")))?;
    if sub.status != SubmissionStatus::InProgress {
        return Err(Error::Conflict(format!(
            "submission {:?} is {} already: it takes no more requests",
            sub.submission_id,
            sub.status.as_str()
        )));
    }
    if !row.status.is_running() && request.status != Some(SubmissionStatus::Stopped) {
        let why = row.error.clone().unwrap_or_default();
        return Err(Error::Conflict(format!(
            "submission {:?} ended ({}{}): only stopped is taken now",
            sub.submission_id,
            row.status.as_str(),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        )));
    }
    Ok(sub)
}

/// A new submission's session, when the request may start one.
async fn start(
    db: &Db,
    tx: &tokio_postgres::Transaction<'_>,
    request: &SubmitRequest,
    ids: &Ids,
) -> Result<Box<Submission>> {
    if request.status == Some(SubmissionStatus::Stopped) || request.replaces.is_some() {
        return Err(Error::NotFound(format!(
            "no submission {:?} of submitter {}",
            request.submission_id,
            request.submitter.label()
        )));
    }
    if let Some(other) =
        submissions::running_of_submitter(tx, &ids.submitter_key, &ids.session).await?
    {
        return Err(Error::Throttled {
            message: format!(
                "submission {other:?} of submitter {} is still in progress: one submission at a time",
                request.submitter.label()
            ),
            retry_after_secs: 60,
        });
    }
    let sub = Submission {
        submitter: request.submitter.clone(),
        submission_id: request.submission_id.clone(),
        key: ids.key.clone(),
        submitter_key: ids.submitter_key.clone(),
        status: SubmissionStatus::InProgress,
        manifests: Vec::new(),
        status_deleted: false,
    };
    let stored = SessionRequest {
        submission: Some(Box::new(sub.clone())),
        ..SessionRequest::default()
    };
    let stored = serde_json::to_value(&stored).map_err(|e| Error::Internal(e.to_string()))?;
    db.ensure_table(tx, &crate::model::loader_file::loader_file_type())
        .await?;
    imports::insert(tx, &ids.session, None, &stored, Some(&ids.owner)).await?;
    tracing::info!(
        session = ids.session,
        submitter = request.submitter.label(),
        submission = request.submission_id,
        "submission started"
    );
    Ok(Box::new(sub))
}

/// `replacesManifestUrl`: marks the manifest replaced and wakes its job, which removes
/// what it loaded. Its place, for the replacing manifest.
fn replace(
    sub: &mut Submission,
    request: &SubmitRequest,
    session: &str,
    done: &mut Done,
) -> Result<Option<u32>> {
    let Some(old) = &request.replaces else {
        return Ok(None);
    };
    let Some(m) = sub
        .manifests
        .iter_mut()
        .rev()
        .find(|m| &m.manifest_url == old && !m.replaced)
    else {
        return Err(Error::BadRequest(format!(
            "replacesManifestUrl {old:?} is no manifest of this submission (or was replaced already)"
        )));
    };
    m.replaced = true;
    // Woken after commit: it may be parked.
    done.jobs.push(m.job(session));
    done.said.push(format!(
        "manifest {old} is replaced: what it loaded is removed"
    ));
    Ok(Some(m.place))
}

/// `manifestUrl`: a new manifest and its pull job, or, for the same request again (its
/// answer was lost), nothing new but its job queued again in case the first queueing
/// failed.
async fn add_manifest(
    tx: &tokio_postgres::Transaction<'_>,
    sub: &mut Submission,
    request: &SubmitRequest,
    (replaced, auth): (Option<u32>, RemoteAuth),
    ids: &Ids,
    who: &Principal,
    done: &mut Done,
) -> Result<()> {
    let Some(url) = request.manifest_url.as_deref() else {
        return Ok(());
    };
    if let Some(m) = sub.manifest(url).filter(|m| !m.replaced) {
        done.jobs.push(m.job(&ids.session));
        done.said
            .push(format!("manifest {url} was submitted already"));
        return Ok(());
    }
    let place = sub.manifests.len() as u32;
    if place >= MAX_MANIFESTS {
        return Err(Error::BadRequest(format!(
            "a submission takes at most {MAX_MANIFESTS} manifests"
        )));
    }
    if let Some(r) = replaced {
        sub.manifests[r as usize].replaced_by = Some(place);
    }
    sub.manifests.push(SubmittedManifest {
        place,
        manifest_url: url.to_string(),
        fhir_base_url: request.fhir_base_url.clone().unwrap_or_default(),
        replaces: replaced,
        ..SubmittedManifest::default()
    });
    let job = PullJob {
        session: ids.session.clone(),
        export_url: url.to_string(),
        auth,
        request: url.to_string(),
        owner: Some(ids.owner.clone()),
        writes: who.writes(),
        submitted: Some(SubmittedJob {
            place,
            replaces: replaced,
        }),
        headers: request.headers.clone(),
    };
    create_job(tx, &job, place).await?;
    done.jobs.push(submission::job_id(&ids.session, place));
    done.said.push(format!("manifest {url} accepted"));
    Ok(())
}

/// `stopped`: the session aborted and every row the submission wrote removed, in the
/// request's transaction. What the answer says.
async fn stop(
    tx: &tokio_postgres::Transaction<'_>,
    session: &str,
    sub: &mut Submission,
) -> Result<String> {
    for m in sub.manifests.iter_mut() {
        m.removed = true;
    }
    imports::set_status(
        tx,
        session,
        SessionStatus::Aborted,
        Some("the submission was stopped"),
    )
    .await?;
    imports::move_files(
        tx,
        session,
        &["pending", "paused", "in-progress"],
        "aborted",
    )
    .await?;
    // The session row has been ours (`FOR UPDATE`) since the start: every batch that
    // held it (`FOR SHARE`) had committed before, and none commits after. So every row
    // the submission wrote is visible here, and its removal commits with the abort or
    // not at all (the provider sends `stopped` again).
    let files = imports::files(tx, session).await?;
    let removed = submissions::remove_rows(tx, &files).await?;
    // A stopped submission takes no more requests: its records have served.
    submissions::forget_txids(tx, session).await?;
    tracing::info!(session, removed, "submission stopped: its rows are removed");
    Ok(format!(
        "submission stopped: {removed} resources it loaded were removed"
    ))
}

/// The pull job of the manifest at `place`, in the submission's transaction.
async fn create_job(tx: &tokio_postgres::Transaction<'_>, job: &PullJob, place: u32) -> Result<()> {
    let spec = serde_json::to_value(job).map_err(|e| Error::Internal(e.to_string()))?;
    let task = super::planning_task();
    let owner = job.owner.as_deref().unwrap_or_default();
    crate::storage::exports::insert_export(
        tx,
        &submission::job_id(&job.session, place),
        ExportKind::Pull,
        owner,
        &spec,
        &[task],
        &[],
    )
    .await?;
    Ok(())
}

/// The submission a `$bulk-submit-status` body names, if `who` has it: its session id.
pub async fn find(db: &Db, body: &Value, who: &Principal) -> Result<String> {
    let (submitter, id) = parse_status(body)?;
    let key = submission::key(&who.client_id, &submitter, &id);
    let session = submission::session_id(&key);
    read(db, &session).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no submission {id:?} of submitter {}",
            submitter.label()
        ))
    })?;
    Ok(session)
}

/// A submission's session: its status, update time and document; `None` when there is
/// none (or its status was deleted).
async fn read(db: &Db, session: &str) -> Result<Option<(SessionStatus, String, Submission)>> {
    let client = db.client().await?;
    let row = imports::read(&**client, session, false).await?;
    Ok(row.and_then(|r| {
        let sub = r.request.submission?;
        (!sub.status_deleted).then_some((r.status, r.updated, *sub))
    }))
}

/// What the status URL answers.
pub enum StatusAnswer {
    /// 202, with `X-Progress`.
    Running(String),
    /// 200, the status manifest.
    Manifest(Value),
}

/// `GET` on a submission's status URL (`base` is siphon's public URL).
pub async fn status(db: &Db, session: &str, who: &Principal, base: &str) -> Result<StatusAnswer> {
    let (status, updated, sub) = owned(db, session, who).await?;
    if status.is_running() {
        let view = crate::sessions::view_session(db, session).await?;
        let waiting = if sub.status == SubmissionStatus::InProgress {
            "submission in progress (more manifests may come); "
        } else {
            ""
        };
        let progress: String = format!("{waiting}{}", view.progress)
            .chars()
            .take(99)
            .collect();
        return Ok(StatusAnswer::Running(progress));
    }
    let mut outcome = Vec::new();
    for m in &sub.manifests {
        let issues = manifest_outcomes(db, session, &sub, status, m).await?;
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for i in &issues {
            let severity = i["issue"][0]["severity"].as_str().unwrap_or("information");
            *counts.entry(severity.to_string()).or_default() += 1;
        }
        outcome.push(json!({
            "url": format!("{base}/$bulk-submit-status/{session}/outcome/{}", m.place),
            "manifestUrl": m.manifest_url,
            "count": issues.len(),
            "countSeverity": counts.iter().map(|(code, count)| json!({"code": code, "count": count})).collect::<Vec<_>>(),
        }));
    }
    Ok(StatusAnswer::Manifest(json!({
        "manifestType": STATUS_MANIFEST_TYPE,
        "submissionId": sub.submission_id,
        "transactionTime": updated,
        "requiresAccessToken": true,
        "outputFormat": "application/fhir+ndjson",
        "output": [],
        "outcome": outcome,
    })))
}

/// The outcome file of the manifest at `place`: OperationOutcomes as ndjson.
pub async fn outcome_file(db: &Db, session: &str, place: u32, who: &Principal) -> Result<String> {
    let (status, _, sub) = owned(db, session, who).await?;
    let m = sub
        .manifests
        .get(place as usize)
        .ok_or_else(|| Error::NotFound(format!("submission has no manifest {place}")))?;
    let mut out = String::new();
    for o in manifest_outcomes(db, session, &sub, status, m).await? {
        out.push_str(&o.to_string());
        out.push('\n');
    }
    Ok(out)
}

/// `DELETE` on the status URL: the status is gone (404) from then on; the data stays.
pub async fn delete_status(db: &Db, session: &str, who: &Principal) -> Result<()> {
    let (_, _, mut sub) = owned(db, session, who).await?;
    sub.status_deleted = true;
    let client = db.client().await?;
    submissions::set(&**client, session, &sub).await
}

async fn owned(
    db: &Db,
    session: &str,
    who: &Principal,
) -> Result<(SessionStatus, String, Submission)> {
    let gone = || Error::NotFound(format!("no submission status {session}"));
    let found = read(db, session).await?.ok_or_else(gone)?;
    let key_owner = serde_json::from_str::<Value>(&found.2.key)
        .ok()
        .and_then(|k| k[0].as_str().map(str::to_string));
    if !who.admin && key_owner.as_deref() != Some(who.client_id.as_str()) {
        return Err(gone());
    }
    Ok(found)
}

/// The OperationOutcomes of one manifest: what became of it, and of each of its files
/// (what loaded, each invalid line up to [`OUTCOME_LINES_PER_FILE`], a failure).
async fn manifest_outcomes(
    db: &Db,
    session: &str,
    sub: &Submission,
    status: SessionStatus,
    m: &SubmittedManifest,
) -> Result<Vec<Value>> {
    if let Some(ended) = manifest_ended(sub, m) {
        return Ok(vec![ended]);
    }
    let files = {
        let client = db.client().await?;
        submissions::manifest_files(&**client, session, m.place).await?
    };
    let mut out = Vec::new();
    let mut failed = false;
    for f in &files {
        let (said, ok) = file_outcome(f);
        out.push(said);
        failed |= !ok;
        if f.failed > 0 {
            let source = f.origin();
            for e in db
                .loader_file_errors(&f.id, OUTCOME_LINES_PER_FILE, 0)
                .await?
            {
                let mut o = outcome("error", "invalid", &e.reason);
                o["issue"][0]["diagnostics"] = json!(format!("{source} line {}", e.line));
                out.push(o);
            }
        }
    }
    if !failed && status == SessionStatus::Done {
        out.push(outcome(
            "information",
            "informational",
            &format!("Manifest {} successfully imported.", m.manifest_url),
        ));
    }
    Ok(out)
}

/// The one outcome of a manifest whose files no longer count: replaced, stopped with
/// its submission, or unreadable.
fn manifest_ended(sub: &Submission, m: &SubmittedManifest) -> Option<Value> {
    let url = &m.manifest_url;
    if m.replaced {
        let by = m
            .replaced_by
            .and_then(|p| sub.manifests.get(p as usize))
            .map(|n| format!(" by {}", n.manifest_url))
            .unwrap_or_default();
        let done = if m.removed {
            "were removed"
        } else {
            "are being removed"
        };
        return Some(outcome(
            "information",
            "informational",
            &format!("Manifest {url} was replaced{by}: the resources it loaded {done}."),
        ));
    }
    if sub.status == SubmissionStatus::Stopped {
        return Some(outcome(
            "information",
            "informational",
            &format!(
                "The submission was stopped: the resources manifest {url} loaded were removed."
            ),
        ));
    }
    m.error.as_ref().map(|e| {
        outcome(
            "error",
            "exception",
            &format!("Manifest {url} could not be read: {e}"),
        )
    })
}

/// What became of one file, and whether it loaded.
fn file_outcome(f: &LoaderFile) -> (Value, bool) {
    let source = f.origin();
    let ty = f.resource_type.as_deref().unwrap_or("?");
    match f.status {
        FileStatus::Done => (
            outcome(
                "information",
                "informational",
                &format!("{} {ty} resources loaded from {source}", f.loaded),
            ),
            true,
        ),
        FileStatus::Error => (
            outcome(
                "error",
                "exception",
                &format!(
                    "{source} could not be loaded: {}",
                    f.error.as_deref().unwrap_or("unknown error")
                ),
            ),
            false,
        ),
        other => (
            outcome(
                "warning",
                "incomplete",
                &format!("{source} was not loaded ({})", other.as_str()),
            ),
            false,
        ),
    }
}
