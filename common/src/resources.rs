//! Resources through the API: `PUT /` of a list (Clients and AccessPolicies in the seed
//! demo), reads and lists of any type, and a LoaderFile's invalid lines. Secrets are
//! hashed on the way in and never come back out.

use serde_json::{json, Value};

use crate::auth;
use crate::error::{Error, Result};
use crate::model::LoaderFile;
use crate::resource_type::ResourceType;
use crate::storage::Db;

/// A stored resource as the API shows it: without secrets, and a LoaderFile whose
/// worker stopped renewing its lease says since when it is `stalled`.
pub fn present(resource: Value) -> Value {
    let mut shown = auth::redact(resource);
    if shown["resourceType"] == "LoaderFile" {
        let since = serde_json::from_value::<LoaderFile>(shown.clone())
            .ok()
            .and_then(|f| f.stalled_since(chrono::Utc::now()));
        if let (Some(since), Some(obj)) = (since, shown.as_object_mut()) {
            obj.insert("stalled".into(), json!({"since": since}));
        }
    }
    shown
}

/// `PUT /`: stores every resource of the list (each needs `resourceType` and `id`) and
/// returns them as stored, without secrets. Checks every item before storing any.
pub async fn put_all(db: &Db, body: &Value) -> Result<Value> {
    let list = body
        .as_array()
        .ok_or_else(|| Error::BadRequest("PUT / takes a list of resources".into()))?;
    let mut items = Vec::with_capacity(list.len());
    for item in list {
        let ty = item
            .get("resourceType")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::BadRequest("each resource needs a resourceType".into()))?;
        let id = item
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::BadRequest("each resource needs an id".into()))?;
        items.push((ResourceType::parse(ty)?, id.to_string(), item));
    }
    let mut out = Vec::with_capacity(items.len());
    for (ty, id, item) in items {
        let stored = db
            .upsert(&ty, &id, &auth::protect(&ty, item.clone())?)
            .await?;
        out.push(present(stored.resource));
    }
    Ok(Value::Array(out))
}

/// `GET /{type}?field=value...`: a page of resources ordered by id whose top-level
/// fields equal the values given (`GET /LoaderFile?status=error&type=Patient`), as a
/// searchset Bundle. A parameter that is not a plain element name is refused.
pub async fn list(
    db: &Db,
    ty: &ResourceType,
    filters: &[(String, String)],
    count: i64,
    offset: i64,
) -> Result<Value> {
    for (name, _) in filters {
        let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain || name.len() > 64 {
            return Err(Error::BadRequest(format!(
                "search parameter {name:?} is not supported: use top-level element names (status=error)"
            )));
        }
    }
    let rows = db.list_where(ty, filters, count, offset).await?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"resource": present(r.resource)}))
        .collect();
    Ok(
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(),
              "entry": entries}),
    )
}

/// `GET /{type}/{id}`.
pub async fn read(db: &Db, ty: &ResourceType, id: &str) -> Result<Value> {
    match db.get(ty, id).await? {
        Some(r) => Ok(present(r.resource)),
        None => Err(Error::NotFound(format!("{ty}/{id} not found"))),
    }
}

/// `GET /LoaderFile/{id}/$errors`: a page of the file's invalid lines.
pub async fn loader_file_errors(db: &Db, id: &str, count: i64, offset: i64) -> Result<Value> {
    if db.loader_file(id).await?.is_none() {
        return Err(Error::NotFound(format!("LoaderFile {id} not found")));
    }
    let errors = db.loader_file_errors(id, count, offset).await?;
    let items: Vec<Value> = errors
        .iter()
        .map(|e| {
            let mut item = json!({"line": e.line, "reason": e.reason, "excerpt": e.excerpt});
            if e.loaded {
                // Found by asynchronous validation: the line is in its table all the same.
                item["loaded"] = json!(true);
            }
            item
        })
        .collect();
    Ok(json!({"file": id, "errors": items}))
}

/// `DELETE /LoaderFile/{id}`: forgets the file (and its invalid lines), so the next
/// load-from-bucket imports it again.
pub async fn delete_loader_file(db: &Db, id: &str) -> Result<Value> {
    if db.delete_loader_file(id).await? {
        Ok(json!({"message": format!("LoaderFile {id} deleted")}))
    } else {
        Err(Error::NotFound(format!("LoaderFile {id} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_files_say_when_they_stalled_and_hide_their_receipt() {
        let file = |status: &str, until: &str| {
            json!({"resourceType": "LoaderFile", "id": "f", "file": "k", "bucket": "b",
                   "status": status, "url": "https://h/x.ndjson?sig=1",
                   "lease": {"owner": "o", "until": until, "receipt": "AQEB-handle"}})
        };
        let stalled = present(file("in-progress", "2020-01-01T00:00:00Z"));
        assert_eq!(stalled["stalled"]["since"], "2020-01-01T00:00:00Z");
        assert!(stalled["lease"].get("receipt").is_none());
        assert_eq!(stalled["url"], "https://h/x.ndjson");
        let live = present(file("in-progress", "2999-01-01T00:00:00Z"));
        assert!(live.get("stalled").is_none());
        let done = present(file("done", "2020-01-01T00:00:00Z"));
        assert!(done.get("stalled").is_none());
        let client =
            present(json!({"resourceType": "Client", "id": "c", "secretHash": "$argon2id$x"}));
        assert!(client.get("secretHash").is_none());
    }
}
