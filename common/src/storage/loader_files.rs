//! LoaderFiles in Postgres: creating them, claiming them with a lease, committing a
//! batch of rows together with the file's new counts and checkpoint, and the invalid
//! lines recorded per file.

use crate::storage::statements::Statements;
use serde_json::json;
use tokio_postgres::types::Json;

use super::leases::LOADER_FILE;
use super::loader_file_table::{readable_files, TABLE};
use super::resources::RESOURCE_WITH_ID;
use super::rows_or_empty;
use super::Db;
use crate::error::{Error, Result};
use crate::lease::Claim;
use crate::model::loader_file::{loader_file_type, FileProgress, FileStatus, LoaderFile, Stuck};
use crate::model::LineError;

/// What claiming a file found: [`Claim::Ended`] carries the state of a file that is
/// finished, paused or aborted; [`Claim::Throttled`] says its group's thread-num is
/// reached.
pub type FileClaim = Claim<Box<LoaderFile>, FileStatus>;

/// The INSERT that creates LoaderFiles from arrays of ids and resources (`$1`, `$2`),
/// leaving an id that exists alone; `returning` ends it.
fn insert_new(returning: &str) -> String {
    format!(
        "INSERT INTO {TABLE} (id, txid, resource_type, status, resource)
         SELECT f.id, nextval('transaction_id_seq'), 'LoaderFile', 'created', f.resource
         FROM unnest($1::text[], $2::jsonb[]) AS f(id, resource)
         ON CONFLICT (id) DO NOTHING {returning}"
    )
}

