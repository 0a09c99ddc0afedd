//! FHIR Bulk Data `$export`: kick-off (`/$export`, `/Patient/$export`,
//! `/Group/{id}/$export`), status and cancel (`/$export-status/{id}`), and the
//! CapabilityStatement (`/metadata`).

use lambda_http::http::header::{HeaderName, CONTENT_LOCATION, EXPIRES, RETRY_AFTER};
use lambda_http::Request;
use serde_json::json;
use siphon::auth::Principal;
use siphon::exporting::request::{self, KickOff, Level};
use siphon::exporting::{Exports, Status, StatusAnswer};
use siphon::web::{self, Reply, StatusCode};
use siphon::{Error, Result};

use crate::App;

const X_PROGRESS: HeaderName = HeaderName::from_static("x-progress");
/// The export's own status when the kick-off asked for `separate-export-status` (STU3).
const X_EXPORT_STATUS: HeaderName = HeaderName::from_static("x-export-status");
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

fn exports(app: &App) -> Result<&Exports> {
    app.exports.as_ref().ok_or_else(|| {
        Error::Internal(
            "exports are not configured: set SIPHON_EXPORT_BUCKET and SIPHON_EXPORT_QUEUE_URL"
                .into(),
        )
    })
}

fn fhir(status: StatusCode, body: serde_json::Value) -> Reply {
    Reply::raw(status, "application/fhir+json", body.to_string())
}

/// `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`:
/// 202 with the absolute status URL in `Content-Location`.
pub async fn kick_off(app: &App, req: &Request, who: &Principal, level: Level) -> Result<Reply> {
    let exports = exports(app)?;
    let headers = req.headers();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let parsed = request::parse(KickOff {
        post: req.method() == lambda_http::http::Method::POST,
        level,
        accept: headers.get("accept").and_then(|v| v.to_str().ok()),
        prefer: web::header_values(headers, "prefer"),
        query,
        body: Some(req.body().as_ref()),
        now: chrono::Utc::now(),
    })?;
    let base = web::base_url(headers, app.public_url.as_deref());
    let url = format!(
        "{base}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let separate = parsed.separate_status;
    let export = exports.kick_off(parsed, who, &url).await?;
    let outcome = web::operation_outcome(
        "information",
        "informational",
        &format!(
            "export {} started; poll the Content-Location URL",
            export.id
        ),
    );
    let reply = fhir(StatusCode::ACCEPTED, outcome).header(
        CONTENT_LOCATION,
        format!("{base}/$export-status/{}", export.id),
    );
    Ok(if separate {
        reply.header(PREFERENCE_APPLIED, "respond-async, separate-export-status")
    } else {
        reply
    })
}

/// `GET [status URL]`: 202 + X-Progress while running, 200 + the manifest when complete.
/// With `allowPartialManifests`, 202 carries the first page of the manifest of the files
/// finished so far, and `?page=N` (a page's `link`) answers page N.
pub async fn status(app: &App, req: &Request, id: &str, who: &Principal) -> Result<Reply> {
    let base = web::base_url(req.headers(), app.public_url.as_deref());
    let status = match web::query_param(req.uri(), "page") {
        Some(page) => {
            let n: usize = page
                .parse()
                .map_err(|_| Error::BadRequest(format!("page {page:?} is not a page number")))?;
            exports(app)?.page(id, who, n, &base).await?
        }
        None => exports(app)?.status(id, who, &base).await?,
    };
    let expires_header =
        |at: chrono::DateTime<chrono::Utc>| at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let StatusAnswer { status, separate } = status;
    let reply = match status {
        // With separate-export-status (STU3) the request itself succeeded: 200, and the
        // export's own status and OperationOutcome in X-Export-Status and the body.
        Status::Failed { message } if separate => {
            let outcome = web::operation_outcome("error", "exception", &message);
            return Ok(
                Reply::raw(StatusCode::OK, "application/fhir+json", outcome.to_string())
                    .header(X_EXPORT_STATUS, "500"),
            );
        }
        Status::Running { progress } => Ok(Reply {
            status: StatusCode::ACCEPTED,
            headers: Vec::new(),
            body: web::Body::Empty,
        }
        .header(X_PROGRESS, progress)
        .header(RETRY_AFTER, "2")),
        Status::Partial {
            manifest,
            expires,
            progress,
        } => Ok(Reply::raw(
            StatusCode::ACCEPTED,
            "application/json",
            manifest.to_string(),
        )
        .header(X_PROGRESS, progress)
        .header(RETRY_AFTER, "2")
        .header(EXPIRES, expires_header(expires))),
        Status::Complete { manifest, expires } => {
            Ok(
                Reply::raw(StatusCode::OK, "application/json", manifest.to_string())
                    .header(EXPIRES, expires_header(expires)),
            )
        }
        Status::Failed { message } => Err(Error::Internal(message)),
    }?;
    Ok(if separate {
        let export_status = reply.status.as_u16().to_string();
        Reply {
            status: StatusCode::OK,
            ..reply
        }
        .header(X_EXPORT_STATUS, export_status)
    } else {
        reply
    })
}

/// `GET /$export-status`: the caller's exports (every export for the admin).
pub async fn list(app: &App, req: &Request, who: &Principal) -> Result<Reply> {
    let page = web::Paging::from_query(req.uri(), 50, 1000);
    let exports = exports(app)?.list(who, page.count, page.offset).await?;
    Ok(Reply::ok(json!({ "exports": exports })))
}

/// `DELETE [status URL]`: 202 with an OperationOutcome (as `application/json`, the
/// status URL's type, unless `Accept` names `application/fhir+json`); the status then
/// answers 404.
pub async fn cancel(app: &App, req: &Request, id: &str, who: &Principal) -> Result<Reply> {
    exports(app)?.cancel(id, who).await?;
    let fhir_json = web::header_values(req.headers(), "accept")
        .iter()
        .any(|a| a.to_ascii_lowercase().contains("application/fhir+json"));
    let media = if fhir_json {
        "application/fhir+json"
    } else {
        "application/json"
    };
    let outcome = web::operation_outcome(
        "information",
        "informational",
        &format!("export {id} cancelled; its files are deleted"),
    );
    Ok(Reply::raw(StatusCode::ACCEPTED, media, outcome.to_string()))
}

/// The `rest.security` of the CapabilityStatement: SMART Backend Services with the
/// token endpoint (the `oauth-uris` extension) when tokens are issued, and HTTP Basic.
fn security(app: &App, req: &Request) -> serde_json::Value {
    if !app.auth.tokens_enabled() {
        return json!({"description": "HTTP Basic with a Client id and secret; export files are presigned S3 URLs (requiresAccessToken false)"});
    }
    json!({
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "token", "valueUri": super::smart::token_url(app, req)}]
        }],
        "service": [{
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "description": "SMART Backend Services (client credentials with a signed JWT assertion; see /.well-known/smart-configuration) or HTTP Basic with a Client id and secret; export files are presigned S3 URLs (requiresAccessToken false)"
    })
}

