//! Clients and AccessPolicies: what authentication needs to know about a caller, and the
//! `jti` of client assertions already used.
//!
//! [`ClientStore`] is the port `auth` depends on; [`Db`] implements it on the `client`
//! and `accesspolicy` tables and `siphon_jti`, [`MemoryClients`] in memory for tests.

use crate::storage::statements::Statements;
use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use super::Db;
use super::{is_undefined_table, rows_or_empty};
use crate::error::{Error, Result};

/// One AccessPolicy linking a client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// `engine: allow`.
    pub engine_allow: bool,
    /// `scope`: a space-separated string or a list of strings, as written.
    pub scope: Option<Value>,
}

/// A Client as authentication reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientRecord {
    /// The Argon2id hash of its secret (Basic).
    pub secret_hash: Option<String>,
    /// `jwks`: its public keys, inline (SMART Backend Services).
    pub jwks: Option<Value>,
    /// `jwks_uri` (or `jwks_url`): where its public keys are published.
    pub jwks_uri: Option<String>,
    /// `bulkSubmit`, as written: how siphon authenticates to this client's servers
    /// when its submissions name an `oauthMetadataUrl` (`model::submission::ProviderAuth`).
    pub bulk_submit: Option<Value>,
    /// The AccessPolicies that link it.
    pub policies: Vec<Policy>,
    /// Changes whenever the client or one of its policies is written (their `txid`s):
    /// tokens issued under another generation stop working.
    pub generation: String,
}

/// What authentication reads and remembers.
pub trait ClientStore: Send + Sync {
    /// Client `id` with its policies (`None`: no such client).
    fn client<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ClientRecord>>>;
    /// Records that client `client_id` used assertion `jti`, valid until `expires`;
    /// `false` when it was used before (a replay). Expired entries are forgotten.
    fn remember_jti<'a>(
        &'a self,
        client_id: &'a str,
        jti: &'a str,
        expires: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool>>;
}

impl ClientStore for Db {
    fn client<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ClientRecord>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = match client
                .row_opt(
                    "SELECT txid, resource->>'secretHash', resource->'jwks',
                            coalesce(resource->>'jwks_uri', resource->>'jwks_url'),
                            resource->'bulkSubmit'
                       FROM public.\"client\" WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(Error::from)
            {
                Ok(Some(row)) => row,
                Ok(None) => return Ok(None),
                Err(e) if is_undefined_table(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let txid: i64 = row.get(0);
            let mut record = ClientRecord {
                secret_hash: row.get(1),
                jwks: row.get(2),
                jwks_uri: row.get(3),
                bulk_submit: row.get(4),
                policies: Vec::new(),
                generation: txid.to_string(),
            };
            let policies = rows_or_empty(
client
                .rows(
                    "SELECT txid, resource->>'engine' = 'allow', resource->'scope'
                       FROM public.\"accesspolicy\"
                      WHERE resource->'link' @> jsonb_build_array(jsonb_build_object('id', $1::text, 'resourceType', 'Client'))
                      ORDER BY id",
                    &[&id],
                )
                .await
                .map_err(Error::from),
            )?;
            for p in policies {
                let txid: i64 = p.get(0);
                record.generation.push_str(&format!(":{txid}"));
                record.policies.push(Policy {
                    engine_allow: p.get::<_, Option<bool>>(1).unwrap_or(false),
                    scope: p.get(2),
                });
            }
            Ok(Some(record))
        })
    }

    fn remember_jti<'a>(
        &'a self,
        client_id: &'a str,
        jti: &'a str,
        expires: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            // Forgetting expired entries costs one index range scan; a few per insert keep
            // the table at about the assertions of the last five minutes.
            client
                .run(
                    "DELETE FROM siphon_jti WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM siphon_jti WHERE expires_at < now() LIMIT 100))",
                    &[],
                )
                .await?;
            let n = client
                .run(
                    "INSERT INTO siphon_jti (client_id, jti, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (client_id, jti) DO NOTHING",
                    &[&client_id, &jti, &expires],
                )
                .await?;
            Ok(n == 1)
        })
    }
}

/// Clients held in memory, for tests.
#[derive(Default)]
pub struct MemoryClients {
    clients: Mutex<HashMap<String, ClientRecord>>,
    jtis: Mutex<HashMap<(String, String), DateTime<Utc>>>,
    writes: Mutex<u64>,
}

impl MemoryClients {
    /// Adds or replaces a Basic client: `allowed` links an `engine: allow` policy.
    pub fn put(&self, id: &str, secret_hash: Option<String>, allowed: bool) {
        self.put_record(
            id,
            ClientRecord {
                secret_hash,
                policies: if allowed {
                    vec![Policy {
                        engine_allow: true,
                        scope: None,
                    }]
                } else {
                    Vec::new()
                },
                ..ClientRecord::default()
            },
        );
    }

    /// Adds or replaces a client (a new generation each time, as a write would give).
    pub fn put_record(&self, id: &str, mut record: ClientRecord) {
        let mut writes = self.writes.lock().unwrap();
        *writes += 1;
        record.generation = writes.to_string();
        self.clients.lock().unwrap().insert(id.to_string(), record);
    }

    /// Removes a client.
    pub fn delete(&self, id: &str) {
        self.clients.lock().unwrap().remove(id);
    }
}

impl ClientStore for MemoryClients {
    fn client<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ClientRecord>>> {
        let record = self.clients.lock().unwrap().get(id).cloned();
        Box::pin(async move { Ok(record) })
    }

    fn remember_jti<'a>(
        &'a self,
        client_id: &'a str,
        jti: &'a str,
        expires: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool>> {
        let mut jtis = self.jtis.lock().unwrap();
        let now = Utc::now();
        jtis.retain(|_, e| *e >= now);
        let fresh = jtis
            .insert((client_id.to_string(), jti.to_string()), expires)
            .is_none();
        Box::pin(async move { Ok(fresh) })
    }
}
