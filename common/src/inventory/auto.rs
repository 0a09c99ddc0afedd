//! Automatic gradual import: an `Inventory` resource names a source bucket and where its
//! S3 Inventory is written; when S3 delivers the `manifest.checksum` of a new run under
//! that prefix (an S3 event through the events queue), the run is imported as
//! `load-from-bucket` with `inventory` would, so a bucket still in use stays in step
//! (daily, or weekly, as the inventory is configured).
//!
//! ```json
//! {"resourceType": "Inventory", "id": "daily",
//!  "bucket": "s3://source-bucket/data/",
//!  "inventory": "s3://inventory-bucket/inventories/source-bucket/daily/",
//!  "glob": "**/*.ndjson.gz", "thread-num": 4}
//! ```
//!
//! Any load-from-bucket param but `account` and `endpoint-url` may be set: automatic
//! imports read with the functions' own role, and no key is ever stored.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::fetch::split_url;
use crate::error::{Error, Result};
use crate::ingestion::bucket::LoadFromBucket;
use crate::ingestion::events::ManifestListener;
use crate::model::ObjectLocation;
use crate::queue::MessageQueue;
use crate::resource_type::ResourceType;
use crate::sources::s3::S3Source;
use crate::sources::UrlGuard;
use crate::storage::Db;

/// The resource type of configured inventories.
pub const INVENTORY: &str = "Inventory";

/// Starts the import of each new inventory run that a configured `Inventory` covers.
pub struct AutoImport {
    pub db: Db,
    /// The export queue (planning tasks).
    pub task_queue: Arc<dyn MessageQueue>,
    /// The functions' own S3 client.
    pub s3: S3Source,
    pub guard: Arc<dyn UrlGuard>,
}

/// The load-from-bucket params of a configured inventory, for the run at `manifest`.
fn params_of(resource: &serde_json::Value, manifest: &str) -> Result<LoadFromBucket> {
    let mut v = resource.clone();
    let id = v["id"].as_str().unwrap_or("?").to_string();
    if let Some(o) = v.as_object_mut() {
        for k in ["resourceType", "id", "meta"] {
            o.remove(k);
        }
        if o.contains_key("account") || o.contains_key("endpoint-url") {
            return Err(Error::BadRequest(format!(
                "Inventory/{id}: automatic imports read with the functions' role; remove account and endpoint-url"
            )));
        }
        o.insert("inventory".into(), manifest.into());
        o.remove("dry-run");
    }
    serde_json::from_value(v).map_err(|e| Error::BadRequest(format!("Inventory/{id}: {e}")))
}

impl AutoImport {
    async fn on_manifest(&self, checksum: &ObjectLocation) -> Result<()> {
        let manifest_key = checksum
            .key
            .strip_suffix("manifest.checksum")
            .map(|k| format!("{k}manifest.json"))
            .unwrap_or_else(|| checksum.key.clone());
        let manifest = format!("s3://{}/{manifest_key}", checksum.bucket);
        let ty = ResourceType::parse(INVENTORY)?;
        let configured = self.db.list(&ty, 1000, 0).await?;
        let mut matched = 0;
        for stored in configured {
            let Some(url) = stored.resource["inventory"].as_str() else {
                continue;
            };
            let Ok((bucket, prefix)) = split_url(url) else {
                continue;
            };
            if bucket != checksum.bucket || !checksum.key.starts_with(&prefix) {
                continue;
            }
            matched += 1;
            let id = stored.resource["id"].as_str().unwrap_or("?").to_string();
            let params = match params_of(&stored.resource, &manifest) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(inventory = id, error = %e, "a configured inventory cannot be imported");
                    continue;
                }
            };
            // One session per (inventory, run): S3 may deliver the event twice.
            let session = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("siphon:inventory:{id}:{manifest}").as_bytes(),
            )
            .to_string();
            let job = match super::prepare(&self.s3, &*self.guard, &params, &session).await {
                Ok(job) => job,
                Err(Error::BadRequest(why)) => {
                    // The run is damaged or incomplete: nothing to retry; say so.
                    tracing::error!(
                        inventory = id,
                        manifest,
                        error = why,
                        "the new inventory run cannot be imported"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            match super::begin(
                &self.db,
                &*self.task_queue,
                &job,
                params.store(),
                &format!("inventory:{id}"),
            )
            .await
            {
                Ok(()) => {}
                Err(Error::Conflict(_)) => {
                    tracing::info!(
                        inventory = id,
                        manifest,
                        "this run's import is already started"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        if matched == 0 {
            tracing::info!(
                manifest,
                "no configured Inventory covers this inventory run"
            );
        }
        Ok(())
    }
}

impl ManifestListener for AutoImport {
    fn manifest_written<'a>(&'a self, checksum: &'a ObjectLocation) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.on_manifest(checksum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_inventories_become_params_without_keys() {
        let r = json!({"resourceType": "Inventory", "id": "daily", "bucket": "s3://src/data/",
                       "inventory": "s3://inv/p/", "thread-num": 2});
        let p = params_of(&r, "s3://inv/p/2026-11-23T01-00Z/manifest.json").unwrap();
        assert_eq!(
            p.inventory.as_deref(),
            Some("s3://inv/p/2026-11-23T01-00Z/manifest.json")
        );
        assert_eq!(p.thread_num, Some(2));
        let mut bad = r.clone();
        bad["account"] = json!({"access-key-id": "a", "secret-access-key": "b"});
        assert!(params_of(&bad, "m").is_err());
        let mut unknown = r;
        unknown["bogus"] = json!(1);
        assert!(
            matches!(params_of(&unknown, "m"), Err(Error::BadRequest(m)) if m.contains("bogus"))
        );
    }
}
