//! Feeding a big load: the files of an inventory import wait in Postgres (`pending`), and
//! only `thread-num` of them are on the load queue or loading at any time. Whoever
//! ends a file (the loader, or its redelivered message after a crash) queues the next
//! ones before its own message is deleted, so the chain never breaks; the planning
//! queues the first ones. A million files cost a million messages over the whole load,
//! not a million messages cycling through the queue while they wait for a slot.

use crate::error::Result;
use crate::queue::{self, LoadMessage, MessageQueue, StoreSpec};
use crate::storage::Db;

/// Queues the next files of `group` up to `threads` in flight, with `store` (the
/// credentials the group's messages carry). Returns how many were queued.
pub async fn feed(
    db: &Db,
    queue: &dyn MessageQueue,
    group: &str,
    threads: u32,
    store: &StoreSpec,
) -> Result<usize> {
    let files = db.files_to_feed(group, i64::from(threads)).await?;
    if files.is_empty() {
        return Ok(0);
    }
    let messages: Vec<LoadMessage> = files
        .iter()
        .map(|f| LoadMessage::for_file(f, store.clone()))
        .collect();
    // Sent first, marked after: a crash in between only sends them again (harmless).
    queue::send(queue, &messages, None).await?;
    let ids: Vec<String> = files.into_iter().map(|f| f.id).collect();
    db.mark_queued(&ids).await?;
    tracing::debug!(group, queued = ids.len(), "fed the load queue");
    Ok(ids.len())
}
