//! Planning an import: the objects a bucket listing or an S3 Inventory names are staged
//! (`siphon_plan_object`) and compared with the LoaderFiles in SQL: new (no LoaderFile),
//! changed (a LoaderFile with another ETag), unchanged, and gone (a LoaderFile of the
//! bucket and prefix that the plan no longer names).

use std::collections::BTreeMap;

use serde::Serialize;

use super::loader_files::TABLE as LOADER_FILES;
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
            .execute(
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
    /// `bucket` under `prefix` (not of `$import` sessions) the plan does not name.
    pub async fn plan_summary(
        &self,
        plan: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<PlanSummary> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let mut summary = PlanSummary::default();
        let rows = client
            .query(
                &format!(
                    "SELECT coalesce(o.resource_type, '(none)'),
                        CASE WHEN f.id IS NULL THEN 'new'
                             WHEN f.resource->>'etag' IS DISTINCT FROM o.etag THEN 'changed'
                             ELSE 'unchanged' END,
                        count(*), coalesce(sum(o.size), 0)::bigint
                     FROM siphon_plan_object o LEFT JOIN {LOADER_FILES} f ON f.id = o.file_id
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
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum((f.resource->>'size')::bigint), 0)::bigint
                     FROM {LOADER_FILES} f
                     WHERE f.resource->>'bucket' = $2 AND starts_with(f.resource->>'file', $3)
                       AND f.resource->>'import' IS NULL AND f.resource->>'url' IS NULL
                       AND NOT EXISTS (SELECT 1 FROM siphon_plan_object o WHERE o.plan = $1 AND o.file_id = f.id)"
                ),
                &[&plan, &bucket, &prefix],
            )
            .await?;
        summary.gone = Tally {
            files: gone.get(0),
            bytes: gone.get(1),
        };
        Ok(summary)
    }

    /// Forgets a plan's staged objects.
    pub async fn drop_plan(&self, plan: &str) -> Result<()> {
        let client = self.client().await?;
        match client
            .execute("DELETE FROM siphon_plan_object WHERE plan = $1", &[&plan])
            .await
            .map_err(Error::from)
        {
            Ok(_) => Ok(()),
            Err(e) if is_undefined_table(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
