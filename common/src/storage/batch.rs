//! One batch of a load, in one transaction: the rows, the invalid lines, the file's new
//! counts and checkpoint commit together or not at all, fenced by the file's lease (and
//! by its `$import` session's state).

use crate::storage::statements::Statements;
use tokio_postgres::{GenericClient, Transaction};

use super::copy_in::{self, Chunk, ChunkResult};
use super::imports;
use super::Db;
use crate::error::Result;
use crate::model::loader_file::FileProgress;
use crate::model::{FileStatus, LineError, SessionStatus};

/// Stores line errors (up to `room` of them) in the batch's transaction.
pub async fn record_line_errors<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    errors: &[LineError],
    room: u64,
) -> Result<()> {
    let take = errors.len().min(room as usize);
    if take == 0 {
        return Ok(());
    }
    let errors = &errors[..take];
    let lines: Vec<i64> = errors.iter().map(|e| e.line as i64).collect();
    let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
    let excerpts: Vec<&str> = errors.iter().map(|e| e.excerpt.as_str()).collect();
    let loaded: Vec<bool> = errors.iter().map(|e| e.loaded).collect();
    client
        .run(
            "INSERT INTO siphon_loader_error (file_id, line, reason, excerpt, loaded)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[])
             ON CONFLICT (file_id, line) DO UPDATE
                SET reason = excluded.reason, excerpt = excluded.excerpt, loaded = excluded.loaded",
            &[&id, &lines, &reasons, &excerpts, &loaded],
        )
        .await?;
    Ok(())
}

/// How starting a batch went.
pub enum Opened<'a> {
    /// Write the batch, then [`BatchTx::commit`].
    Ready(BatchTx<'a>),
    /// The file's `$import` session is no longer active: the file was stopped at its
    /// checkpoint with this status (nothing else written).
    Halted(FileStatus),
}

/// One batch's transaction: the rows, the invalid lines, the file's new counts and
/// checkpoint commit together or not at all.
pub struct BatchTx<'a> {
    pub(super) tx: Transaction<'a>,
}

impl Db {
    /// Starts a batch for LoaderFile `file_id`, loaded by `owner`. When the file is an
    /// input of `$import` session `import`, the session row is held `FOR SHARE` until the
    /// batch commits, so a pause or abort either lands before the batch (which then stops
    /// here) or after it (and the next batch sees it), never in between.
    pub async fn begin_batch<'a>(
        client: &'a mut tokio_postgres::Client,
        file_id: &str,
        owner: &str,
        import: Option<&str>,
    ) -> Result<Opened<'a>> {
        let tx = client.transaction().await?;
        if let Some(import) = import {
            let session = imports::status_for_share(&tx, import).await?;
            if session != Some(SessionStatus::Active) {
                let status = match session {
                    None | Some(SessionStatus::Aborted) => FileStatus::Aborted,
                    _ => FileStatus::Paused,
                };
                // As owner only: an abort or force-resume may have set the file already.
                let stop = FileProgress {
                    status: Some(status),
                    ..FileProgress::default()
                };
                Db::patch_loader_file_as(&tx, file_id, owner, &stop, true).await?;
                tx.commit().await?;
                return Ok(Opened::Halted(status));
            }
        }
        Ok(Opened::Ready(BatchTx { tx }))
    }
}

impl BatchTx<'_> {
    /// The next value of the shared transaction sequence: the txid of this batch's rows.
    pub async fn next_txid(&self) -> Result<i64> {
        super::resources::next_txid(&self.tx).await
    }

    /// Records that this batch's txid wrote rows of `file_id` (a submitted file's rows
    /// can then be removed again; see `storage::submissions`).
    pub async fn record_txid(&self, file_id: &str, txid: i64) -> Result<()> {
        self.tx
            .run(
                "INSERT INTO siphon_file_txid (file_id, txid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&file_id, &txid],
            )
            .await?;
        Ok(())
    }

    /// Writes one chunk of rows into its resource table (see [`copy_in::write_chunk`]).
    pub async fn write(&self, chunk: Chunk, upsert: bool, try_direct: bool) -> Result<ChunkResult> {
        copy_in::write_chunk(&self.tx, chunk, upsert, try_direct).await
    }

    /// Stores up to `room` of the invalid lines.
    pub async fn record_errors(
        &self,
        file_id: &str,
        errors: &[LineError],
        room: u64,
    ) -> Result<()> {
        record_line_errors(&self.tx, file_id, errors, room).await
    }

    /// Merges `progress` into the file as its owner, ending the claim with `release` or else
    /// renewing the lease for `lease_secs`; `false` when the lease was lost (then nothing
    /// of this batch may commit).
    pub async fn advance(
        &self,
        file_id: &str,
        owner: &str,
        progress: &FileProgress,
        release: bool,
        lease_secs: f64,
    ) -> Result<bool> {
        let renew = (!release).then_some(lease_secs);
        Db::advance_loader_file(&self.tx, file_id, owner, progress, release, renew).await
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
