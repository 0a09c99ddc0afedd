//! The leases port in memory: the rules of `storage::leases` without Postgres, for unit
//! tests of what runs on top of a claim. It passes the same conformance suite.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::port::{Claim, Leases};
use crate::error::Result;

enum State<E> {
    Pending,
    Running {
        owner: String,
        until: Instant,
        /// The work's progress when this owner claimed it.
        from: u64,
    },
    Ended(E),
}

struct Entry<W, E> {
    work: W,
    state: State<E>,
    /// How far the work has been moved on (a checkpoint counter).
    progress: u64,
}

/// Leased work held in memory: add work, claim it through [`Leases`], move it on and
/// end it as its owner.
pub struct MemoryLeases<W, E> {
    entries: Mutex<HashMap<String, Entry<W, E>>>,
}

impl<W, E> Default for MemoryLeases<W, E> {
    fn default() -> Self {
        MemoryLeases {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<W: Clone + Send, E: Clone + Send> MemoryLeases<W, E> {
    /// Adds pending work `id`.
    pub fn add(&self, id: &str, work: W) {
        self.entries.lock().unwrap().insert(
            id.to_string(),
            Entry {
                work,
                state: State::Pending,
                progress: 0,
            },
        );
    }

    /// Moves running work on as `owner` and renews the lease to `lease` from now, as a
    /// committed checkpoint does: `false` when the work is not `owner`'s.
    pub fn advance(&self, id: &str, owner: &str, lease: Duration) -> bool {
        let mut entries = self.entries.lock().unwrap();
        let Some(e) = entries.get_mut(id) else {
            return false;
        };
        match &mut e.state {
            State::Running {
                owner: o, until, ..
            } if o == owner => {
                *until = Instant::now() + lease;
                e.progress += 1;
                true
            }
            _ => false,
        }
    }

    /// Ends running work as `owner` in `state`: `false` when it is not `owner`'s.
    pub fn end(&self, id: &str, owner: &str, state: E) -> bool {
        let mut entries = self.entries.lock().unwrap();
        match entries.get_mut(id) {
            Some(e) if e.state.owned_by(owner) => {
                e.state = State::Ended(state);
                true
            }
            _ => false,
        }
    }
}

impl<E> State<E> {
    /// Running under `owner`'s claim (live or run out and not taken over).
    fn owned_by(&self, who: &str) -> bool {
        matches!(self, State::Running { owner, .. } if owner == who)
    }
}

/// RFC 3339 of an instant ahead, as the store's clock would print it.
fn wall(at: Instant) -> String {
    let ahead = at.saturating_duration_since(Instant::now());
    (chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default()).to_rfc3339()
}

impl<W: Clone + Send + Sync, E: Clone + Send + Sync> Leases for MemoryLeases<W, E> {
    type Work = W;
    type Ended = E;

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        _receipt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim<W, E>>> {
        let mut entries = self.entries.lock().unwrap();
        let now = Instant::now();
        let claim = match entries.get_mut(id) {
            None => Claim::Missing,
            Some(e) => {
                let progressed = match &e.state {
                    State::Ended(s) => {
                        return Box::pin(std::future::ready(Ok(Claim::Ended(s.clone()))))
                    }
                    State::Running {
                        owner: o, until, ..
                    } if o != owner && *until >= now => {
                        let until = Some(wall(*until));
                        return Box::pin(std::future::ready(Ok(Claim::Busy { until })));
                    }
                    State::Running { owner: o, from, .. } => o != owner && *from < e.progress,
                    State::Pending => false,
                };
                e.state = State::Running {
                    owner: owner.to_string(),
                    until: now + lease,
                    from: e.progress,
                };
                Claim::Held {
                    work: e.work.clone(),
                    progressed,
                }
            }
        };
        Box::pin(std::future::ready(Ok(claim)))
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        let mut entries = self.entries.lock().unwrap();
        let now = Instant::now();
        let renewed = match entries.get_mut(id).map(|e| &mut e.state) {
            Some(State::Running {
                owner: o, until, ..
            }) if o == owner && *until > now => {
                *until = now + lease;
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(renewed)))
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut entries = self.entries.lock().unwrap();
        let released = match entries.get_mut(id).map(|e| &mut e.state) {
            Some(State::Running {
                owner: o, until, ..
            }) if o == owner => {
                *until = Instant::now()
                    .checked_sub(Duration::from_secs(1))
                    .unwrap_or_else(Instant::now);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(released)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::conformance::{self, Fixture};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Memory {
        leases: MemoryLeases<u32, &'static str>,
        next: AtomicU32,
    }

    impl Fixture for Memory {
        fn add(&self) -> BoxFuture<'_, Result<String>> {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let id = format!("work-{n}");
            self.leases.add(&id, n);
            Box::pin(std::future::ready(Ok(id)))
        }

        fn advance<'a>(
            &'a self,
            id: &'a str,
            owner: &'a str,
            lease: Duration,
        ) -> BoxFuture<'a, Result<bool>> {
            Box::pin(std::future::ready(Ok(self
                .leases
                .advance(id, owner, lease))))
        }

        fn finish<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>> {
            Box::pin(std::future::ready(Ok(self.leases.end(id, owner, "done"))))
        }
    }

    #[tokio::test]
    async fn memory_leases_keep_the_rules_of_the_postgres_ones() {
        let memory = Memory {
            leases: MemoryLeases::default(),
            next: AtomicU32::new(0),
        };
        conformance::run(&memory.leases, &memory).await;
    }
}
