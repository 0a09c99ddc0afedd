//! `POST /rpc`: `aidbox.bulk/load-from-bucket`, `aidbox.bulk/load-from-bucket-status` and
//! `aidbox.bulk/dump-to-bucket`; the dump job's view and cancel
//! (`GET|DELETE /$dump-to-bucket/{id}`).

use lambda_http::http::header::{HeaderName, CONTENT_LOCATION};
use lambda_http::Request;
use serde_json::json;
use siphon::auth::Principal;
use siphon::exporting::bucket::{self as dump, DumpContext, DumpToBucket};
use siphon::ingestion::bucket::{self, LoadFromBucket};
use siphon::inventory;
use siphon::sinks::s3::S3Sink;
use siphon::sources::s3::S3Source;
use siphon::web::{self, Reply, StatusCode};
use siphon::{Error, Result};

use crate::App;

const X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");

pub async fn call(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    let body = super::body(request)?;
    let method = body
        .get("method")
        .and_then(|m| m.as_str())
        .ok_or_else(|| Error::BadRequest("the RPC body needs a string `method`".into()))?;
    let params = body.get("params").cloned().unwrap_or(json!({}));
    let result = match method {
        "aidbox.bulk/load-from-bucket" => {
            let mut params: LoadFromBucket = serde_json::from_value(params)
                .map_err(|e| Error::BadRequest(format!("invalid params: {e}")))?;
            // Each line is checked against what the caller may write when it loads.
            who.require_some_write()?;
            params.owner = who.job_owner();
            params.writes = who.writes();
            if params.inventory.is_some() {
                return from_inventory(app, request, &params, who).await;
            }
            let s3 = S3Source::new(
                siphon::sources::s3::client(&params.store().s3_options(&app.url_policy)).await?,
            );
            let started = bucket::load_from_bucket(
                &app.db,
                app.queue.as_ref(),
                &s3,
                app.imports.guard.as_ref(),
                &params,
            )
            .await?;
            json!(started)
        }
        "aidbox.bulk/load-from-bucket-status" => {
            let wanted = params.get("owner").and_then(|o| o.as_str());
            bucket::status(&app.db, who.owner_filter(wanted)).await?
        }
        "aidbox.bulk/dump-to-bucket" => return dump_to_bucket(app, request, params, who).await,
        other => return Err(Error::BadRequest(format!("unknown method {other:?}"))),
    };
    Ok(Reply::ok(json!({ "result": result })))
}

/// load-from-bucket with `inventory`: the dry run's answer (200), or an `$import`
/// session planning the import (202 + `content-location`).
async fn from_inventory(
    app: &App,
    request: &Request,
    params: &LoadFromBucket,
    who: &Principal,
) -> Result<Reply> {
    let store = params.store();
    let s3 = S3Source::new(if store.is_default() {
        app.s3.clone()
    } else {
        siphon::sources::s3::client(&store.s3_options(&app.url_policy)).await?
    });
    let guard = app.imports.guard.as_ref();
    if params.dry_run.unwrap_or(false) {
        let answer = inventory::dry_run(&app.db, &s3, guard, params).await?;
        return Ok(Reply::ok(json!({ "result": answer })));
    }
    let queue = app.task_queue.as_ref().ok_or_else(|| {
        Error::Internal(
            "inventory imports are planned on the export workers: set SIPHON_EXPORT_QUEUE_URL"
                .into(),
        )
    })?;
    let session =
        inventory::start(&app.db, queue.as_ref(), &s3, guard, params, &who.client_id).await?;
    let base = web::base_url(request.headers(), app.public_url.as_deref());
    let location = format!("{base}/$import/{}", session.id);
    Ok(Reply::value(
        StatusCode::ACCEPTED,
        json!({"result": {"message": "Inventory import started", "session": session, "location": location}}),
    )
    .header(X_PROGRESS, session.progress.clone())
    .header(CONTENT_LOCATION, location))
}

/// 202 + `content-location` of the job.
async fn dump_to_bucket(
    app: &App,
    request: &Request,
    params: serde_json::Value,
    who: &Principal,
) -> Result<Reply> {
    let params: DumpToBucket = serde_json::from_value(params)
        .map_err(|e| Error::BadRequest(format!("invalid params: {e}")))?;
    let exports = app.exports.as_ref().ok_or_else(|| {
        Error::Internal(
            "dump-to-bucket runs on the export workers: set SIPHON_EXPORT_BUCKET and SIPHON_EXPORT_QUEUE_URL"
                .into(),
        )
    })?;
    let (bucket, _) = params.bucket_and_prefix()?;
    let store = params.store();
    // Building a client sends nothing; the endpoint is checked by the guard first.
    let client = if store.is_default() {
        app.s3.clone()
    } else {
        siphon::sources::s3::client(&store.s3_options(&app.url_policy)).await?
    };
    let sink = S3Sink::new(client, &bucket);
    let ctx = DumpContext {
        db: &app.db,
        queue: exports.queue.as_ref(),
        sink: &sink,
        guard: app.imports.guard.as_ref(),
        timeout_ms: app.dump_sql_timeout_ms,
        range_rows: exports.config.range_rows,
        max_ranges: exports.config.max_ranges,
    };
    let export = dump::kick_off(ctx, &params, who).await?;
    let base = web::base_url(request.headers(), app.public_url.as_deref());
    let location = format!("{base}/$dump-to-bucket/{}", export.id);
    Ok(Reply::value(
        StatusCode::ACCEPTED,
        json!({"result": {"id": export.id, "status": export.status.as_str(), "location": location}}),
    )
    .header(CONTENT_LOCATION, location))
}

/// `GET /$dump-to-bucket/{id}`: 202 + `X-Progress` while it runs, 200 once it ended;
/// the body lists every written object, per-table counts and the marker.
pub async fn dump_view(app: &App, id: &str, who: &Principal) -> Result<Reply> {
    let view = dump::view(&app.db, id, who).await?;
    let progress = view["progress"].as_str().unwrap_or("").to_string();
    let status = if view["status"] == "active" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(Reply::value(status, view).header(X_PROGRESS, progress))
}

/// `DELETE /$dump-to-bucket/{id}`: 202; running tasks stop and delete their files.
pub async fn dump_cancel(app: &App, id: &str, who: &Principal) -> Result<Reply> {
    dump::cancel(&app.db, id, who).await?;
    Ok(Reply::value(
        StatusCode::ACCEPTED,
        json!({"message": format!("dump {id} cancelled; its partial files are being deleted")}),
    ))
}
