//! `POST /rpc`: `aidbox.bulk/load-from-bucket` and `aidbox.bulk/load-from-bucket-status`.

use lambda_http::Request;
use serde_json::json;
use siphon::ingestion::bucket::{self, LoadFromBucket};
use siphon::web::Reply;
use siphon::{Error, Result};

use crate::App;

pub async fn call(app: &App, request: &Request) -> Result<Reply> {
    let body = super::body(request)?;
    let method = body
        .get("method")
        .and_then(|m| m.as_str())
        .ok_or_else(|| Error::BadRequest("the RPC body needs a string `method`".into()))?;
    let params = body.get("params").cloned().unwrap_or(json!({}));
    let result = match method {
        "aidbox.bulk/load-from-bucket" => {
            let params: LoadFromBucket = serde_json::from_value(params)
                .map_err(|e| Error::BadRequest(format!("invalid params: {e}")))?;
            let s3 = siphon::sources::s3::client(&params.store().s3_options()).await;
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
        "aidbox.bulk/load-from-bucket-status" => bucket::status(&app.db).await?,
        other => return Err(Error::BadRequest(format!("unknown method {other:?}"))),
    };
    Ok(Reply::ok(json!({ "result": result })))
}
