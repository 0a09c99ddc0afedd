//! `$import` sessions in Postgres (table `siphon_import`) and the session's files.
//! Transitions lock the session row (`FOR UPDATE`); a worker committing a batch holds it
//! `FOR SHARE` ([`status_for_share`]), so a pause either lands before a batch (which then
//! does not commit) or after it (and the next batch sees it): never in between.

use crate::storage::statements::Statements;
use serde_json::Value;
use tokio_postgres::GenericClient;

use super::loader_file_table::TABLE;
use super::resources::RESOURCE_WITH_ID;
use crate::error::{Error, Result};
use crate::model::session::{PlanProgress, SessionRequest};
use crate::model::{LoaderFile, SessionStatus};

/// A session row.
pub struct ImportRow {
    pub status: SessionStatus,
    pub secret_hash: Option<String>,
    pub error: Option<String>,
    pub created: String,
    pub updated: String,
    /// What the session stores beside its status (an inventory import's manifest and
    /// planning progress).
    pub request: SessionRequest,
    /// The client that started it (`None`: the admin).
    pub owner: Option<String>,
}

fn parse_status(s: &str) -> Result<SessionStatus> {
    SessionStatus::parse(s).ok_or_else(|| Error::Internal(format!("unknown session status {s:?}")))
}

const COLUMNS: &str =
    "status, secret_hash, error, to_json(created_at)#>>'{}', to_json(updated_at)#>>'{}', request, owner";

fn row(r: &tokio_postgres::Row) -> Result<ImportRow> {
    Ok(ImportRow {
        status: parse_status(r.get(0))?,
        secret_hash: r.get(1),
        error: r.get(2),
        created: r.get(3),
        updated: r.get(4),
        request: serde_json::from_value(r.get::<_, Value>(5)).map_err(|e| {
            Error::Internal(format!("the stored request of a session is damaged: {e}"))
        })?,
        owner: r.get(6),
    })
}

/// Creates an active session owned by `owner`; `false` when the id is taken.
pub async fn insert<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    secret_hash: Option<&str>,
    request: &Value,
    owner: Option<&str>,
) -> Result<bool> {
    let n = client
        .run(
            "INSERT INTO siphon_import (id, status, secret_hash, request, owner)
             VALUES ($1, 'active', $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            &[&id, &secret_hash, request, &owner],
        )
        .await?;
    Ok(n == 1)
}

/// Reads a session; `lock` takes it `FOR UPDATE` (inside a transaction).
pub async fn read<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    lock: bool,
) -> Result<Option<ImportRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM siphon_import WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    client
        .row_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

/// The session's status, held `FOR SHARE` until the caller's transaction ends.
pub async fn status_for_share<C: GenericClient + Sync>(
    client: &C,
    id: &str,
) -> Result<Option<SessionStatus>> {
    client
        .row_opt(
            "SELECT status FROM siphon_import WHERE id = $1 FOR SHARE",
            &[&id],
        )
        .await?
        .map(|r| parse_status(r.get(0)))
        .transpose()
}

pub async fn set_status<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    status: SessionStatus,
    error: Option<&str>,
) -> Result<()> {
    client
        .run(
            "UPDATE siphon_import SET status = $2, error = $3, updated_at = now() WHERE id = $1",
            &[&id, &status.as_str(), &error],
        )
        .await?;
    Ok(())
}

/// Moves the session's files whose status is one of `from` to `to`, dropping any lease
/// (a worker holding one loses it: its next batch does not commit) and, going back to
/// `pending`, the old error and end time. Returns how many moved.
pub async fn move_files<C: GenericClient + Sync>(
    client: &C,
    import: &str,
    from: &[&str],
    to: &str,
) -> Result<u64> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let n = client
        .run(
            &format!(
                "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                    resource = CASE WHEN $3 = 'pending'
                        THEN (resource || jsonb_build_object('status', $3::text)) - 'lease' - 'error' - 'end' - 'queued'
                        ELSE (resource || jsonb_build_object('status', $3::text)) - 'lease' - 'queued' END
                 WHERE resource->>'import' = $1 AND resource->>'status' = ANY($2)"
            ),
            &[&import, &from, &to],
        )
        .await?;
    Ok(n)
}

/// The session's files by status: `(status, files, resources loaded, lines failed)`
/// (none when no LoaderFile exists yet).
pub async fn file_counts<C: GenericClient + Sync>(
    client: &C,
    import: &str,
) -> Result<Vec<(String, i64, i64, i64)>> {
    let rows = client
        .rows(
            &format!(
                "SELECT resource->>'status', count(*),
                        coalesce(sum((resource->>'loaded')::bigint), 0)::bigint,
                        coalesce(sum((resource->>'failed')::bigint), 0)::bigint
                 FROM {TABLE} WHERE resource->>'import' = $1 GROUP BY 1 ORDER BY 1"
            ),
            &[&import],
        )
        .await
        .map_err(Error::from);
    match rows {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()),
        Err(e) if super::is_undefined_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The session's files with status `status`, in input (then id) order, at most `limit`.
pub async fn files_with_status<C: GenericClient + Sync>(
    client: &C,
    import: &str,
    status: &str,
    limit: i64,
) -> Result<Vec<LoaderFile>> {
    let rows = client
        .rows(
            &format!(
                "SELECT {RESOURCE_WITH_ID} FROM {TABLE}
                 WHERE resource->>'import' = $1 AND resource->>'status' = $2
                 ORDER BY (resource->>'input')::int, id LIMIT $3"
            ),
            &[&import, &status, &limit],
        )
        .await
        .map_err(Error::from);
    match rows {
        Ok(rows) => Ok(super::loader_file_table::readable_files(
            &rows,
            "its session",
        )),
        Err(e) if super::is_undefined_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Records how far an inventory import's planning got.
pub async fn set_plan<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    plan: &PlanProgress,
) -> Result<()> {
    let patch = serde_json::json!({ "plan": plan });
    client
        .run(
            "UPDATE siphon_import SET request = request || $2::jsonb, updated_at = now() WHERE id = $1",
            &[&id, &patch],
        )
        .await?;
    Ok(())
}

/// Records how far a pull import got (`request.pull`).
pub async fn set_pull<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    pull: &crate::model::pull::PullProgress,
) -> Result<()> {
    let patch = serde_json::json!({ "pull": pull });
    client
        .run(
            "UPDATE siphon_import SET request = request || $2::jsonb, updated_at = now() WHERE id = $1",
            &[&id, &patch],
        )
        .await?;
    Ok(())
}

/// The session's files, in input order.
pub async fn files<C: GenericClient + Sync>(client: &C, import: &str) -> Result<Vec<LoaderFile>> {
    let rows = client
        .rows(
            &format!(
                "SELECT {RESOURCE_WITH_ID} FROM {TABLE}
                 WHERE resource->>'import' = $1 ORDER BY resource->'input'"
            ),
            &[&import],
        )
        .await
        .map_err(Error::from);
    match rows {
        Ok(rows) => Ok(super::loader_file_table::readable_files(
            &rows,
            "its session",
        )),
        // A pull import has no file before its first manifest page: maybe no table yet.
        Err(e) if super::is_undefined_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Session ids, newest first.
pub async fn ids<C: GenericClient + Sync>(
    client: &C,
    owner: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<String>> {
    Ok(client
        .rows(
            "SELECT id FROM siphon_import WHERE ($3::text IS NULL OR owner = $3)
             ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
            &[&limit, &offset, &owner],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
