//! `$bulk-submit` and `$bulk-submit-status` (Bulk Data IG 4.0.0), siphon as the Data
//! Consumer: see `siphon::pulling::submit`.

use lambda_http::http::header::HeaderName;
use lambda_http::Request;
use siphon::auth::Principal;
use siphon::pulling::submit::{self, StatusAnswer};
use siphon::web::{Reply, StatusCode};
use siphon::{Error, Result};

use crate::App;

const CONTENT_LOCATION: HeaderName = HeaderName::from_static("content-location");
const X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// Routes `$bulk-submit` and `$bulk-submit-status` requests.
pub async fn route(
    app: &App,
    request: &Request,
    who: &Principal,
    segments: &[&str],
) -> Result<Reply> {
    use siphon::web::Method;
    match (request.method(), segments) {
        (&Method::POST, ["$bulk-submit"]) => submit(app, request, who).await,
        (&Method::POST, ["$bulk-submit-status"]) => status_kick_off(app, request, who).await,
        (&Method::GET, ["$bulk-submit-status", id]) => status(app, request, id, who).await,
        (&Method::DELETE, ["$bulk-submit-status", id]) => delete_status(app, id, who).await,
        (&Method::GET, ["$bulk-submit-status", id, "outcome", place]) => {
            outcome_file(app, id, place, who).await
        }
        _ => Err(Error::NotFound(format!(
            "no route for {} {}",
            request.method(),
            request.uri().path()
        ))),
    }
}

fn base(app: &App, request: &Request) -> String {
    siphon::web::base_url(request.headers(), app.public_url.as_deref())
}

/// `POST /$bulk-submit`: 200 with an OperationOutcome saying what was done.
pub async fn submit(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let queue = app.task_queue.as_ref().ok_or_else(|| {
        Error::Internal(
            "submitted manifests are read by the export workers: set SIPHON_EXPORT_QUEUE_URL for the API"
                .into(),
        )
    })?;
    // Boxed: the submission's future is large, and the router's would grow by it.
    let done = Box::pin(submit::submit(
        &app.db,
        queue.as_ref(),
        app.imports.guard.as_ref(),
        &app.remote_credentials,
        &super::body(request)?,
        who,
    ))
    .await?;
    Ok(Reply::ok(done.outcome).header(
        CONTENT_LOCATION,
        format!("{}/$import/{}", base(app, request), done.session),
    ))
}

/// `POST /$bulk-submit-status`: 202 + `Content-Location` of the submission's status URL.
pub async fn status_kick_off(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let session = Box::pin(submit::find(&app.db, &super::body(request)?, who)).await?;
    Ok(Reply::value(
        StatusCode::ACCEPTED,
        submit::outcome("information", "informational", "poll the Content-Location"),
    )
    .header(
        CONTENT_LOCATION,
        format!("{}/$bulk-submit-status/{session}", base(app, request)),
    ))
}

/// `GET /$bulk-submit-status/{id}`: 202 + `X-Progress` while the submission runs, then
/// 200 with its status manifest.
pub async fn status(app: &App, request: &Request, id: &str, who: &Principal) -> Result<Reply> {
    match Box::pin(submit::status(&app.db, id, who, &base(app, request))).await? {
        StatusAnswer::Running(progress) => {
            Ok(Reply::raw(StatusCode::ACCEPTED, "application/json", "")
                .header(X_PROGRESS, progress)
                .header(RETRY_AFTER, "5"))
        }
        StatusAnswer::Manifest(m) => Ok(Reply::ok(m)),
    }
}

/// `GET /$bulk-submit-status/{id}/outcome/{place}`: a manifest's OperationOutcomes.
pub async fn outcome_file(app: &App, id: &str, place: &str, who: &Principal) -> Result<Reply> {
    let place: u32 = place
        .parse()
        .map_err(|_| Error::NotFound(format!("no outcome file {place:?}")))?;
    let body = Box::pin(submit::outcome_file(&app.db, id, place, who)).await?;
    Ok(Reply::raw(StatusCode::OK, "application/fhir+ndjson", body))
}

/// `DELETE /$bulk-submit-status/{id}`: 202; the status URL answers 404 from then on.
pub async fn delete_status(app: &App, id: &str, who: &Principal) -> Result<Reply> {
    Box::pin(submit::delete_status(&app.db, id, who)).await?;
    Ok(Reply::value(
        StatusCode::ACCEPTED,
        submit::outcome("information", "informational", "submission status deleted"),
    ))
}
