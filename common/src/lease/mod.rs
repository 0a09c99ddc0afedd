//! Leases kept alive: the one heartbeat every piece of leased work uses (a LoaderFile
//! being loaded, an export task being written, an SQS message being handled).
//!
//! Work in siphon is claimed with a lease that runs out unless renewed: a worker that
//! dies at any line stops renewing, the lease runs out, and the sweep (or the next
//! delivery) hands the work to someone else within about a lease. A [`Heartbeat`]
//! renews one lease every beat while it lives; dropping it (the work ended, or the
//! worker's future was dropped) stops the renewals.
//!
//! What holding a lease needs of the store is the [`Leases`] port (Postgres adapters in
//! `storage::leases`, a memory one in [`memory`], one [`conformance`] suite for both).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;

pub mod conformance;
pub mod memory;
mod port;

pub use port::{continue_on_fresh_message, hold, Claim, Leases};

/// One renewal: `Ok(true)` renewed, `Ok(false)` nothing of ours to renew any more
/// (ended, released or taken over), `Err` could not tell (the store is away).
pub type Renewal = Pin<Box<dyn Future<Output = Result<bool>> + Send>>;

/// When a heartbeat renews: right away (a message's visibility is extended from the
/// start) or after the first beat (a claim has just set the lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBeat {
    Now,
    AfterOneBeat,
}

/// Renews one lease every beat until dropped.
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Calls `renew` every `every` (first at `first`). A renewal answering `Ok(false)`
    /// stops the heartbeat when `stop_when_gone` (nothing of ours is left to renew);
    /// otherwise it keeps beating, since the work's next commit finds out whether the
    /// lease is still ours. Errors are logged with `what` and `id` and the beat goes on:
    /// if the lease runs out meanwhile, the work's next commit finds it lost and stops.
    pub fn start<F>(
        what: &'static str,
        id: String,
        every: Duration,
        first: FirstBeat,
        stop_when_gone: bool,
        renew: F,
    ) -> Self
    where
        F: Fn() -> Renewal + Send + 'static,
    {
        Heartbeat(tokio::spawn(async move {
            if first == FirstBeat::AfterOneBeat {
                tokio::time::sleep(every).await;
            }
            loop {
                match renew().await {
                    Ok(true) => tracing::trace!(what, id, "lease renewed"),
                    Ok(false) if stop_when_gone => break,
                    Ok(false) => tracing::trace!(what, id, "lease not renewed"),
                    Err(e) => tracing::warn!(what, id, error = %e, "cannot renew the lease"),
                }
                tokio::time::sleep(every).await;
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn counting(answer: Option<bool>) -> (Arc<AtomicU32>, impl Fn() -> Renewal + Send + 'static) {
        let n = Arc::new(AtomicU32::new(0));
        let seen = n.clone();
        (n, move || {
            let seen = seen.clone();
            Box::pin(async move {
                seen.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Some(a) => Ok(a),
                    None => Err(crate::error::Error::Unavailable("database away".into())),
                }
            }) as Renewal
        })
    }

    #[tokio::test(start_paused = true)]
    async fn beats_until_dropped_and_not_after() {
        let (n, renew) = counting(Some(true));
        let beat = Heartbeat::start(
            "test",
            "a".into(),
            Duration::from_secs(10),
            FirstBeat::AfterOneBeat,
            false,
            renew,
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(n.load(Ordering::SeqCst), 3, "at 10, 20 and 30 s");
        drop(beat);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(n.load(Ordering::SeqCst), 3, "no renewal after the drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_held_from_the_start_until_it_is_gone() {
        let (n, renew) = counting(Some(false));
        let _beat = Heartbeat::start(
            "test",
            "m".into(),
            Duration::from_secs(10),
            FirstBeat::Now,
            true,
            renew,
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "renewed at once, then stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_do_not_stop_the_beat() {
        let (n, renew) = counting(None);
        let _beat = Heartbeat::start(
            "test",
            "b".into(),
            Duration::from_secs(10),
            FirstBeat::Now,
            true,
            renew,
        );
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(n.load(Ordering::SeqCst), 3, "at 0, 10 and 20 s");
    }
}