/// `rest.resource`: every R4 resource type (each can be exported; clients skip types
/// not listed) with the search parameters siphon evaluates for it, and the Patient- and
/// Group-level exports under the names the IG's CapabilityStatement gives them.
fn resources() -> Vec<serde_json::Value> {
    siphon::fhir::resource_types()
        .iter()
        .map(|ty| {
            let params: Vec<serde_json::Value> = siphon::fhir::search::params_of(ty)
                .into_iter()
                .map(|(name, kind)| json!({"name": name, "type": kind.as_str()}))
                .collect();
            let mut entry = json!({"type": ty, "searchParam": params});
            let operation = match ty.as_str() {
                "Patient" => Some(("patient-export", "patient-export")),
                "Group" => Some(("group-export", "group-export")),
                _ => None,
            };
            if let Some((name, definition)) = operation {
                entry["operation"] = json!([{"name": name,
                    "definition": format!("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{definition}"),
                    "documentation": output_formats()}]);
            }
            entry
        })
        .collect()
}

/// The `_outputFormat` values every export level accepts, as its operation's
/// `documentation` says them (the CapabilityStatement has no element of its own for them).
fn output_formats() -> String {
    format!(
        "_outputFormat: {} (ndjson by default; a text format followed by +gzip, as \
         application/fhir+ndjson+gzip, for gzip files; Parquet files hold the columns id, \
         resource_type, ts, txid, resource); organizeOutputBy: Patient (files of Patient \
         resource blocks, never split across files)",
        siphon::formats::accepted(siphon::formats::Exporter::Export)
    )
}

/// The CapabilityStatement of a Bulk Data server.
pub fn capability_statement(app: &App, req: &Request) -> Reply {
    let base = web::base_url(req.headers(), app.public_url.as_deref());
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "siphon", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "siphon: bulk import and export of FHIR ndjson between S3 and PostgreSQL", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": security(app, req),
            "resource": resources(),
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                           "documentation": output_formats()},
                          {"name": "bulk-submit", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit",
                           "documentation": "siphon as the Data Consumer: oauthMetadataUrl (the one registered on the calling Client) gets a SMART Backend Services token; fileRequestHeader is sent on the manifest's origin; fileEncryptionKey is refused"},
                          {"name": "bulk-submit-status", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit-status"}]
        }]
    });
    Reply::raw(
        StatusCode::OK,
        "application/fhir+json",
        statement.to_string(),
    )
}
