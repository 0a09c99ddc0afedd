//! `PUT /`, `GET /{type}`, `GET /{type}/{id}`, and a LoaderFile's `$errors` and deletion.

use lambda_http::Request;
use siphon::web::{Paging, Reply};
use siphon::{resources, ResourceType, Result};

use crate::App;

pub async fn put(app: &App, request: &Request) -> Result<Reply> {
    Ok(Reply::ok(
        resources::put_all(&app.db, &super::body(request)?).await?,
    ))
}

pub async fn list(app: &App, request: &Request, ty: &str) -> Result<Reply> {
    let ty = ResourceType::parse(ty)?;
    let page = Paging::from_query(request.uri(), 100, 10_000);
    Ok(Reply::ok(
        resources::list(&app.db, &ty, page.count, page.offset).await?,
    ))
}

pub async fn read(app: &App, ty: &str, id: &str) -> Result<Reply> {
    let ty = ResourceType::parse(ty)?;
    Ok(Reply::ok(resources::read(&app.db, &ty, id).await?))
}

pub async fn loader_file_errors(app: &App, request: &Request, id: &str) -> Result<Reply> {
    let page = Paging::from_query(request.uri(), 1000, 100_000);
    Ok(Reply::ok(
        resources::loader_file_errors(&app.db, id, page.count, page.offset).await?,
    ))
}

pub async fn delete_loader_file(app: &App, id: &str) -> Result<Reply> {
    Ok(Reply::ok(resources::delete_loader_file(&app.db, id).await?))
}
