//! The conformance suite of the leases port: the rules every adapter keeps (the memory
//! one in its unit test, the Postgres ones for LoaderFiles and export tasks in
//! `tests/tests/leases.rs`, against a real database). A rule broken panics naming it.
//!
//! The suite waits for short leases to run out: about 3 s in all.

use std::time::Duration;

use futures::future::BoxFuture;

use super::port::{Claim, Leases};
use crate::error::Result;

/// What the suite needs besides the port: work to claim, and a way to move it on and to
/// end it as its owner (a committed checkpoint; the work done).
pub trait Fixture: Send + Sync {
    /// New pending work, never claimed: its id.
    fn add(&self) -> BoxFuture<'_, Result<String>>;
    /// Moves the work on as `owner` and renews its lease to `lease` from now, as a
    /// committed checkpoint does: `false` when it is not `owner`'s.
    fn advance<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Ends the work (done) as `owner`: `false` when it is not `owner`'s.
    fn finish<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// A lease that outlives the suite.
const LIVE: Duration = Duration::from_secs(60);
/// A lease the suite lets run out, and how long it waits for that.
const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(800);

/// Runs every rule against `leases`.
pub async fn run<L: Leases + ?Sized>(leases: &L, fixture: &dyn Fixture) {
    one_holder_at_a_time(leases, fixture).await;
    racing_claims_leave_one_holder(leases, fixture).await;
    only_the_owner_renews_a_live_lease(leases, fixture).await;
    a_lease_given_back_is_claimable_at_once_and_never_revived(leases, fixture).await;
    a_lease_that_ran_out_is_taken_over_saying_whether_the_work_moved(leases, fixture).await;
    ended_work_is_not_claimed_again(leases, fixture).await;
    missing_work_is_missing(leases).await;
}

/// `Some(progressed)` when held.
fn held<W, E>(claim: &Claim<W, E>) -> Option<bool> {
    match claim {
        Claim::Held { progressed, .. } => Some(*progressed),
        _ => None,
    }
}

async fn claim<L: Leases + ?Sized>(
    leases: &L,
    id: &str,
    owner: &str,
    lease: Duration,
) -> Claim<L::Work, L::Ended> {
    leases
        .claim(id, owner, lease, Some("receipt"))
        .await
        .expect("claim")
}

async fn one_holder_at_a_time<L: Leases + ?Sized>(leases: &L, fixture: &dyn Fixture) {
    let id = fixture.add().await.expect("add");
    let first = claim(leases, &id, "a", LIVE).await;
    assert_eq!(
        held(&first),
        Some(false),
        "pending work is claimed, not taken over"
    );
    match claim(leases, &id, "b", LIVE).await {
        Claim::Busy { until } => assert!(
            until.is_none_or(|u| chrono::DateTime::parse_from_rfc3339(&u).is_ok()),
            "a busy claim's until is RFC 3339"
        ),
        _ => panic!("another owner's claim of held work must be Busy"),
    }
    assert_eq!(
        held(&claim(leases, &id, "a", LIVE).await),
        Some(false),
        "the holder claims its work again (its message delivered twice)"
    );
}

async fn racing_claims_leave_one_holder<L: Leases + ?Sized>(leases: &L, fixture: &dyn Fixture) {
    let id = fixture.add().await.expect("add");
    let claims = futures::future::join_all(
        (0..4).map(|n| leases.claim(&id, ["r0", "r1", "r2", "r3"][n], LIVE, None)),
    )
    .await;
    let holders = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Held { .. })))
        .count();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
        .count();
    assert_eq!(
        (holders, busy),
        (1, 3),
        "four racing claims: one holds, three are busy"
    );
}

async fn only_the_owner_renews_a_live_lease<L: Leases + ?Sized>(leases: &L, fixture: &dyn Fixture) {
    let id = fixture.add().await.expect("add");
    assert!(held(&claim(leases, &id, "a", SHORT).await).is_some());
    assert!(
        leases.renew(&id, "a", LIVE).await.unwrap(),
        "the owner renews"
    );
    assert!(
        !leases.renew(&id, "b", LIVE).await.unwrap(),
        "nobody else renews"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        matches!(claim(leases, &id, "b", LIVE).await, Claim::Busy { .. }),
        "a renewed lease outlives its first length"
    );
    assert!(
        !leases.renew("no-such-work", "a", LIVE).await.unwrap(),
        "no work, no renewal"
    );
}

async fn a_lease_given_back_is_claimable_at_once_and_never_revived<L: Leases + ?Sized>(
    leases: &L,
    fixture: &dyn Fixture,
) {
    let id = fixture.add().await.expect("add");
    assert!(held(&claim(leases, &id, "a", LIVE).await).is_some());
    assert!(
        !leases.release(&id, "b").await.unwrap(),
        "only the owner gives a lease back"
    );
    assert!(
        leases.release(&id, "a").await.unwrap(),
        "the owner gives it back"
    );
    assert!(
        !leases.renew(&id, "a", LIVE).await.unwrap(),
        "a lease given back is never revived by a late heartbeat"
    );
    assert_eq!(
        held(&claim(leases, &id, "b", LIVE).await),
        Some(false),
        "the next claim takes it at once; a's work did not move"
    );
    assert!(
        !fixture.advance(&id, "a", LIVE).await.unwrap(),
        "the old owner can no longer move it on"
    );
}

async fn a_lease_that_ran_out_is_taken_over_saying_whether_the_work_moved<L: Leases + ?Sized>(
    leases: &L,
    fixture: &dyn Fixture,
) {
    let id = fixture.add().await.expect("add");
    assert!(held(&claim(leases, &id, "a", SHORT).await).is_some());
    assert!(
        fixture.advance(&id, "a", SHORT).await.unwrap(),
        "the owner moves it on"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        !leases.renew(&id, "a", LIVE).await.unwrap(),
        "a lease that ran out is never revived"
    );
    assert_eq!(
        held(&claim(leases, &id, "b", SHORT).await),
        Some(true),
        "taken over from an owner that moved the work on"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        held(&claim(leases, &id, "c", LIVE).await),
        Some(false),
        "taken over from an owner that died where it started"
    );
}

async fn ended_work_is_not_claimed_again<L: Leases + ?Sized>(leases: &L, fixture: &dyn Fixture) {
    let id = fixture.add().await.expect("add");
    assert!(held(&claim(leases, &id, "a", LIVE).await).is_some());
    assert!(fixture.finish(&id, "a").await.unwrap(), "the owner ends it");
    assert!(
        matches!(claim(leases, &id, "b", LIVE).await, Claim::Ended(_)),
        "ended work is not claimed"
    );
    assert!(
        !leases.renew(&id, "a", LIVE).await.unwrap(),
        "ended work has no lease to renew"
    );
    assert!(
        !leases.release(&id, "a").await.unwrap(),
        "ended work has no lease to give back"
    );
}

async fn missing_work_is_missing<L: Leases + ?Sized>(leases: &L) {
    assert!(
        matches!(
            claim(leases, "no-such-work", "a", LIVE).await,
            Claim::Missing
        ),
        "work that does not exist is Missing"
    );
}
