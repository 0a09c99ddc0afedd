//! Ending a bulk-mode load: once every file of a load has ended, its tables get their
//! primary key and indexes back (`storage::bulk`), and its files say what that did.

use crate::error::Result;
use crate::resource_type::ResourceType;
use crate::storage::Db;

/// Rebuilds the tables load `owner` holds in bulk mode whose writers have all ended:
/// its files of that type and its files of mixed types (a table is whole again as soon
/// as nothing of the load can write it, while the rest of the load goes on). Safe to
/// call from every file's end, and from the sweep: the first caller that finds a table
/// ready rebuilds it, the others find nothing to do. Returns how many it rebuilt.
pub async fn finish(db: &Db, owner: &str) -> Result<usize> {
    let held: Vec<_> = db
        .bulk_tables()
        .await?
        .into_iter()
        .filter(|t| t.owner == owner)
        .collect();
    let mut rebuilt = Vec::new();
    for table in held {
        if !db.writers_ended(owner, &table.resource_type).await? {
            continue;
        }
        let ty = ResourceType::parse(&table.resource_type)?;
        if let Some(r) = db.leave_bulk_mode(&ty).await? {
            rebuilt.push(r);
        }
    }
    if !rebuilt.is_empty() {
        db.note_rebuilt(owner, &rebuilt).await?;
    }
    Ok(rebuilt.len())
}
