//! Resource tables: one per type, created on first use, and CRUD on any of them.
//!
//! Layout (Aidbox-compatible): `id text primary key, txid bigint, cts, ts, resource_type,
//! status (created|updated|deleted|recreated), resource jsonb`. Rows inserted by hand
//! without `id`/`resourceType` inside `resource` are first-class: reads fill them in.

use crate::storage::statements::Statements;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::is_undefined_table;
use super::pool::Db;
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;

/// The `CREATE TABLE` for a type. Only a validated [`ResourceType`] gets here.
pub fn table_ddl(ty: &ResourceType) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            id text PRIMARY KEY,
            txid bigint NOT NULL,
            cts timestamptz NOT NULL DEFAULT now(),
            ts timestamptz NOT NULL DEFAULT now(),
            resource_type text NOT NULL DEFAULT '{name}',
            status text NOT NULL,
            resource jsonb NOT NULL
        )",
        table = ty.table_sql(),
        name = ty.as_str(),
    )
}

/// The SQL expression that returns a row's resource with `id` and `resourceType` set.
pub const RESOURCE_WITH_ID: &str =
    "resource || jsonb_build_object('resourceType', resource_type, 'id', id)";

impl Db {
    /// Creates the table for `ty` if it does not exist, safely under concurrency (an
    /// advisory lock per table name stops two `CREATE TABLE IF NOT EXISTS` from colliding
    /// on the catalog). Remembered per pool, so warm invocations skip the DDL.
    pub async fn ensure_table<C: GenericClient + Sync>(
        &self,
        client: &C,
        ty: &ResourceType,
    ) -> Result<()> {
        let name = ty.table_name();
        if self.known_tables().lock().unwrap().contains(&name) {
            return Ok(());
        }
        // Resource tables are readable by siphon_reader (the `$dump-sql` role) when
        // that role exists; siphon's own tables (Client holds secret hashes) never are.
        let grant = if ty.is_system() {
            String::new()
        } else {
            format!(
                "IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'siphon_reader') THEN
                    GRANT SELECT ON {} TO siphon_reader;
                END IF;",
                ty.table_sql()
            )
        };
        // LoaderFiles are looked up by their object when imports are planned, by their
        // session, and by their group's busy and waiting files when files are fed.
        let lookups = if ty.as_str() == "LoaderFile" {
            format!(
                "CREATE INDEX IF NOT EXISTS loaderfile_object ON {t} ((resource->>'bucket'), (resource->>'file'));
                 CREATE INDEX IF NOT EXISTS loaderfile_import ON {t} ((resource->>'import'));
                 CREATE INDEX IF NOT EXISTS loaderfile_group_busy ON {t} ((resource->>'group'))
                    WHERE resource->>'status' = 'in-progress' OR (resource->>'status' = 'pending' AND resource ? 'queued');
                 CREATE INDEX IF NOT EXISTS loaderfile_group_waiting ON {t} ((resource->>'group'), id)
                    WHERE resource->>'status' = 'pending' AND NOT resource ? 'queued';",
                t = ty.table_sql()
            )
        } else {
            String::new()
        };
        // FHIR resource tables remember deleted rows for $export's deleted[].
        let tombstones = if crate::fhir::is_resource_type(ty.as_str()) {
            format!(
                "CREATE OR REPLACE TRIGGER siphon_tombstone AFTER DELETE ON {}
                    FOR EACH ROW EXECUTE FUNCTION siphon_tombstone();",
                ty.table_sql()
            )
        } else {
            String::new()
        };
        let sql = format!(
            "DO $siphon$ BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('siphon.table.{name}'));
            {ddl};
            {grant}
            {tombstones}
            {lookups}
        END $siphon$",
            ddl = table_ddl(ty)
        );
        client.batch_execute(&sql).await?;
        self.known_tables().lock().unwrap().insert(name);
        Ok(())
    }
}

/// A row as the API returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResource {
    pub id: String,
    pub txid: i64,
    pub cts: DateTime<Utc>,
    pub ts: DateTime<Utc>,
    pub status: String,
    /// The resource with `id` and `resourceType` filled in from the columns.
    pub resource: Value,
}

impl StoredResource {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        StoredResource {
            id: row.get(0),
            txid: row.get(1),
            cts: row.get(2),
            ts: row.get(3),
            status: row.get(4),
            resource: row.get(5),
        }
    }
}

const SELECT_COLUMNS: &str = "id, txid, cts, ts, status";