impl Db {
    /// Creates a pending LoaderFile unless one exists. Returns the stored file and
    /// whether it was created now.
    pub async fn create_loader_file(&self, file: &LoaderFile) -> Result<(LoaderFile, bool)> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let value = serde_json::to_value(file).map_err(|e| Error::Internal(e.to_string()))?;
        let inserted = client
            .row_opt(
                &format!(
                    "INSERT INTO {TABLE} (id, txid, resource_type, status, resource)
                     VALUES ($1, nextval('transaction_id_seq'), 'LoaderFile', 'created', $2)
                     ON CONFLICT (id) DO NOTHING RETURNING {RESOURCE_WITH_ID}"
                ),
                &[&file.id, &value],
            )
            .await?;
        match inserted {
            Some(row) => Ok((LoaderFile::from_value(row.get(0))?, true)),
            None => Ok((
                self.loader_file(&file.id)
                    .await?
                    .ok_or_else(|| Error::Internal("LoaderFile vanished".into()))?,
                false,
            )),
        }
    }

    /// Creates pending LoaderFiles in one statement; returns those created now (files
    /// that already had one are skipped).
    pub async fn create_loader_files(&self, files: &[LoaderFile]) -> Result<Vec<LoaderFile>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
        let values: Vec<Json<&LoaderFile>> = files.iter().map(Json).collect();
        let rows = client
            .rows(
                &insert_new(&format!("RETURNING {RESOURCE_WITH_ID}")),
                &[&ids, &values],
            )
            .await?;
        rows.iter()
            .map(|r| LoaderFile::from_value(r.get(0)))
            .collect()
    }

    /// Inserts LoaderFiles that do not exist yet (an id that exists is left alone);
    /// returns how many were inserted. [`Db::create_loader_files`] without reading them
    /// back, for a planning that creates them by the thousand.
    pub async fn insert_loader_files(&self, files: &[LoaderFile]) -> Result<u64> {
        if files.is_empty() {
            return Ok(0);
        }
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
        // Serialized straight into the statement's buffer (no JSON tree per file).
        let values: Vec<Json<&LoaderFile>> = files.iter().map(Json).collect();
        Ok(client.run(&insert_new(""), &[&ids, &values]).await?)
    }

    /// For an S3 event about `file`'s object: when `etag` names a new version, resets
    /// the file to `pending` (counts, checkpoint, errors and any lease cleared) and
    /// returns true; the same version returns false.
    pub async fn reset_loader_file_if_new_version(
        &self,
        file: &LoaderFile,
        etag: Option<&str>,
        size: Option<u64>,
    ) -> Result<bool> {
        let Some(etag) = etag else { return Ok(false) };
        if file.etag.as_deref() == Some(etag) {
            return Ok(false);
        }
        let mut fresh =
            LoaderFile::pending(&file.location(), Some(etag.to_string()), size, file.options)
                .owned_by(file.owner.clone(), file.writes.clone());
        fresh.id = file.id.clone();
        let value = serde_json::to_value(&fresh).map_err(|e| Error::Internal(e.to_string()))?;
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let n = tx
            .run(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'), status = 'updated', resource = $2
                     WHERE id = $1 AND resource->>'etag' IS DISTINCT FROM $3::text"
                ),
                &[&file.id, &value, &etag],
            )
            .await?;
        if n == 1 {
            tx.run(
                "DELETE FROM siphon_loader_error WHERE file_id = $1",
                &[&file.id],
            )
            .await?;
            super::refs::forget(&tx, std::slice::from_ref(&file.id)).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Resets LoaderFiles to the given fresh versions (another ETag: the object was
    /// rewritten) unless they are loading right now; their old line errors go. Returns
    /// the files reset.
    pub async fn reset_loader_files(&self, files: &[LoaderFile]) -> Result<Vec<LoaderFile>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
        let values: Vec<Json<&LoaderFile>> = files.iter().map(Json).collect();
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        let rows = tx
            .rows(
                &format!(
                    "UPDATE {TABLE} f SET ts = now(), txid = nextval('transaction_id_seq'), status = 'updated',
                        resource = v.resource
                     FROM unnest($1::text[], $2::jsonb[]) AS v(id, resource)
                     WHERE f.id = v.id AND f.resource->>'status' <> 'in-progress'
                       AND f.resource->>'etag' IS DISTINCT FROM v.resource->>'etag'
                     RETURNING f.id"
                ),
                &[&ids, &values],
            )
            .await?;
        let reset: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        tx.run(
            "DELETE FROM siphon_loader_error WHERE file_id = ANY($1)",
            &[&reset],
        )
        .await?;
        super::refs::forget(&tx, &reset).await?;
        tx.commit().await?;
        Ok(files
            .iter()
            .filter(|f| reset.contains(&f.id))
            .cloned()
            .collect())
    }

    /// The next files of `group` to queue so that at most `threads` are in flight
    /// (loading, or queued and not yet claimed): its waiting `pending` files, in id
    /// order. Two feeders racing may pick the same files: a duplicate message is
    /// harmless (a file loads under a lease), and the claim enforces the cap.
    pub async fn files_to_feed(&self, group: &str, threads: i64) -> Result<Vec<LoaderFile>> {
        let client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let rows = client
            .rows(
                &format!(
                    "SELECT {RESOURCE_WITH_ID} FROM {TABLE}
                     WHERE resource->>'group' = $1 AND resource->>'status' = 'pending'
                       AND NOT resource ? 'queued'
                     ORDER BY id
                     LIMIT greatest($2 - (SELECT count(*) FROM {TABLE}
                        WHERE resource->>'group' = $1 AND (resource->>'status' = 'in-progress'
                           OR (resource->>'status' = 'pending' AND resource ? 'queued'))), 0)"
                ),
                &[&group, &threads],
            )
            .await?;
        Ok(readable_files(&rows, "feeding its load"))
    }

    /// Marks pending files as queued (their message is sent).
    pub async fn mark_queued(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .run(
                &format!(
                    "UPDATE {TABLE} SET resource = resource || jsonb_build_object('queued', now())
                     WHERE id = ANY($1) AND resource->>'status' = 'pending'"
                ),
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Takes the `gone` mark off LoaderFiles whose objects an inventory lists again.
    pub async fn clear_gone(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .run(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'), resource = resource - 'gone'
                     WHERE id = ANY($1) AND resource ? 'gone'"
                ),
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Reads one LoaderFile.
    pub async fn loader_file(&self, id: &str) -> Result<Option<LoaderFile>> {
        match self.get(&loader_file_type(), id).await? {
            Some(r) => Ok(Some(LoaderFile::from_value(r.resource)?)),
            None => Ok(None),
        }
    }

    /// Claims a file for loading: `pending` files, files whose lease expired (a crashed
    /// or handed-over loader), or files this owner already holds. Atomic: of two loaders
    /// racing, one gets `Claimed`, the other `Busy`. `receipt` is the SQS receipt handle
    /// of the message being worked on (kept with the lease for the sweep).
    pub async fn claim_loader_file(
        &self,
        id: &str,
        owner: &str,
        lease_secs: f64,
        receipt: Option<&str>,
    ) -> Result<FileClaim> {
        let mut client = self.client().await?;
        self.ensure_table(&**client, &loader_file_type()).await?;
        let group: Option<(String, i64)> = client
            .row_opt(
                &format!("SELECT resource->>'group', (resource->>'threads')::bigint FROM {TABLE} WHERE id = $1"),
                &[&id],
            )
            .await?
            .and_then(|r| Some((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?)));
        let client: &mut tokio_postgres::Client = &mut client;
        let tx = client.transaction().await?;
        if let Some((group, _)) = &group {
            // Serialise claims within a group so the cap holds under races.
            tx.run(
                "SELECT pg_advisory_xact_lock(hashtext('siphon.group.' || $1))",
                &[group],
            )
            .await?;
        }
        let (group_name, threads) = match &group {
            Some((g, t)) => (Some(g.as_str()), *t),
            None => (None, 0),
        };
        let row = tx
            .row_opt(
                &claim_sql(),
                &[&id, &owner, &lease_secs, &group_name, &threads, &receipt],
            )
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(Claim::Held {
                work: Box::new(LoaderFile::from_value(row.get(0))?),
                progressed: row.get(1),
            }),
            None => self.unclaimed(id).await,
        }
    }

    /// Why file `id` was not claimed.
    async fn unclaimed(&self, id: &str) -> Result<FileClaim> {
        Ok(match self.loader_file(id).await? {
            None => Claim::Missing,
            // Claimable by state but not claimed: another loader holds a live lease,
            // or the group's thread-num cap is reached.
            Some(f) if f.status == FileStatus::InProgress && self.lease_live(id).await? => {
                Claim::Busy {
                    until: f.lease.map(|l| l.until),
                }
            }
            Some(f) if matches!(f.status, FileStatus::Pending | FileStatus::InProgress) => {
                Claim::Throttled
            }
            Some(f) => Claim::Ended(f.status),
        })
    }

    async fn lease_live(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .row(
                &format!("SELECT {} FROM {TABLE} WHERE id = $1", LOADER_FILE.live()),
                &[&id],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Files whose worker stopped renewing the lease more than `grace_secs` ago, and that
    /// the sweep has not acted on in the last `again_secs` (the redelivered message may
    /// still be on its way) unless a worker has claimed the file since (then that worker
    /// died too: a new stall). Oldest first, at most `limit`.
    pub async fn stalled_loader_files(
        &self,
        grace_secs: f64,
        again_secs: f64,
        limit: i64,
    ) -> Result<Vec<LoaderFile>> {
        let client = self.client().await?;
        let rows = rows_or_empty(
            client
                .rows(
                    &format!(
                        "SELECT {RESOURCE_WITH_ID} FROM {TABLE} WHERE {} {} LIMIT $3",
                        LOADER_FILE.stalled(),
                        LOADER_FILE.stalled_order()
                    ),
                    &[&grace_secs, &again_secs, &limit],
                )
                .await
                .map_err(Error::from),
        )?;
        Ok(readable_files(&rows, "the sweep"))
    }

    /// Records what the sweep did for a stalled file, and how stuck it is (only while it
    /// is still stalled: a worker that claimed it meanwhile wins). `false` when it was no
    /// longer stalled.
    pub async fn note_recovery(&self, id: &str, how: &str, stuck: &Stuck) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .run(
                &format!(
                    "UPDATE {TABLE} SET resource = resource || jsonb_build_object('recovery',
                        jsonb_strip_nulls(jsonb_build_object('at', now(), 'how', $2::text,
                            'barren', $3::int, 'stuck_since', $4::text,
                            'count', coalesce((resource->'recovery'->>'count')::int, 0) + 1)))
                     WHERE id = $1 AND {}",
                    LOADER_FILE.ran_out()
                ),
                &[&id, &how, &(stuck.barren as i32), &stuck.since],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends a stalled file in `error` (the sweep gives up on it: workers in a row died
    /// without progress), only while it is still stalled. `false` when a worker claimed
    /// it meanwhile.
    pub async fn abandon_loader_file(
        &self,
        id: &str,
        message: &str,
        stuck: &Stuck,
    ) -> Result<bool> {
        let client = self.client().await?;
        let patch = json!({"status": "error", "error": message, "end": chrono::Utc::now()});
        let n = client
            .run(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = (resource || $2::jsonb
                            || jsonb_build_object('recovery', jsonb_strip_nulls(jsonb_build_object(
                                'at', now(), 'how', 'gave up', 'barren', $3::int,
                                'stuck_since', $4::text,
                                'count', coalesce((resource->'recovery'->>'count')::int, 0) + 1))))
                            - 'lease'
                     WHERE id = $1 AND {}",
                    LOADER_FILE.ran_out()
                ),
                &[&id, &patch, &(stuck.barren as i32), &stuck.since],
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends an inventory file in `missing`: its object was gone (or changed) when its
    /// turn came. As its owner.
    pub async fn miss_loader_file(&self, id: &str, owner: &str, message: &str) -> Result<bool> {
        let client = self.client().await?;
        let ended = FileProgress::ended(FileStatus::Missing, Some(message));
        Self::patch_loader_file_as(&**client, id, owner, &ended, true).await
    }

    /// Ends the file in `error` with a message (as its owner, if `owner` is given).
    pub async fn fail_loader_file(
        &self,
        id: &str,
        owner: Option<&str>,
        message: &str,
    ) -> Result<bool> {
        let client = self.client().await?;
        let ended = FileProgress::ended(FileStatus::Error, Some(message));
        let patch = ended.to_value();
        match owner {
            Some(owner) => Self::patch_loader_file_as(&**client, id, owner, &ended, true).await,
            None => {
                let n = client
                    .run(
                        &format!(
                            "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                                resource = (resource || $2::jsonb) - 'lease' WHERE id = $1"
                        ),
                        &[&id, &patch],
                    )
                    .await?;
                Ok(n == 1)
            }
        }
    }

    /// The invalid lines recorded for a file, by line number.
    pub async fn loader_file_errors(
        &self,
        id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<LineError>> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "SELECT line, reason, excerpt, loaded FROM siphon_loader_error WHERE file_id = $1
                 ORDER BY line LIMIT $2 OFFSET $3",
                &[&id, &limit, &offset],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| LineError {
                line: r.get::<_, i64>(0) as u64,
                reason: r.get(1),
                excerpt: r.get(2),
                loaded: r.get(3),
            })
            .collect())
    }

    /// A file that ended in `error` goes back to `pending` (its checkpoint and counts
    /// kept, its error and end cleared) so that a new message loads the rest.
    pub async fn retry_loader_file(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .run(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = (resource || jsonb_build_object('status', 'pending')) - 'error' - 'end' - 'lease'
                     WHERE id = $1 AND resource->>'status' = 'error'"
                ),
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes a LoaderFile and its recorded line errors (so the file can be imported again).
    pub async fn delete_loader_file(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        client
            .run("DELETE FROM siphon_loader_error WHERE file_id = $1", &[&id])
            .await?;
        super::refs::forget(&**client, &[id.to_string()]).await?;
        self.delete(&loader_file_type(), id).await
    }
}

impl Db {
    /// The runs of `owner`'s LoaderFiles (`None`: all) that loaded within the window
    /// from `since` (RFC 3339): start, end (`None` while loading) and loaded, as text and
    /// a number for the caller to parse; at most `limit`, the latest first. Files whose
    /// start or count is damaged are left out. A file that loaded in the window was
    /// written in it (every batch and the end set `ts`), so the row's `ts` column rules
    /// out the others before any JSON is read.
    pub async fn loader_file_runs(
        &self,
        owner: Option<&str>,
        since: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, i64)>> {
        let client = self.client().await?;
        let rows = rows_or_empty(
            client
                .rows(
                    &format!(
                        "SELECT resource->>'start', resource->>'end',
                            least((resource->>'loaded')::numeric, 9e18)::bigint
                     FROM {TABLE}
                     WHERE ts >= $2::timestamptz
                       AND ($1::text IS NULL OR resource->>'owner' = $1)
                       AND jsonb_typeof(resource->'start') = 'string'
                       AND jsonb_typeof(resource->'loaded') = 'number'
                       AND (resource->>'status' = 'in-progress' OR resource->>'end' >= $2)
                     ORDER BY resource->>'start' DESC LIMIT $3"
                    ),
                    &[&owner, &since, &limit],
                )
                .await
                .map_err(Error::from),
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// LoaderFiles by status with the resources they loaded and failed
    /// (`aidbox.bulk/load-from-bucket-status`).
    pub async fn loader_file_totals(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<(String, i64, i64, i64)>> {
        let client = self.client().await?;
        // A count that is not a number (a damaged row) counts 0 rather than failing the
        // totals of every other file.
        let count = |field: &str| {
            format!(
                "coalesce(sum(CASE WHEN jsonb_typeof(resource->'{field}') = 'number'
                    THEN least((resource->>'{field}')::numeric, 9e18) ELSE 0 END), 0)::bigint"
            )
        };
        let rows = rows_or_empty(
            client
                .rows(
                    &format!(
                        "SELECT coalesce(resource->>'status', 'unknown'), count(*), {}, {}
                     FROM {TABLE} WHERE ($1::text IS NULL OR resource->>'owner' = $1) GROUP BY 1",
                        count("loaded"),
                        count("failed")
                    ),
                    &[&owner],
                )
                .await
                .map_err(Error::from),
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }
}

/// The claim of file `$1` by owner `$2` for `$3` seconds (`$6`: the message's receipt):
/// pending, or in progress with a lease expired or already `$2`'s, and within group
/// `$4`'s cap of `$5` live leases. Returns the file and whether another owner had
/// progressed it since its lease began.
fn claim_sql() -> String {
    format!(
        "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = (resource - 'queued')
                          || jsonb_build_object('status', 'in-progress',
                               'lease', jsonb_strip_nulls(jsonb_build_object('owner', $2::text,
                                   'since', now(),
                                   'until', now() + make_interval(secs => $3::float8),
                                   'from', coalesce((resource->'checkpoint'->>'line')::bigint, 0),
                                   'receipt', $6::text)))
                          || CASE WHEN resource ? 'start' THEN '{{}}'::jsonb
                                  ELSE jsonb_build_object('start', now()) END
                      FROM (SELECT resource->'lease' AS prev_lease,
                                   coalesce((resource->'checkpoint'->>'line')::bigint, 0) AS prev_line
                              FROM {TABLE} WHERE id = $1) prev
                     WHERE id = $1 AND (
                        resource->>'status' = 'pending'
                        OR (resource->>'status' = 'in-progress' AND {free}))
                       AND ($4::text IS NULL OR (
                            SELECT count(*) FROM {TABLE} o
                            WHERE o.resource->>'group' = $4::text AND o.id <> $1
                              AND o.resource->>'status' = 'in-progress'
                              AND siphon_ts(o.resource->'lease'->>'until') > now()) < $5::bigint)
                     RETURNING {RESOURCE_WITH_ID},
                               coalesce(prev.prev_lease->>'owner' <> $2::text
                                        AND (prev.prev_lease->>'from')::bigint < prev.prev_line, false)",
        free = LOADER_FILE.free_for("$2::text")
    )
}
