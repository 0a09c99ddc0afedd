//! `$bulk-submit` submissions in Postgres: the submission document on its session
//! (`siphon_import.request.submission`), the transactions that wrote each submitted
//! file's rows (`siphon_file_txid`), and the removal of those rows.
//!
//! The API changes a submission under its session row's lock (read `FOR UPDATE`, write
//! back); workers change one manifest's fields with one `jsonb_set`, which Postgres
//! applies to the row as it is once the lock is free, so neither loses the other's
//! change.

use crate::storage::statements::Statements;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::loader_file_table::TABLE;
use crate::error::{Error, Result};
use crate::model::submission::{Submission, FILES_PER_MANIFEST};
use crate::model::LoaderFile;
use crate::ResourceType;

/// Serialises the requests of one submitter (the one-submission-at-a-time rule) until
/// the caller's transaction ends.
pub async fn lock_submitter<C: GenericClient + Sync>(
    client: &C,
    submitter_key: &str,
) -> Result<()> {
    client
        .run(
            "SELECT pg_advisory_xact_lock(hashtext('siphon:bulk-submit'), hashtext($1))",
            &[&submitter_key],
        )
        .await?;
    Ok(())
}

/// Another submission of the same submitter that is still running (its session active
/// or paused): its `submissionId`.
pub async fn running_of_submitter<C: GenericClient + Sync>(
    client: &C,
    submitter_key: &str,
    except: &str,
) -> Result<Option<String>> {
    Ok(client
        .row_opt(
            "SELECT request->'submission'->>'submissionId' FROM siphon_import
             WHERE request->'submission'->>'submitterKey' = $1 AND id <> $2
               AND status IN ('active', 'paused')
             LIMIT 1",
            &[&submitter_key, &except],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Writes the whole submission document (under the session's lock).
pub async fn set<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    submission: &Submission,
) -> Result<()> {
    let value = serde_json::to_value(submission).map_err(|e| Error::Internal(e.to_string()))?;
    client
        .run(
            "UPDATE siphon_import SET request = jsonb_set(request, '{submission}', $2), updated_at = now()
             WHERE id = $1",
            &[&id, &value],
        )
        .await?;
    Ok(())
}

/// Merges `patch` into the manifest at `place` (a worker's change).
pub async fn patch_manifest<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    place: u32,
    patch: &Value,
) -> Result<()> {
    let place = place as i32;
    client
        .run(
            "UPDATE siphon_import
             SET request = jsonb_set(request, ARRAY['submission', 'manifests', $2::text],
                                     (request->'submission'->'manifests'->$2) || $3),
                 updated_at = now()
             WHERE id = $1 AND jsonb_array_length(request->'submission'->'manifests') > $2",
            &[&id, &place, patch],
        )
        .await?;
    Ok(())
}

/// The files of session `session` whose inputs belong to the manifest at `place`.
pub async fn manifest_files<C: GenericClient + Sync>(
    client: &C,
    session: &str,
    place: u32,
) -> Result<Vec<LoaderFile>> {
    let from = (place as i64) * FILES_PER_MANIFEST as i64;
    let to = from + FILES_PER_MANIFEST as i64;
    let rows = super::rows_or_empty(
        client
            .rows(
                &format!(
                    "SELECT {} FROM {TABLE}
                     WHERE resource->>'import' = $1
                       AND (resource->>'input')::bigint >= $2 AND (resource->>'input')::bigint < $3
                     ORDER BY (resource->>'input')::bigint",
                    super::resources::RESOURCE_WITH_ID
                ),
                &[&session, &from, &to],
            )
            .await
            .map_err(Error::from),
    )?;
    Ok(super::loader_file_table::readable_files(
        &rows,
        "its submission",
    ))
}

/// Moves the files of the manifest at `place` whose status is one of `from` to `to`
/// (dropping any lease). Returns how many moved.
pub async fn move_manifest_files<C: GenericClient + Sync>(
    client: &C,
    session: &str,
    place: u32,
    from: &[&str],
    to: &str,
) -> Result<u64> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let first = (place as i64) * FILES_PER_MANIFEST as i64;
    let end = first + FILES_PER_MANIFEST as i64;
    let n = client
        .run(
            &format!(
                "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                    resource = (resource || jsonb_build_object('status', $3::text)) - 'lease' - 'queued'
                 WHERE resource->>'import' = $1 AND resource->>'status' = ANY($2)
                   AND (resource->>'input')::bigint >= $4 AND (resource->>'input')::bigint < $5"
            ),
            &[&session, &from, &to, &first, &end],
        )
        .await;
    match n.map_err(Error::from) {
        Ok(n) => Ok(n),
        Err(e) if super::is_undefined_table(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Deletes the rows that `files` wrote and that no later write replaced (their txid is
/// still one the files' batches used), in one transaction per resource type. Returns
/// how many rows went.
pub async fn remove_rows<C: GenericClient + Sync>(client: &C, files: &[LoaderFile]) -> Result<u64> {
    let mut types: Vec<&str> = files
        .iter()
        .filter_map(|f| f.resource_type.as_deref())
        .collect();
    types.sort_unstable();
    types.dedup();
    let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
    let mut removed = 0;
    for ty in types {
        let Ok(ty) = ResourceType::parse(ty) else {
            continue;
        };
        let sql = format!(
            "DELETE FROM {} WHERE txid IN (SELECT txid FROM siphon_file_txid WHERE file_id = ANY($1))",
            ty.table_sql()
        );
        match client.run(&sql, &[&ids]).await.map_err(Error::from) {
            Ok(n) => removed += n,
            Err(e) if super::is_undefined_table(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Forgets the transactions recorded for session `import`'s files: once its submission
/// has completed or been stopped, nothing removes its rows any more, and the records
/// would only grow. How many went.
pub async fn forget_txids<C: GenericClient + Sync>(client: &C, import: &str) -> Result<u64> {
    let sql = format!(
        "DELETE FROM siphon_file_txid WHERE file_id IN
           (SELECT id FROM {TABLE} WHERE resource->>'import' = $1)"
    );
    match client.run(&sql, &[&import]).await.map_err(Error::from) {
        Ok(n) => Ok(n),
        Err(e) if super::is_undefined_table(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Forgets `files`: their LoaderFiles, line errors and recorded transactions.
pub async fn forget_files<C: GenericClient + Sync>(client: &C, files: &[LoaderFile]) -> Result<()> {
    let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
    let owned: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    super::refs::forget(client, &owned).await?;
    client
        .run(
            "DELETE FROM siphon_file_txid WHERE file_id = ANY($1)",
            &[&ids],
        )
        .await?;
    client
        .run(
            "DELETE FROM siphon_loader_error WHERE file_id = ANY($1)",
            &[&ids],
        )
        .await?;
    client
        .run(&format!("DELETE FROM {TABLE} WHERE id = ANY($1)"), &[&ids])
        .await?;
    Ok(())
}
