//! Resources through the API: `PUT /` of a list (Clients and AccessPolicies in the seed
//! demo), reads and lists of any type, and a LoaderFile's invalid lines. Secrets are
//! hashed on the way in and never come back out.

use serde_json::{json, Value};

use crate::auth::{self, scopes::Perm, Principal};
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

/// Fields no caller may filter on (`GET /Client?secretHash=...` would be an oracle).
const SECRET_FIELDS: [&str; 2] = ["secretHash", "secret"];

/// What `who` may write through `PUT /`: data types with create and update; Clients,
/// AccessPolicies and Inventories for the admin only; LoaderFiles never (siphon writes
/// them: their leases, stores, counts and recovery notes are its bookkeeping).
fn check_put(who: &Principal, ty: &ResourceType) -> Result<()> {
    match ty.as_str() {
        "LoaderFile" => Err(Error::BadRequest(
            "LoaderFiles are written by siphon only: start a load instead".into(),
        )),
        _ if ty.is_system() => {
            // Only the exact names: `CLIENT` would write the `client` table too.
            if !crate::resource_type::SYSTEM_TYPES.contains(&ty.as_str()) {
                return Err(Error::BadRequest(format!(
                    "{ty} names the table of one of siphon's own types; use its exact name"
                )));
            }
            who.require_admin(&format!("writing {ty} resources"))
        }
        _ => who.require_write(ty.as_str()),
    }
}

/// `PUT /`: stores every resource of the list (each needs `resourceType` and `id`) and
/// returns them as stored, without secrets. Checks every item (shape and rights) before
/// storing any.
pub async fn put_all(db: &Db, body: &Value, who: &Principal) -> Result<Value> {
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
        crate::model::ids::check_id(id).map_err(Error::BadRequest)?;
        let ty = ResourceType::parse(ty)?;
        check_put(who, &ty)?;
        let protected = auth::protect(&ty, item.clone())?;
        items.push((ty, id.to_string(), protected));
    }
    let mut out = Vec::with_capacity(items.len());
    for (ty, id, item) in items {
        let stored = db.upsert(&ty, &id, &item).await?;
        out.push(present(stored.resource));
    }
    Ok(Value::Array(out))
}

/// Whether `who` may read resources of `ty` at all (lists and reads): data types with
/// the read (or search) scope; LoaderFiles, each client its own; other system types
/// the admin only.
fn check_read(who: &Principal, ty: &ResourceType, p: Perm) -> Result<()> {
    if ty.as_str() == "LoaderFile" {
        return Ok(());
    }
    if ty.is_system() {
        return who.require_admin(&format!("reading {ty} resources"));
    }
    who.require(ty.as_str(), p)
}

/// `GET /{type}?field=value...`: a page of resources ordered by id whose top-level
/// fields equal the values given (`GET /LoaderFile?status=error&type=Patient`), as a
/// searchset Bundle. A parameter that is not a plain element name is refused. A client
/// lists only its own LoaderFiles (the admin: all, or `owner=` one client's).
pub async fn list(
    db: &Db,
    ty: &ResourceType,
    filters: &[(String, String)],
    count: i64,
    offset: i64,
    who: &Principal,
) -> Result<Value> {
    check_read(who, ty, Perm::Search)?;
    for (name, _) in filters {
        let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain || name.len() > 64 {
            return Err(Error::BadRequest(format!(
                "search parameter {name:?} is not supported: use top-level element names (status=error)"
            )));
        }
        if SECRET_FIELDS.contains(&name.as_str()) {
            return Err(Error::BadRequest(format!(
                "search parameter {name:?} is not supported"
            )));
        }
    }
    let mut filters = filters.to_vec();
    if ty.as_str() == "LoaderFile" && !who.admin {
        filters.retain(|(n, _)| n != "owner");
        filters.push(("owner".into(), who.client_id.clone()));
    }
    let rows = db.list_where(ty, &filters, count, offset).await?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"resource": present(r.resource)}))
        .collect();
    Ok(
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(),
              "entry": entries}),
    )
}

/// `GET /{type}/{id}`: 404 for a LoaderFile of another client, as for one that does
/// not exist.
pub async fn read(db: &Db, ty: &ResourceType, id: &str, who: &Principal) -> Result<Value> {
    check_read(who, ty, Perm::Read)?;
    match db.get(ty, id).await? {
        Some(r) if visible(who, ty, &r.resource) => Ok(present(r.resource)),
        _ => Err(Error::NotFound(format!("{ty}/{id} not found"))),
    }
}

/// True when `who` may see a stored resource of `ty` (its LoaderFiles: own ones only).
fn visible(who: &Principal, ty: &ResourceType, resource: &Value) -> bool {
    ty.as_str() != "LoaderFile" || who.owns(resource["owner"].as_str())
}

/// `GET /LoaderFile/{id}/$errors`: a page of the file's invalid lines (404 for a file
/// of another client).
pub async fn loader_file_errors(
    db: &Db,
    id: &str,
    count: i64,
    offset: i64,
    who: &Principal,
) -> Result<Value> {
    match db.loader_file(id).await? {
        Some(f) if who.owns(f.owner.as_deref()) => {}
        _ => return Err(Error::NotFound(format!("LoaderFile {id} not found"))),
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
