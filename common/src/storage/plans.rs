//! Planning an import: the objects a bucket listing or an S3 Inventory names are staged
//! (`siphon_plan_object`) and compared with the LoaderFiles in SQL: new (no LoaderFile),
//! changed (a LoaderFile with another ETag), unchanged, and gone (a LoaderFile of the
//! bucket and prefix that the plan no longer names).

use crate::storage::statements::Statements;
use std::collections::BTreeMap;

use serde::Serialize;

use super::loader_file_table::TABLE as LOADER_FILES;
use super::{is_undefined_table, Db};
use crate::error::{Error, Result};
use crate::model::loader_file::loader_file_type;

/// One object to stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedObject {
    pub file_id: String,
    pub key: String,
    pub size: Option<i64>,
    pub etag: Option<String>,
    /// RFC 3339.
    pub modified: Option<String>,
    pub resource_type: Option<String>,
}

/// Files and bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub files: i64,
    pub bytes: i64,
}

/// What an import of a plan would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub files: i64,
    pub bytes: i64,
    /// By the type the file name names (`(none)` when it names none).
    pub types: BTreeMap<String, Tally>,
    pub new: Tally,
    pub changed: Tally,
    pub unchanged: Tally,
    /// LoaderFiles of the bucket and prefix the plan does not name.
    pub gone: Tally,
}

