//! `PUT /`, `GET /{type}`, `GET /{type}/{id}`, and a LoaderFile's `$errors` and deletion.

use lambda_http::Request;
use siphon::auth::Principal;
use siphon::web::{Paging, Reply};
use siphon::{resources, ResourceType, Result};

use crate::App;

pub async fn put(app: &App, request: &Request, who: &Principal) -> Result<Reply> {
    Ok(Reply::ok(
        resources::put_all(&app.db, &super::body(request)?, who).await?,
    ))
}

pub async fn list(app: &App, request: &Request, ty: &str, who: &Principal) -> Result<Reply> {
    let ty = ResourceType::parse(ty)?;
    let page = Paging::from_query(request.uri(), 100, 10_000);
    // Every parameter but _count/_offset is a top-level element to match.
    let filters: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    Ok(Reply::ok(
        resources::list(&app.db, &ty, &filters, page.count, page.offset, who).await?,
    ))
}

pub async fn read(app: &App, ty: &str, id: &str, who: &Principal) -> Result<Reply> {
    let ty = ResourceType::parse(ty)?;
    Ok(Reply::ok(resources::read(&app.db, &ty, id, who).await?))
}

pub async fn loader_file_errors(
    app: &App,
    request: &Request,
    id: &str,
    who: &Principal,
) -> Result<Reply> {
    let page = Paging::from_query(request.uri(), 1000, 100_000);
    Ok(Reply::ok(
        resources::loader_file_errors(&app.db, id, page.count, page.offset, who).await?,
    ))
}

pub async fn delete_loader_file(app: &App, id: &str) -> Result<Reply> {
    Ok(Reply::ok(resources::delete_loader_file(&app.db, id).await?))
}

fn dead(app: &App) -> Result<&siphon::dead_letters::DeadLetters> {
    app.dead_letters.as_ref().ok_or_else(|| {
        siphon::Error::Internal(
            "no dead-letter queues configured (SIPHON_LOAD_DLQ_URL, SIPHON_EXPORT_DLQ_URL)".into(),
        )
    })
}

/// `GET /$dead-letters`: what the queues gave up on.
pub async fn dead_letters(app: &App) -> Result<Reply> {
    let messages = dead(app)?.list(100).await?;
    Ok(Reply::ok(serde_json::json!({ "messages": messages })))
}

/// `POST /$dead-letters/{id}/$retry`: back on its queue.
pub async fn retry_dead_letter(app: &App, id: &str) -> Result<Reply> {
    Ok(Reply::ok(dead(app)?.retry(id).await?))
}
