//! References of loaded lines (`validation.checks: refs|all`): which targets exist, the
//! references still unresolved when their batch committed (`siphon_ref_pending`), the
//! lines held back until theirs resolve (`siphon_ref_parked`), and the transaction that
//! settles both once a whole load has ended.

use crate::storage::statements::Statements;
use std::collections::HashSet;

use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};

use super::batch::BatchTx;
use super::copy_in::{self, Chunk, ChunkResult};
use super::loader_file_table::TABLE as LOADER_FILES;
use super::Db;
use crate::error::Result;
use crate::model::{LineError, LoaderFile};
use crate::resource_type::ResourceType;

/// A reference to keep until the load ends.
#[derive(Clone, Debug)]
pub struct PendingRef<'a> {
    pub line: u64,
    /// The element holding it (`Observation.subject`).
    pub path: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    /// The line is parked (not loaded yet).
    pub parked: bool,
    /// The line's first 200 bytes.
    pub excerpt: &'a str,
}

/// A line held back until its references resolve.
#[derive(Clone, Debug)]
pub struct ParkedLine<'a> {
    pub line: u64,
    pub id: &'a str,
    /// The line's JSON, as sent.
    pub resource: &'a str,
}

/// A parked line taken out of `siphon_ref_parked`.
#[derive(Clone, Debug)]
pub struct Parked {
    pub file_id: String,
    pub line: u64,
    pub resource_type: String,
    pub id: String,
    pub resource: String,
}

/// A reference still unresolved when its load ended.
#[derive(Clone, Debug)]
pub struct Dangling {
    pub file_id: String,
    pub line: u64,
    pub path: String,
    pub target_type: String,
    pub target_id: String,
    pub parked: bool,
    pub excerpt: String,
}

/// Forgets the references and parked lines of files (reloaded or deleted).
pub(crate) async fn forget<C: GenericClient + Sync>(client: &C, file_ids: &[String]) -> Result<()> {
    client
        .run(
            "DELETE FROM siphon_ref_pending WHERE file_id = ANY($1)",
            &[&file_ids],
        )
        .await?;
    client
        .run(
            "DELETE FROM siphon_ref_parked WHERE file_id = ANY($1)",
            &[&file_ids],
        )
        .await?;
    Ok(())
}