impl Db {
    /// Stages objects of `bucket` for plan `plan` (a key staged twice keeps the last).
    pub async fn stage_objects(
        &self,
        plan: &str,
        bucket: &str,
        objects: &[StagedObject],
    ) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let ids: Vec<&str> = objects.iter().map(|o| o.file_id.as_str()).collect();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let sizes: Vec<Option<i64>> = objects.iter().map(|o| o.size).collect();
        let etags: Vec<Option<&str>> = objects.iter().map(|o| o.etag.as_deref()).collect();
        let modified: Vec<Option<&str>> = objects.iter().map(|o| o.modified.as_deref()).collect();
        let types: Vec<Option<&str>> = objects.iter().map(|o| o.resource_type.as_deref()).collect();
        client
            .run(
                "INSERT INTO siphon_plan_object (plan, file_id, bucket, key, size, etag, modified, resource_type)
                 SELECT $1, i, $2, k, s, e, m::timestamptz, t
                 FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[]) AS o(i, k, s, e, m, t)
                 ON CONFLICT (plan, file_id) DO UPDATE SET size = excluded.size, etag = excluded.etag,
                    modified = excluded.modified",
                &[&plan, &bucket, &ids, &keys, &sizes, &etags, &modified, &types],
            )
            .await?;
        Ok(())
    }

    /// The summary of plan `plan` against the LoaderFiles; `gone` counts LoaderFiles of
    /// `bucket` under one of `prefixes` (not `$import` inputs) the plan does not name.
    pub async fn plan_summary(
        &self,
        plan: &str,
        bucket: &str,
        prefixes: &[String],
    ) -> Result<PlanSummary> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        summarize(&client, SHARED, plan, bucket, prefixes).await
    }

    /// A dry run's own staging table (see [`DryStage`]).
    pub async fn dry_stage(&self) -> Result<DryStage> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        // One transaction from here to `close`: behind a transaction pooler every
        // statement of the dry run then reaches the server connection holding the table.
        if let Err(e) = client
            .batch_execute(&format!(
                "BEGIN;
                 CREATE TEMP TABLE {SCRATCH} (LIKE {SHARED}) ON COMMIT DROP"
            ))
            .await
        {
            let _ = deadpool_postgres::Object::take(client);
            return Err(e.into());
        }
        Ok(DryStage {
            client: Some(client),
        })
    }

    /// Forgets a plan's staged objects.
    pub async fn drop_plan(&self, plan: &str) -> Result<()> {
        let client = self.client().await?;
        match client
            .run("DELETE FROM siphon_plan_object WHERE plan = $1", &[&plan])
            .await
            .map_err(Error::from)
        {
            Ok(_) => Ok(()),
            Err(e) if is_undefined_table(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What siphon knows of a staged object: the LoaderFile with the same id, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub etag: Option<String>,
    pub status: String,
    /// The `$import` session that last queued it.
    pub import: Option<String>,
    /// Marked gone by an earlier inventory.
    pub gone: bool,
}

/// A staged object beside its LoaderFile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedObject {
    pub object: StagedObject,
    pub existing: Option<Existing>,
}

impl Db {
    /// Stages inventory file `part` of plan `plan` with binary COPY (one round trip per
    /// call). A key listed twice is an error naming it.
    pub async fn stage_part(
        &self,
        plan: &str,
        bucket: &str,
        part: i32,
        objects: &[StagedObject],
    ) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sink = tx.copy_in(&copy_objects_sql(SHARED)).await?;
        copy_objects(sink, plan, bucket, part, objects).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets what part `part` of plan `plan` staged (before staging it again).
    pub async fn clear_part(&self, plan: &str, part: i32) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .run(
                "DELETE FROM siphon_plan_object WHERE plan = $1 AND part = $2",
                &[&plan, &part],
            )
            .await?)
    }

    /// Objects staged for plan `plan`.
    pub async fn plan_count(&self, plan: &str) -> Result<i64> {
        let client = self.client().await?;
        Ok(client
            .row(
                "SELECT count(*) FROM siphon_plan_object WHERE plan = $1",
                &[&plan],
            )
            .await?
            .get(0))
    }

    /// Compares plan `plan`'s staged objects with the LoaderFiles all at once (one hash
    /// join over both sets) and keeps what it found beside each object, for
    /// [`Db::plan_page`]. Running it again finds the same (or newer) answers.
    pub async fn compare_plan(&self, plan: &str) -> Result<u64> {
        let mut client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        // Fresh statistics, and no nested loop: a planner that takes either side for a
        // few rows looks a million objects up one by one.
        client.batch_execute("ANALYZE siphon_plan_object").await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL enable_nestloop = off").await?;
        let n = tx
            .run(
                &format!(
                    "UPDATE siphon_plan_object o SET existing = true,
                        existing_etag = l.resource->>'etag', existing_status = l.resource->>'status',
                        existing_import = l.resource->>'import', existing_gone = l.resource ? 'gone'
                     FROM {LOADER_FILES} l
                     WHERE o.plan = $1 AND l.id = o.file_id"
                ),
                &[&plan],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The next `limit` staged objects after `after` (in `file_id` order), each with
    /// what [`Db::compare_plan`] found of its LoaderFile.
    pub async fn plan_page(
        &self,
        plan: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PlannedObject>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT file_id, key, size, etag, to_json(modified)#>>'{}', resource_type,
                        existing IS TRUE, existing_etag, existing_status, existing_import, existing_gone
                 FROM siphon_plan_object WHERE plan = $1 AND file_id > $2
                 ORDER BY file_id LIMIT $3",
                &[&plan, &after.unwrap_or(""), &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PlannedObject {
                object: StagedObject {
                    file_id: r.get(0),
                    key: r.get(1),
                    size: r.get(2),
                    etag: r.get(3),
                    modified: r.get(4),
                    resource_type: r.get(5),
                },
                existing: r.get::<_, bool>(6).then(|| Existing {
                    etag: r.get(7),
                    status: r.get::<_, Option<String>>(8).unwrap_or_default(),
                    import: r.get(9),
                    gone: r.get::<_, Option<bool>>(10).unwrap_or(false),
                }),
            })
            .collect())
    }

    /// Marks `gone` the LoaderFiles of `bucket` under one of `prefixes` (bucket-listed
    /// or inventory files, not `$import` inputs) that plan `plan` does not name and that
    /// are not marked yet. Their rows stay. Returns how many were marked.
    pub async fn mark_gone(
        &self,
        plan: &str,
        bucket: &str,
        prefixes: &[String],
        inventory: &str,
    ) -> Result<u64> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        Ok(client
            .run(
                &format!(
                    "UPDATE {LOADER_FILES} f SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = f.resource || jsonb_build_object('gone',
                            jsonb_build_object('inventory', $4::text, 'at', now()))
                     WHERE f.resource->>'bucket' = $2
                       AND EXISTS (SELECT 1 FROM unnest($3::text[]) p WHERE starts_with(f.resource->>'file', p))
                       AND f.resource->>'url' IS NULL AND f.resource->>'input' IS NULL
                       AND NOT f.resource ? 'gone'
                       AND NOT EXISTS (SELECT 1 FROM siphon_plan_object o WHERE o.plan = $1 AND o.file_id = f.id)"
                ),
                &[&plan, &bucket, &prefixes, &inventory],
            )
            .await?)
    }
}

