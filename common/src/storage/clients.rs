//! Clients and AccessPolicies: what authentication needs to know about a caller.
//!
//! [`ClientStore`] is the port `auth` depends on; [`Db`] implements it on the `client`
//! and `accesspolicy` tables, [`MemoryClients`] in memory for tests.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::is_undefined_table;
use super::Db;
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;

/// What authentication reads.
pub trait ClientStore: Send + Sync {
    /// The Argon2id hash of Client `id`'s secret (`None`: no such client, or no secret).
    fn secret_hash<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// True when an AccessPolicy with `engine: allow` links Client `id`.
    fn is_allowed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
}

impl ClientStore for Db {
    fn secret_hash<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let client_type = ResourceType::parse("Client").expect("valid");
            let stored = match self.get(&client_type, id).await {
                Ok(stored) => stored,
                Err(Error::BadRequest(_)) => None,
                Err(e) => return Err(e),
            };
            Ok(stored.and_then(|c| c.resource["secretHash"].as_str().map(str::to_string)))
        })
    }

    fn is_allowed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            match client
                .query_opt(
                    "SELECT 1 FROM public.\"accesspolicy\" WHERE resource->>'engine' = 'allow'
                       AND resource->'link' @> jsonb_build_array(jsonb_build_object('id', $1::text, 'resourceType', 'Client'))
                     LIMIT 1",
                    &[&id],
                )
                .await
                .map_err(Error::from)
            {
                Ok(row) => Ok(row.is_some()),
                Err(e) if is_undefined_table(&e) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

/// Clients held in memory: id -> (secret hash, allowed).
#[derive(Default)]
pub struct MemoryClients {
    clients: Mutex<HashMap<String, (Option<String>, bool)>>,
}

impl MemoryClients {
    /// Adds or replaces a client.
    pub fn put(&self, id: &str, secret_hash: Option<String>, allowed: bool) {
        self.clients
            .lock()
            .unwrap()
            .insert(id.to_string(), (secret_hash, allowed));
    }
}

impl ClientStore for MemoryClients {
    fn secret_hash<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        let hash = self
            .clients
            .lock()
            .unwrap()
            .get(id)
            .and_then(|(h, _)| h.clone());
        Box::pin(async move { Ok(hash) })
    }

    fn is_allowed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let allowed = self
            .clients
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|(_, a)| *a);
        Box::pin(async move { Ok(allowed) })
    }
}
