//! The leases port: what the work's runners need of the store to hold a piece of leased
//! work (a LoaderFile, an export task). The Postgres adapters are in
//! `storage::leases`; the memory adapter (`lease::memory`) keeps the same rules, and the
//! conformance suite (`lease::conformance`) is what every adapter must pass.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{FirstBeat, Heartbeat};
use crate::error::Result;

/// What claiming a piece of work found.
#[derive(Debug)]
pub enum Claim<W, E> {
    /// The claimer holds the work until the lease runs out (or it gives it back).
    /// `progressed`: it was taken from another owner whose lease ran out after that
    /// owner had moved the work on (a worker died having done some of it).
    Held { work: W, progressed: bool },
    /// Another owner holds a live lease, until then (RFC 3339), when the store says.
    Busy { until: Option<String> },
    /// The work has ended (or cannot run now), in this state: nothing to do.
    Ended(E),
    /// No such work.
    Missing,
    /// The work's group already runs as many pieces as it may: try later.
    Throttled,
}

/// One kind of leased work in a store. A lease is the claim of one owner (a worker's
/// attempt) that runs out unless renewed; every statement about it names the owner, so
/// a worker that lost its lease can change nothing.
pub trait Leases: Send + Sync {
    /// What a claim hands over: the work as stored.
    type Work: Send;
    /// The states work ends in.
    type Ended: Send;

    /// Claims work `id` for `owner` for `lease`: pending work, running work whose lease
    /// ran out, or work `owner` holds already (its message delivered again). Atomic: of
    /// two claimers racing, one holds it. `receipt` (the SQS receipt handle of the
    /// message served) is kept with the lease, for the sweep.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        receipt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim<Self::Work, Self::Ended>>>;

    /// Extends `owner`'s live lease on running work to `lease` from now. `false` when
    /// it is not `owner`'s, or was given back or ran out: a lease is never revived.
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Gives `owner`'s lease back without ending the work: the next claim takes it at
    /// once, from where `owner` left it. `false` when it was not `owner`'s to give.
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// Renews `owner`'s lease on work `id` every `every` (first after one beat: the claim
/// has just set it) for as long as the returned heartbeat lives. A renewal that finds
/// the lease gone does not stop it: the work's next commit finds the lease lost.
pub fn hold<L>(
    leases: Arc<L>,
    what: &'static str,
    id: &str,
    owner: &str,
    lease: Duration,
    every: Duration,
) -> Heartbeat
where
    L: Leases + ?Sized + 'static,
{
    let (id, owner) = (id.to_string(), owner.to_string());
    Heartbeat::start(
        what,
        id.clone(),
        every,
        FirstBeat::AfterOneBeat,
        false,
        move || {
            let (leases, id, owner) = (leases.clone(), id.clone(), owner.clone());
            Box::pin(async move { leases.renew(&id, &owner, lease).await })
        },
    )
}

/// Whether a claim should be swapped for a fresh message before working: the work was
/// taken over from a worker that got somewhere and died, and the message serving it has
/// been received before. The queue sends a message received `maxReceiveCount` times to
/// the dead-letter queue; that count is meant for work that kills its worker at the same
/// place every time, not for crashes that each got further.
pub fn continue_on_fresh_message(progressed: bool, receives: u32) -> bool {
    progressed && receives >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_redelivery_of_work_that_moved_on_asks_for_a_fresh_message() {
        assert!(continue_on_fresh_message(true, 2));
        assert!(continue_on_fresh_message(true, 5));
        assert!(
            !continue_on_fresh_message(true, 1),
            "a first delivery simply works"
        );
        assert!(
            !continue_on_fresh_message(false, 5),
            "no progress: the receives count (the poison-work guard) keeps counting"
        );
    }
}
