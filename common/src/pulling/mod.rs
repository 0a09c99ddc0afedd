//! Pull imports (`$import-pnp`, Pathling's "ping and pull"): siphon is the Bulk Data
//! client of a remote FHIR server. It kicks the remote's export off, polls it, reads its
//! manifest pages, and loads every output file into its resource table exactly once, as
//! the inputs of an `$import` session (progress, pause, resume, abort as for any
//! session; abort also cancels the remote export).
//!
//! - [`request`]: the `$import-pnp` body.
//! - [`remote`]: the Bulk Data client (kick-off, status, pages, cancel).
//! - [`task`]: the planning task on the export workers.
//!
//! SMART Backend Services towards the remote (siphon's key, its tokens) is
//! `auth::remote`: the loader needs it too.
//!
//! The files themselves load through the loader like any `https` input; the token, when
//! the manifest says `requiresAccessToken`, goes only to the kick-off URL's origin.

pub mod remote;
pub mod request;
pub mod submission_request;
pub mod submit;
pub mod task;

use serde_json::Value;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::exporting::ExportMessage;
use crate::model::export::{ExportKind, TaskKind};
use crate::model::pull::{PullJob, PullProgress};
use crate::model::session::SessionRequest;
use crate::queue::{self, MessageQueue};
use crate::sessions::SessionView;
use crate::sources::UrlGuard;
use crate::storage::exports::NewTask;
use crate::storage::{imports, Db};

/// The one task of a pull job (a `$import-pnp` planning, or a submitted manifest).
fn planning_task() -> NewTask {
    NewTask {
        kind: TaskKind::Pull,
        resource_type: "pull".into(),
        part: 1,
        range_from: None,
        range_to: None,
    }
}

/// Starts a pull import from a `$import-pnp` body: checks the request and the kick-off
/// URL (400 before anything is stored or fetched), creates the session and its
/// planning task, and queues the task on the export queue (`task_queue`).
pub async fn start(
    db: &Db,
    task_queue: &dyn MessageQueue,
    guard: &dyn UrlGuard,
    credentials: &crate::auth::remote::RemoteCredentials,
    body: &Value,
    who: &Principal,
) -> Result<SessionView> {
    let request = request::parse(body)?;
    check_may_pull(&request, credentials, who)?;
    guard
        .check(&request.export_url)
        .await
        .map_err(|e| Error::BadRequest(format!("exportUrl: {e}")))?;
    let session = uuid::Uuid::new_v4().to_string();
    let owner = who.job_owner();
    let job = PullJob {
        session: session.clone(),
        export_url: request.export_url.clone(),
        auth: request.auth.clone(),
        request: request.export_url.clone(),
        owner: owner.clone(),
        writes: who.writes(),
        submitted: None,
        headers: Vec::new(),
    };
    create_session(db, &session, &request, owner.as_deref()).await?;
    let spec = serde_json::to_value(&job).map_err(|e| Error::Internal(e.to_string()))?;
    let task = planning_task();
    let job_owner = owner.clone().unwrap_or_else(|| who.client_id.clone());
    db.create_export(&session, ExportKind::Pull, &job_owner, &spec, &[task], &[])
        .await?;
    let message = ExportMessage {
        task: crate::model::pull::planning_task(&session),
        store: Default::default(),
    };
    if let Err(e) = queue::send(task_queue, &[message], None).await {
        let why = format!("could not queue the pull: {e}");
        let _ = db.cancel_export(&session).await;
        let client = db.client().await?;
        imports::set_status(
            &**client,
            &session,
            crate::model::SessionStatus::Error,
            Some(&why),
        )
        .await?;
        return Err(e);
    }
    tracing::info!(session, auth = request.auth.kind(), "pull import started");
    crate::sessions::view_session(db, &session).await
}

/// Whether `who` may start this pull: siphon signs as itself (smart) only for the admin
/// and only with its key configured; every type it writes must be writable by `who`.
fn check_may_pull(
    request: &request::PullRequest,
    credentials: &crate::auth::remote::RemoteCredentials,
    who: &Principal,
) -> Result<()> {
    if matches!(request.auth, crate::model::pull::RemoteAuth::Smart { .. }) {
        // siphon's key is the deployment's identity at the remote, not the caller's:
        // only the admin may have siphon sign with it. Other clients bring their own
        // credential (bearer, basic).
        who.require_admin("a pull with auth type smart (siphon signs as itself)")?;
        if !credentials.configured() {
            return Err(Error::BadRequest(
                "auth type smart needs siphon's own client key: set SIPHON_CLIENT_KEY or SIPHON_CLIENT_KEY_ARN".into(),
            ));
        }
    }
    if request.types.is_empty() {
        who.require_some_write()?;
    }
    for t in &request.types {
        who.require_write(t)?;
    }
    Ok(())
}

/// The pull's `$import` session, at its kick-off stage.
async fn create_session(
    db: &Db,
    session: &str,
    request: &request::PullRequest,
    owner: Option<&str>,
) -> Result<()> {
    let stored = SessionRequest {
        pull: Some(PullProgress {
            export_url: request.export_url.clone(),
            auth: request.auth.kind().into(),
            stage: "kick-off".into(),
            ..PullProgress::default()
        }),
        ..SessionRequest::default()
    };
    let stored = serde_json::to_value(&stored).map_err(|e| Error::Internal(e.to_string()))?;
    let client = db.client().await?;
    // The session has no file until the remote's manifest is read; its actions and
    // views look for them in the LoaderFile table.
    db.ensure_table(&**client, &crate::model::loader_file::loader_file_type())
        .await?;
    if !imports::insert(&**client, session, None, &stored, owner).await? {
        return Err(Error::Conflict(format!(
            "import session {session} already exists"
        )));
    }
    Ok(())
}