/// The summary of plan `plan` staged in `table` against the LoaderFiles.
async fn summarize(
    client: &tokio_postgres::Client,
    table: &str,
    plan: &str,
    bucket: &str,
    prefixes: &[String],
) -> Result<PlanSummary> {
    let mut summary = PlanSummary::default();
    let rows = client
        .rows(
            &format!(
                "SELECT coalesce(o.resource_type, '(none)'),
                    CASE WHEN f.id IS NULL THEN 'new'
                         WHEN f.resource->>'etag' IS DISTINCT FROM o.etag THEN 'changed'
                         ELSE 'unchanged' END,
                    count(*), coalesce(sum(o.size), 0)::bigint
                 FROM {table} o LEFT JOIN {LOADER_FILES} f ON f.id = o.file_id
                 WHERE o.plan = $1 GROUP BY 1, 2"
            ),
            &[&plan],
        )
        .await?;
    for r in rows {
        let (ty, state, n, bytes): (String, String, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        summary.files += n;
        summary.bytes += bytes;
        let t = summary.types.entry(ty).or_default();
        t.files += n;
        t.bytes += bytes;
        let tally = match state.as_str() {
            "new" => &mut summary.new,
            "changed" => &mut summary.changed,
            _ => &mut summary.unchanged,
        };
        tally.files += n;
        tally.bytes += bytes;
    }
    let gone = client
        .row(
            &format!(
                "SELECT count(*), coalesce(sum((f.resource->>'size')::bigint), 0)::bigint
                 FROM {LOADER_FILES} f
                 WHERE f.resource->>'bucket' = $2
                   AND EXISTS (SELECT 1 FROM unnest($3::text[]) p WHERE starts_with(f.resource->>'file', p))
                   AND f.resource->>'input' IS NULL AND f.resource->>'url' IS NULL
                   AND NOT EXISTS (SELECT 1 FROM {table} o WHERE o.plan = $1 AND o.file_id = f.id)"
            ),
            &[&plan, &bucket, &prefixes],
        )
        .await?;
    summary.gone = Tally {
        files: gone.get(0),
        bytes: gone.get(1),
    };
    Ok(summary)
}

/// The COPY that stages objects into `table` (the shared staging table or a dry run's
/// own). It is prepared as a named statement, so it always runs inside a transaction
/// (one server connection behind a transaction pooler).
fn copy_objects_sql(table: &str) -> String {
    format!(
        "COPY {table} (plan, file_id, bucket, key, size, etag, modified, resource_type, part)
         FROM STDIN (FORMAT binary)"
    )
}

/// Writes `objects` into a binary COPY opened with [`copy_objects_sql`].
async fn copy_objects(
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    plan: &str,
    bucket: &str,
    part: i32,
    objects: &[StagedObject],
) -> Result<()> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::{ToSql, Type};
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::INT4,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for o in objects {
        let modified = o
            .modified
            .as_deref()
            .and_then(|m| chrono::DateTime::parse_from_rfc3339(m).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let row: [&(dyn ToSql + Sync); 9] = [
            &plan,
            &o.file_id,
            &bucket,
            &o.key,
            &o.size,
            &o.etag,
            &modified,
            &o.resource_type,
            &part,
        ];
        writer.as_mut().write(&row).await.map_err(|e| {
            Error::Internal(format!(
                "cannot stage inventory objects: {}",
                crate::error::DbError::from(e)
            ))
        })?;
    }
    match writer.finish().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(Error::BadRequest(format!(
                "the inventory lists an object twice: {}",
                crate::error::DbError::from(e)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The staging table plans share (crash-safe: a planning resumes from what it staged).
const SHARED: &str = "siphon_plan_object";
/// A dry run's staging table: temporary, on one connection.
const SCRATCH: &str = "pg_temp.siphon_dry_object";

/// A dry run's own staging table: a temporary table in one transaction on one
/// connection, without indexes or write-ahead log, so staging a million objects costs
/// neither, and nothing is left to delete. [`DryStage::close`] rolls the transaction
/// (and the table) back; a stage dropped without `close` (an error on the way) takes its
/// connection out of the pool instead of handing the transaction on. The one transaction
/// is what keeps a dry run correct behind a transaction pooler: it holds one server
/// connection from the first COPY to the summary.
pub struct DryStage {
    client: Option<deadpool_postgres::Object>,
}

impl DryStage {
    fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("a dry stage is used until closed")
    }

    /// Stages `objects` (binary COPY). Keys listed twice are not looked for here (the
    /// import's planning refuses them).
    pub async fn stage(&self, plan: &str, bucket: &str, objects: &[StagedObject]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let sink = self.client().copy_in(&copy_objects_sql(SCRATCH)).await?;
        copy_objects(sink, plan, bucket, 0, objects).await
    }

    /// What an import of the staged objects would do (as [`Db::plan_summary`]).
    pub async fn summary(
        &self,
        plan: &str,
        bucket: &str,
        prefixes: &[String],
    ) -> Result<PlanSummary> {
        // Autovacuum never analyzes a temporary table, and the LoaderFiles a bulk import
        // has just written may not be analyzed yet either: with a side taken for one row,
        // the planner anti-joins a million staged objects row by row (minutes). Both
        // comparisons are joins of whole sets: hash them.
        let client = self.client();
        client
            .batch_execute(&format!(
                "ANALYZE {SCRATCH}; SET LOCAL enable_nestloop = off"
            ))
            .await?;
        summarize(client, SCRATCH, plan, bucket, prefixes).await
    }

    /// Rolls the dry run back (the table with it) and gives the connection back.
    pub async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            if let Err(e) = client.batch_execute("ROLLBACK").await {
                let _ = deadpool_postgres::Object::take(client);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Drop for DryStage {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Not closed: the connection still holds the table; it is not reused.
            let _ = deadpool_postgres::Object::take(client);
        }
    }
}
