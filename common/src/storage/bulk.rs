//! Bulk mode for first loads (Aidbox's `disable-idx?` and `drop-primary-key?`): a
//! resource table's secondary indexes, and on an empty table its primary key, are dropped
//! while a load fills it and rebuilt once the load has ended.
//!
//! Crash safety: dropping and recording what was dropped (`siphon_bulk_table`) commit in
//! one transaction; so do rebuilding and forgetting. A table is therefore either whole,
//! or listed in `siphon_bulk_table` with everything needed to make it whole again, which
//! the last file of the load or the sweep does.

use crate::storage::statements::Statements;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::GenericClient;

use super::is_undefined_table;
use super::loader_file_table::TABLE as LOADER_FILES;
use super::Db;
use crate::error::{Error, Result};
use crate::resource_type::ResourceType;

/// An index dropped for a load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedIndex {
    pub name: String,
    /// Its `CREATE INDEX` statement, as Postgres printed it (`pg_get_indexdef`).
    pub def: String,
}

/// A table in bulk mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BulkTable {
    /// The resource type whose table it is.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The load holding it (a load-from-bucket group or an `$import` session).
    pub owner: String,
    pub indexes: Vec<DroppedIndex>,
    /// The primary key constraint's name, when it was dropped.
    #[serde(rename = "primaryKey", skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub since: String,
}

/// What rebuilding a table did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    /// The resource type whose table it is.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Indexes created again.
    pub indexes: usize,
    /// True when the primary key was added back.
    #[serde(rename = "primaryKey")]
    pub primary_key: bool,
    /// Rows removed because a later row of the load had the same id (the last one wins,
    /// as an upsert would have decided).
    pub duplicates: i64,
    /// Up to 100 of those ids.
    #[serde(rename = "duplicateIds")]
    pub duplicate_ids: Vec<String>,
}

/// A double-quoted SQL identifier (names come from the catalog, but quote anyway).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const SELECT: &str = "SELECT resource_type, owner, indexes, primary_key, note, to_json(created_at)#>>'{}' FROM siphon_bulk_table";

fn bulk_table(r: &tokio_postgres::Row) -> Result<BulkTable> {
    Ok(BulkTable {
        resource_type: r.get(0),
        owner: r.get(1),
        indexes: serde_json::from_value(r.get(2))
            .map_err(|e| Error::Internal(format!("unreadable siphon_bulk_table row: {e}")))?,
        primary_key: r.get(3),
        note: r.get(4),
        since: r.get(5),
    })
}

/// The table's secondary indexes: not the primary key (it has its own option), nor
/// indexes that back other constraints (unique, exclusion), which stay.
async fn secondary_indexes(
    tx: &tokio_postgres::Transaction<'_>,
    regclass: &str,
) -> Result<Vec<DroppedIndex>> {
    Ok(tx
        .rows(
            "SELECT i.relname::text, pg_get_indexdef(i.oid)
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = $1::text::regclass AND NOT x.indisprimary
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
             ORDER BY 1",
            &[&regclass],
        )
        .await?
        .iter()
        .map(|r| DroppedIndex {
            name: r.get(0),
            def: r.get(1),
        })
        .collect())
}

/// The primary key's name when it may be dropped (the table is empty), else a note
/// saying why it is kept.
async fn droppable_primary_key(
    tx: &tokio_postgres::Transaction<'_>,
    regclass: &str,
) -> Result<(Option<String>, Option<String>)> {
    let empty: bool = tx
        .row(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {regclass})"),
            &[],
        )
        .await?
        .get(0);
    let name: Option<String> = tx
        .row_opt(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p'",
            &[&regclass],
        )
        .await?
        .map(|r| r.get(0));
    Ok(match (empty, name) {
        (true, Some(name)) => (Some(name), None),
        (false, Some(_)) => (
            None,
            Some(
                "primary key kept: the table was not empty (drop-primary-key? is for first loads)"
                    .to_string(),
            ),
        ),
        (_, None) => (None, None),
    })
}

impl Db {
    /// Puts `ty`'s table in bulk mode for `owner`, once: drops its secondary indexes when
    /// `disable_indexes`, and its primary key when `drop_primary_key` and the table is
    /// empty. A table already held (by `owner` or another load) is left as it is.
    /// Returns the table's bulk state.
    pub async fn enter_bulk_mode(
        &self,
        ty: &ResourceType,
        owner: &str,
        disable_indexes: bool,
        drop_primary_key: bool,
    ) -> Result<BulkTable> {
        let mut client = self.client().await?;
        self.ensure_table(&**client, ty).await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let table = ty.as_str();
        tx.run(
            "SELECT pg_advisory_xact_lock(hashtext('siphon.table.' || lower($1)))",
            &[&table],
        )
        .await?;
        if let Some(row) = tx
            .row_opt(&format!("{SELECT} WHERE resource_type = $1"), &[&table])
            .await?
        {
            return bulk_table(&row);
        }
        let regclass = ty.table_sql();
        let indexes = if disable_indexes {
            secondary_indexes(&tx, &regclass).await?
        } else {
            Vec::new()
        };
        let (primary_key, note) = if drop_primary_key {
            droppable_primary_key(&tx, &regclass).await?
        } else {
            (None, None)
        };
        for index in &indexes {
            tx.batch_execute(&format!("DROP INDEX public.{}", ident(&index.name)))
                .await?;
        }
        if let Some(name) = &primary_key {
            tx.batch_execute(&format!(
                "ALTER TABLE {regclass} DROP CONSTRAINT {}",
                ident(name)
            ))
            .await?;
        }
        let row = tx
            .row(
                "INSERT INTO siphon_bulk_table (resource_type, owner, indexes, primary_key, note)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING resource_type, owner, indexes, primary_key, note, to_json(created_at)#>>'{}'",
                &[
                    &table,
                    &owner,
                    &serde_json::to_value(&indexes).unwrap_or_default(),
                    &primary_key,
                    &note,
                ],
            )
            .await?;
        tx.commit().await?;
        tracing::info!(
            table,
            owner,
            indexes = indexes.len(),
            primary_key_dropped = primary_key.is_some(),
            "table in bulk mode for the load"
        );
        bulk_table(&row)
    }

