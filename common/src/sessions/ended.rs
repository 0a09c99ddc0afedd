//! What follows the end of a file (done or error), whoever ended it: its worker, the
//! worker giving up after the queue's last receive, or the sweep giving up on a file
//! whose workers keep dying. Every step is idempotent, so a crash between them is mended
//! by the next delivery of the file's message.

use crate::error::Result;
use crate::queue::{MessageQueue, StoreSpec};
use crate::storage::Db;

/// After a file ended: queues an inventory import's next files (with the credentials of
/// `store`), resolves its load's references once the whole load has ended
/// (`validation.checks: refs|all`), settles its `$import` session, if it has one, and
/// rebuilds the tables its load holds in bulk mode once their files have ended.
pub async fn file_ended(
    db: &Db,
    queue: &dyn MessageQueue,
    file_id: &str,
    store: &StoreSpec,
) -> Result<()> {
    let Some(file) = db.loader_file(file_id).await? else {
        return Ok(());
    };
    // An inventory import's files wait in Postgres: queue the next ones before the
    // message of this one is deleted.
    if let (Some(_), Some(group), Some(threads)) = (&file.inventory, &file.group, file.threads) {
        crate::loading::feed::feed(db, queue, group, threads, store).await?;
    }
    if file.options.validation.refs() {
        // References resolve once the whole load has ended, before its session says
        // done; tables in bulk mode are whole again first (parked lines need them).
        if file.options.bulk() {
            crate::loading::bulk::finish(db, &file.load_owner()).await?;
        }
        crate::validation::resolve::finish(db, &file.load_owner()).await?;
    }
    if let Some(import) = &file.import {
        super::settle(db, import).await?;
    }
    if file.options.bulk() {
        crate::loading::bulk::finish(db, &file.load_owner()).await?;
    }
    Ok(())
}
