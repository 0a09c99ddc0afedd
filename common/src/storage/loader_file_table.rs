//! The LoaderFile table itself: its name, reading its rows (a damaged one skipped, not
//! fatal), and the owner-fenced update every batch and stop goes through. What the other
//! LoaderFile modules (`loader_files`, `batch`, `refs`, `imports`) share, so none of them
//! needs another.

use crate::storage::statements::Statements;
use tokio_postgres::GenericClient;

use super::Db;
use crate::error::Result;
use crate::model::loader_file::FileProgress;
use crate::model::LoaderFile;

/// The table (LoaderFiles are stored as resources of type `LoaderFile`).
pub(crate) const TABLE: &str = "public.\"loaderfile\"";

impl Db {
    /// Merges `progress` into the file if `owner` still holds it. `false` = lease lost.
    /// With `remove_lease` the claim ends (the file is finished or stopped).
    pub async fn patch_loader_file_as<C: GenericClient + Sync>(
        client: &C,
        id: &str,
        owner: &str,
        progress: &FileProgress,
        remove_lease: bool,
    ) -> Result<bool> {
        Self::advance_loader_file(client, id, owner, progress, remove_lease, None).await
    }

    /// [`Db::patch_loader_file_as`], and with `renew_secs` the lease (its receipt kept)
    /// now lasts that much longer.
    pub async fn advance_loader_file<C: GenericClient + Sync>(
        client: &C,
        id: &str,
        owner: &str,
        progress: &FileProgress,
        remove_lease: bool,
        renew_secs: Option<f64>,
    ) -> Result<bool> {
        let n = client
            .run(
                &format!(
                    "UPDATE {TABLE} SET ts = now(), txid = nextval('transaction_id_seq'),
                        resource = CASE
                            WHEN $4 THEN (resource || $3::jsonb) - 'lease'
                            WHEN $5::float8 IS NULL THEN resource || $3::jsonb
                            ELSE jsonb_set(resource || $3::jsonb, '{{lease,until}}',
                                           to_jsonb(now() + make_interval(secs => $5::float8)))
                        END
                     WHERE id = $1 AND resource->'lease'->>'owner' = $2::text"
                ),
                &[
                    &id,
                    &owner,
                    &progress.to_value(),
                    &remove_lease,
                    &renew_secs,
                ],
            )
            .await?;
        Ok(n == 1)
    }
}

/// The LoaderFiles of `rows` (first column: the resource); a row that does not read as
/// one (damaged) is logged, naming it, and left out of `what` rather than failing it
/// for every other file.
pub(crate) fn readable_files(rows: &[tokio_postgres::Row], what: &str) -> Vec<LoaderFile> {
    rows.iter()
        .filter_map(|r| {
            let value: serde_json::Value = r.get(0);
            let id = value["id"].as_str().unwrap_or("?").to_string();
            match LoaderFile::from_value(value) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(file_id = id, error = %e, "unreadable LoaderFile left out of {what}");
                    None
                }
            }
        })
        .collect()
}
