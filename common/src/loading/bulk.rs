//! Ending a bulk-mode load: once every file of a load has ended, its tables get their
//! primary key and indexes back (`storage::bulk`), and its files say what that did.

use crate::error::Result;
use crate::resource_type::ResourceType;
use crate::storage::Db;

/// Rebuilds the tables load `owner` holds in bulk mode, if all its files have ended.
/// Safe to call from every file's end, and from the sweep: the first caller that finds
/// the load finished rebuilds, the others find nothing to do.
pub async fn finish(db: &Db, owner: &str) -> Result<()> {
    let held: Vec<_> = db
        .bulk_tables()
        .await?
        .into_iter()
        .filter(|t| t.owner == owner)
        .collect();
    if held.is_empty() || !db.load_finished(owner).await? {
        return Ok(());
    }
    let mut rebuilt = Vec::new();
    for table in held {
        let ty = ResourceType::parse(&table.resource_type)?;
        if let Some(r) = db.leave_bulk_mode(&ty).await? {
            rebuilt.push(r);
        }
    }
    if !rebuilt.is_empty() {
        db.note_rebuilt(owner, &rebuilt).await?;
    }
    Ok(())
}