/// Which of `ids` are in the table of `ty` (none when it has no table yet).
async fn existing<C: GenericClient + Sync>(
    client: &C,
    ty: &ResourceType,
    ids: &[&str],
) -> Result<HashSet<String>> {
    let table = client
        .row("SELECT to_regclass($1) IS NOT NULL", &[&ty.table_sql()])
        .await?;
    if !table.get::<_, bool>(0) {
        return Ok(HashSet::new());
    }
    let rows = client
        .rows(
            &format!(
                "SELECT id FROM {} WHERE id = ANY($1::text[])",
                ty.table_sql()
            ),
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

impl BatchTx<'_> {
    /// Which of `ids` exist in the table of `ty`, as this batch's transaction sees it.
    pub async fn existing_ids(&self, ty: &ResourceType, ids: &[&str]) -> Result<HashSet<String>> {
        existing(&self.tx, ty, ids).await
    }

    /// Keeps unresolved references, and parks lines (of type `ty`), for load `scope`.
    pub async fn keep_refs(
        &self,
        scope: &str,
        file_id: &str,
        refs: &[PendingRef<'_>],
        parked: &[(ResourceType, Vec<ParkedLine<'_>>)],
    ) -> Result<()> {
        if !refs.is_empty() {
            let lines: Vec<i64> = refs.iter().map(|r| r.line as i64).collect();
            let paths: Vec<&str> = refs.iter().map(|r| r.path).collect();
            let types: Vec<&str> = refs.iter().map(|r| r.target_type).collect();
            let ids: Vec<&str> = refs.iter().map(|r| r.target_id).collect();
            let flags: Vec<bool> = refs.iter().map(|r| r.parked).collect();
            let excerpts: Vec<&str> = refs.iter().map(|r| r.excerpt).collect();
            self.tx
                .run(
                    "INSERT INTO siphon_ref_pending
                        (scope, file_id, line, path, target_type, target_id, parked, excerpt)
                     SELECT $1, $2, * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[],
                        $7::bool[], $8::text[])",
                    &[
                        &scope, &file_id, &lines, &paths, &types, &ids, &flags, &excerpts,
                    ],
                )
                .await?;
        }
        for (ty, lines) in parked {
            let numbers: Vec<i64> = lines.iter().map(|l| l.line as i64).collect();
            let ids: Vec<&str> = lines.iter().map(|l| l.id).collect();
            let resources: Vec<&str> = lines.iter().map(|l| l.resource).collect();
            self.tx
                .run(
                    "INSERT INTO siphon_ref_parked (scope, file_id, line, resource_type, id, resource)
                     SELECT $1, $2, l, $3, i, r FROM unnest($4::bigint[], $5::text[], $6::text[]) AS p(l, i, r)
                     ON CONFLICT (file_id, line) DO NOTHING",
                    &[&scope, &file_id, &ty.as_str(), &numbers, &ids, &resources],
                )
                .await?;
        }
        Ok(())
    }
}

impl Db {
    /// Loads with references or parked lines waiting for their end.
    pub async fn ref_scopes(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT scope FROM siphon_ref_pending UNION SELECT scope FROM siphon_ref_parked",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// True when load `scope` has references or parked lines waiting.
    pub async fn refs_waiting(&self, scope: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .row(
                "SELECT EXISTS (SELECT 1 FROM siphon_ref_pending WHERE scope = $1)
                     OR EXISTS (SELECT 1 FROM siphon_ref_parked WHERE scope = $1)",
                &[&scope],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Opens the transaction that settles load `scope`'s references; one at a time per
    /// scope (an advisory lock held until it ends).
    pub async fn begin_refs<'a>(
        client: &'a mut tokio_postgres::Client,
        scope: &str,
    ) -> Result<RefsTx<'a>> {
        let tx = client.transaction().await?;
        tx.run(
            "SELECT pg_advisory_xact_lock(hashtext('siphon.refs.' || $1))",
            &[&scope],
        )
        .await?;
        Ok(RefsTx { tx })
    }
}

/// Settling one load's references: everything commits together or not at all.
pub struct RefsTx<'a> {
    tx: Transaction<'a>,
}

impl RefsTx<'_> {
    /// True when no file of `scope` (its `$import` session, load-from-bucket call, or
    /// the file itself) is still to load.
    pub async fn scope_finished(&self, scope: &str) -> Result<bool> {
        let row = self
            .tx
            .row(
                &format!(
                    "SELECT NOT EXISTS (SELECT 1 FROM {LOADER_FILES}
                     WHERE (resource->>'group' = $1 OR resource->>'import' = $1 OR id = $1)
                       AND resource->>'status' IN ('pending', 'in-progress', 'paused'))"
                ),
                &[&scope],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Drops the pending references of `scope` whose target now exists.
    pub async fn resolve_existing(&self, scope: &str) -> Result<()> {
        let types = self
            .tx
            .rows(
                "SELECT DISTINCT target_type FROM siphon_ref_pending WHERE scope = $1",
                &[&scope],
            )
            .await?;
        for row in types {
            let Ok(ty) = ResourceType::parse(row.get::<_, &str>(0)) else {
                continue; // not a table name: never exists
            };
            let table = self
                .tx
                .row("SELECT to_regclass($1) IS NOT NULL", &[&ty.table_sql()])
                .await?;
            if !table.get::<_, bool>(0) {
                continue;
            }
            self.tx
                .run(
                    &format!(
                        "DELETE FROM siphon_ref_pending p USING {} t
                         WHERE p.scope = $1 AND p.target_type = $2 AND t.id = p.target_id",
                        ty.table_sql()
                    ),
                    &[&scope, &ty.as_str()],
                )
                .await?;
        }
        Ok(())
    }

    /// Takes the parked lines of `scope`: with `ready`, only those whose references all
    /// resolved; else all that are left.
    pub async fn take_parked(&self, scope: &str, ready: bool) -> Result<Vec<Parked>> {
        let only_ready = if ready {
            "AND NOT EXISTS (SELECT 1 FROM siphon_ref_pending p
                             WHERE p.file_id = k.file_id AND p.line = k.line)"
        } else {
            ""
        };
        let rows = self
            .tx
            .rows(
                &format!(
                    "DELETE FROM siphon_ref_parked k WHERE k.scope = $1 {only_ready}
                     RETURNING file_id, line, resource_type, id, resource"
                ),
                &[&scope],
            )
            .await?;
        let mut parked: Vec<Parked> = rows
            .iter()
            .map(|r| Parked {
                file_id: r.get(0),
                line: r.get::<_, i64>(1) as u64,
                resource_type: r.get(2),
                id: r.get(3),
                resource: r.get(4),
            })
            .collect();
        parked.sort_by(|a, b| (&a.file_id, a.line).cmp(&(&b.file_id, b.line)));
        Ok(parked)
    }

    /// Takes the references of `scope` still unresolved.
    pub async fn take_dangling(&self, scope: &str) -> Result<Vec<Dangling>> {
        let rows = self
            .tx
            .rows(
                "DELETE FROM siphon_ref_pending WHERE scope = $1
                 RETURNING file_id, line, path, target_type, target_id, parked, excerpt",
                &[&scope],
            )
            .await?;
        let mut dangling: Vec<Dangling> = rows
            .iter()
            .map(|r| Dangling {
                file_id: r.get(0),
                line: r.get::<_, i64>(1) as u64,
                path: r.get(2),
                target_type: r.get(3),
                target_id: r.get(4),
                parked: r.get(5),
                excerpt: r.get(6),
            })
            .collect();
        dangling.sort_by(|a, b| (&a.file_id, a.line, &a.path).cmp(&(&b.file_id, b.line, &b.path)));
        Ok(dangling)
    }

    /// The next transaction id (for rows written now).
    pub async fn next_txid(&self) -> Result<i64> {
        super::resources::next_txid(&self.tx).await
    }

    /// Writes a chunk of parked lines into its table (see [`copy_in::write_chunk`]; the
    /// table exists: it was ensured when the lines were parked).
    pub async fn write(&self, chunk: Chunk, upsert: bool) -> Result<ChunkResult> {
        copy_in::write_chunk(&self.tx, chunk, upsert, false).await
    }

    /// The LoaderFiles `ids`, locked until the end of the transaction.
    pub async fn files(&self, ids: &[String]) -> Result<Vec<LoaderFile>> {
        let rows = self
            .tx
            .rows(
                &format!(
                    "SELECT resource || jsonb_build_object('id', id) FROM {LOADER_FILES}
                     WHERE id = ANY($1) ORDER BY id FOR UPDATE"
                ),
                &[&ids],
            )
            .await?;
        rows.iter()
            .map(|r| LoaderFile::from_value(r.get(0)))
            .collect()
    }

    /// Records invalid lines and findings, adding to what a line already has. Returns
    /// how many lines had nothing recorded before.
    pub async fn record(&self, file_id: &str, errors: &[LineError]) -> Result<u64> {
        if errors.is_empty() {
            return Ok(0);
        }
        let lines: Vec<i64> = errors.iter().map(|e| e.line as i64).collect();
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
        let excerpts: Vec<&str> = errors.iter().map(|e| e.excerpt.as_str()).collect();
        let loaded: Vec<bool> = errors.iter().map(|e| e.loaded).collect();
        let rows = self
            .tx
            .rows(
                "INSERT INTO siphon_loader_error AS e (file_id, line, reason, excerpt, loaded)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[])
                 ON CONFLICT (file_id, line) DO UPDATE
                    SET reason = e.reason || '; ' || excluded.reason, loaded = e.loaded AND excluded.loaded
                 RETURNING xmax = 0",
                &[&file_id, &lines, &reasons, &excerpts, &loaded],
            )
            .await?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
    }

    /// The files of `scope` that wait for it: parked lines or pending references.
    pub async fn scope_files_waiting(&self, scope: &str) -> Result<Vec<String>> {
        let rows = self
            .tx
            .rows(
                &format!(
                    "SELECT id FROM {LOADER_FILES}
                     WHERE (resource->>'group' = $1 OR resource->>'import' = $1 OR id = $1)
                       AND (resource ? 'parked' OR resource ? 'pendingRefs')"
                ),
                &[&scope],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Merges `patch` into LoaderFile `id` (it has ended: no lease to check), which then
    /// waits for nothing (no `parked`, no `pendingRefs`).
    pub async fn settle_file(&self, id: &str, patch: &Value) -> Result<()> {
        self.tx
            .run(
                &format!(
                    "UPDATE {LOADER_FILES} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = (resource || $2::jsonb) - 'parked' - 'pendingRefs'
                     WHERE id = $1"
                ),
                &[&id, patch],
            )
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
