//! `$import` sessions and `$load`.

use lambda_http::http::header::HeaderName;
use lambda_http::Request;
use serde_json::json;
use siphon::auth::Principal;
use siphon::sessions::{Caller, Loaded, SessionView};
use siphon::web::{Reply, StatusCode};
use siphon::{ResourceType, Result};

use crate::App;

const CONTENT_LOCATION: HeaderName = HeaderName::from_static("content-location");
const X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");

fn session_value(session: &SessionView) -> serde_json::Value {
    serde_json::to_value(session).unwrap_or_default()
}

/// `POST /$import`: 201 + content-location when a session starts, 200 for an action.
pub async fn import(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let caller = Caller {
        who,
        source: crate::source_ip(request),
    };
    let acted = app.imports.act(&super::body(request)?, caller).await?;
    let status = if acted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::value(status, session_value(&acted.session))
        .header(CONTENT_LOCATION, format!("/$import/{}", acted.session.id)))
}

/// `POST /$import-pnp`: a pull import from a remote Bulk Data server; 202 +
/// content-location of its `$import` session (poll it as a Bulk Data status URL).
pub async fn import_pnp(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let queue = app.task_queue.as_ref().ok_or_else(|| {
        siphon::Error::Internal(
            "pull imports run on the export workers: set SIPHON_EXPORT_QUEUE_URL for the API"
                .into(),
        )
    })?;
    let session = siphon::pulling::start(
        &app.db,
        queue.as_ref(),
        app.imports.guard.as_ref(),
        &app.remote_credentials,
        &super::body(request)?,
        who,
    )
    .await?;
    let base = siphon::web::base_url(request.headers(), app.public_url.as_deref());
    Ok(Reply::value(StatusCode::ACCEPTED, session_value(&session))
        .header(CONTENT_LOCATION, format!("{base}/$import/{}", session.id))
        .header(X_PROGRESS, session.progress.clone()))
}

/// `GET /$import/{id}`: as the FHIR Bulk Data status endpoint, 202 + X-Progress while the
/// job runs, 200 when it ended.
pub async fn view(app: &App, id: &str, who: &Principal) -> Result<Reply> {
    let session = app.imports.view(id, who).await?;
    if session.status.is_running() {
        Ok(Reply::value(StatusCode::ACCEPTED, session_value(&session))
            .header(X_PROGRESS, session.progress.clone()))
    } else {
        Ok(Reply::ok(session_value(&session)))
    }
}

/// `GET /$import`: the caller's sessions (the admin's: all, or `owner=` one client's),
/// newest first (`_count`, `_offset`).
pub async fn list(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let page = siphon::web::Paging::from_query(request.uri(), 50, 1000);
    let wanted = siphon::web::query_param(request.uri(), "owner");
    let owner = who.owner_filter(wanted.as_deref());
    let sessions = app.imports.list(owner, page.count, page.offset).await?;
    Ok(Reply::ok(json!({ "sessions": sessions })))
}

/// `POST /$load`, `POST /{type}/$load`.
pub async fn load(
    app: &App,
    request: &Request,
    ty: Option<&str>,
    who: &Principal,
) -> Result<Reply> {
    let ty = ty.map(ResourceType::parse).transpose()?;
    match app.imports.load(&super::body(request)?, ty, who).await? {
        Loaded::Finished {
            session,
            loaded,
            failed,
            flagged,
        } => {
            let mut answer = json!({"total": loaded, "failed": failed, "session": session});
            if flagged > 0 {
                answer["flagged"] = json!(flagged);
            }
            Ok(Reply::ok(answer).header(CONTENT_LOCATION, format!("/$import/{session}")))
        }
        Loaded::Continuing(session) => {
            Ok(Reply::value(StatusCode::ACCEPTED, session_value(&session))
                .header(CONTENT_LOCATION, format!("/$import/{}", session.id))
                .header(X_PROGRESS, session.progress.clone()))
        }
    }
}