    /// Every table in bulk mode.
    pub async fn bulk_tables(&self) -> Result<Vec<BulkTable>> {
        let client = self.client().await?;
        client
            .rows(&format!("{SELECT} ORDER BY resource_type"), &[])
            .await?
            .iter()
            .map(bulk_table)
            .collect()
    }

    /// Whether no file of load `owner` can write table `resource_type` any more: none
    /// of its files of that type, or of mixed types, is pending, in progress or paused.
    pub async fn writers_ended(&self, owner: &str, resource_type: &str) -> Result<bool> {
        let client = self.client().await?;
        let unfinished = client
            .row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {LOADER_FILES}
                     WHERE (resource->>'group' = $1 OR resource->>'import' = $1)
                       AND (resource->>'type' IS NULL OR resource->>'type' = $2)
                       AND resource->>'status' IN ('pending', 'in-progress', 'paused'))"
                ),
                &[&owner, &resource_type],
            )
            .await
            .map_err(Error::from);
        match unfinished {
            Ok(row) => Ok(!row.get::<_, bool>(0)),
            Err(e) if is_undefined_table(&e) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Makes a table in bulk mode whole again: removes rows whose id a later row of the
    /// load repeats (highest txid, then the last written, wins), adds the primary key back,
    /// recreates the dropped indexes, and forgets the bulk state, in one transaction.
    /// `None` when the table was not in bulk mode (someone else rebuilt it).
    pub async fn leave_bulk_mode(&self, ty: &ResourceType) -> Result<Option<Rebuilt>> {
        let table = ty.as_str();
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .row_opt(
                &format!("{SELECT} WHERE resource_type = $1 FOR UPDATE"),
                &[&table],
            )
            .await?
        else {
            return Ok(None);
        };
        let state = bulk_table(&row)?;
        let regclass = ty.table_sql();
        let mut rebuilt = Rebuilt {
            resource_type: table.to_string(),
            ..Rebuilt::default()
        };
        if let Some(name) = &state.primary_key {
            let add = format!(
                "ALTER TABLE {regclass} ADD CONSTRAINT {} PRIMARY KEY (id)",
                ident(name)
            );
            // Usually no id repeats: build the key at once (one sort of the table), and
            // only when that finds a repeat, count and remove them (the newest row of
            // each id stays), then build it again.
            tx.batch_execute("SAVEPOINT siphon_primary_key").await?;
            match tx.batch_execute(&add).await {
                Ok(()) => {
                    tx.batch_execute("RELEASE SAVEPOINT siphon_primary_key")
                        .await?
                }
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT siphon_primary_key")
                        .await?;
                    let dups = duplicate_ids(&tx, &regclass).await?;
                    rebuilt.duplicates = dups.0;
                    rebuilt.duplicate_ids = dups.1;
                    tx.run(
                        &format!(
                            "DELETE FROM {regclass} a USING {regclass} b
                             WHERE a.id = b.id AND (a.txid, a.ctid) < (b.txid, b.ctid)"
                        ),
                        &[],
                    )
                    .await?;
                    tx.batch_execute(&add).await?;
                }
                Err(e) => return Err(e.into()),
            }
            rebuilt.primary_key = true;
        }
        for index in &state.indexes {
            tx.batch_execute(&index.def).await?;
            rebuilt.indexes += 1;
        }
        tx.run(
            "DELETE FROM siphon_bulk_table WHERE resource_type = $1",
            &[&table],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            table,
            owner = state.owner,
            indexes = rebuilt.indexes,
            primary_key = rebuilt.primary_key,
            duplicates = rebuilt.duplicates,
            "table rebuilt after its bulk load"
        );
        Ok(Some(rebuilt))
    }

    /// Records on every LoaderFile of load `owner` what the rebuild of its tables did.
    pub async fn note_rebuilt(&self, owner: &str, rebuilt: &[Rebuilt]) -> Result<()> {
        let client = self.client().await?;
        self.ensure_table(&**client, &crate::model::loader_file::loader_file_type())
            .await?;
        client
            .run(
                &format!(
                    "UPDATE {LOADER_FILES} SET resource = resource || jsonb_build_object('bulk',
                        coalesce(resource->'bulk', '[]'::jsonb) || $2::jsonb)
                     WHERE resource->>'group' = $1 OR resource->>'import' = $1"
                ),
                &[&owner, &json!(rebuilt)],
            )
            .await?;
        Ok(())
    }
}

/// How many rows repeat an id, and up to 100 such ids.
async fn duplicate_ids<C: GenericClient + Sync>(
    client: &C,
    regclass: &str,
) -> Result<(i64, Vec<String>)> {
    let row = client
        .row(
            &format!(
                "SELECT coalesce(sum(n - 1), 0)::bigint,
                        coalesce((array_agg(id ORDER BY id))[1:100], '{{}}')
                 FROM (SELECT id, count(*) AS n FROM {regclass} GROUP BY id HAVING count(*) > 1) d"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