/// Next value of the shared transaction sequence.
pub async fn next_txid<C: GenericClient + Sync>(client: &C) -> Result<i64> {
    Ok(client
        .row("SELECT nextval('transaction_id_seq')", &[])
        .await?
        .get(0))
}

impl Db {
    /// Inserts or replaces `resource` (its `id` and `resourceType` are set from the
    /// arguments). Status is `created` for a new id, `updated` for an existing one.
    pub async fn upsert(
        &self,
        ty: &ResourceType,
        id: &str,
        resource: &Value,
    ) -> Result<StoredResource> {
        crate::model::ids::check_id(id).map_err(Error::BadRequest)?;
        let mut resource = resource.clone();
        let obj = resource
            .as_object_mut()
            .ok_or_else(|| Error::BadRequest("a resource must be a JSON object".into()))?;
        obj.insert("id".into(), Value::String(id.into()));
        obj.insert("resourceType".into(), Value::String(ty.as_str().into()));
        let client = self.client().await?;
        self.ensure_table(&**client, ty).await?;
        let sql = format!(
            "INSERT INTO {t} (id, txid, resource_type, status, resource)
             VALUES ($1, nextval('transaction_id_seq'), $2, 'created', $3)
             ON CONFLICT (id) DO UPDATE SET txid = excluded.txid, ts = now(),
                resource_type = excluded.resource_type, status = 'updated', resource = excluded.resource
             RETURNING {SELECT_COLUMNS}, {RESOURCE_WITH_ID}",
            t = ty.table_sql()
        );
        let row = client.row(&sql, &[&id, &ty.as_str(), &resource]).await?;
        Ok(StoredResource::from_row(&row))
    }

    /// One resource, or `None` (also when the type has no table yet).
    pub async fn get(&self, ty: &ResourceType, id: &str) -> Result<Option<StoredResource>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {SELECT_COLUMNS}, {RESOURCE_WITH_ID} FROM {} WHERE id = $1",
            ty.table_sql()
        );
        match client.row_opt(&sql, &[&id]).await.map_err(Error::from) {
            Ok(row) => Ok(row.as_ref().map(StoredResource::from_row)),
            Err(e) if is_undefined_table(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A page of resources ordered by id (empty when the type has no table yet).
    pub async fn list(
        &self,
        ty: &ResourceType,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<StoredResource>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {SELECT_COLUMNS}, {RESOURCE_WITH_ID} FROM {} ORDER BY id LIMIT $1 OFFSET $2",
            ty.table_sql()
        );
        match client
            .rows(&sql, &[&limit, &offset])
            .await
            .map_err(Error::from)
        {
            Ok(rows) => Ok(rows.iter().map(StoredResource::from_row).collect()),
            Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A page of resources whose top-level fields equal the given strings
    /// (`status=error`), ordered by id. Field names are checked by the caller.
    pub async fn list_where(
        &self,
        ty: &ResourceType,
        filters: &[(String, String)],
        limit: i64,
        offset: i64,
    ) -> Result<Vec<StoredResource>> {
        if filters.is_empty() {
            return self.list(ty, limit, offset).await;
        }
        let client = self.client().await?;
        let names: Vec<&str> = filters.iter().map(|(n, _)| n.as_str()).collect();
        let values: Vec<&str> = filters.iter().map(|(_, v)| v.as_str()).collect();
        let sql = format!(
            "SELECT {SELECT_COLUMNS}, {RESOURCE_WITH_ID} FROM {} r
             WHERE (SELECT bool_and(r.resource->>f.name = f.value)
                    FROM unnest($3::text[], $4::text[]) AS f(name, value))
             ORDER BY id LIMIT $1 OFFSET $2",
            ty.table_sql()
        );
        match client
            .rows(&sql, &[&limit, &offset, &names, &values])
            .await
            .map_err(Error::from)
        {
            Ok(rows) => Ok(rows.iter().map(StoredResource::from_row).collect()),
            Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Deletes one resource; `false` when it did not exist.
    pub async fn delete(&self, ty: &ResourceType, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {} WHERE id = $1", ty.table_sql());
        match client.run(&sql, &[&id]).await.map_err(Error::from) {
            Ok(n) => Ok(n > 0),
            Err(e) if is_undefined_table(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Number of rows of a type (0 when it has no table).
    pub async fn count(&self, ty: &ResourceType) -> Result<i64> {
        let client = self.client().await?;
        let sql = format!("SELECT count(*) FROM {}", ty.table_sql());
        match client.row(&sql, &[]).await.map_err(Error::from) {
            Ok(row) => Ok(row.get(0)),
            Err(e) if is_undefined_table(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
