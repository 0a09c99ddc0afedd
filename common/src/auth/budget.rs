//! A failure budget: after a few wrong secrets for one client id from one source, more
//! for one client id from all sources together (guesses spread over many addresses), or
//! many from one source for any ids, that key is answered 429 for the rest of its window
//! without hashing anything. Guessing stays slow and a flood of guesses costs no CPU.
//!
//! Windows are fixed (the first failure opens one; it closes [`BudgetLimits::window`]
//! later) and a success does not reset them, so a caller who knows one valid secret
//! cannot interleave it to buy more guesses. A client whose valid credentials are in the
//! verified cache is never asked for the budget (see `Authenticator::check`): guesses
//! against its id do not lock it out while it keeps working.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failures each key may have per window.
#[derive(Clone, Copy, Debug)]
pub struct BudgetLimits {
    /// Failures for one client id from one source (or from anywhere, when the source
    /// is unknown).
    pub per_client: u32,
    /// Failures from one source, whatever the client ids.
    pub per_source: u32,
    /// Failures for one client id from all sources together.
    pub per_client_anywhere: u32,
    /// How long a window lasts.
    pub window: Duration,
    /// At most this many keys are tracked; when full, closed windows go, then the
    /// oldest.
    pub max_keys: usize,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        BudgetLimits {
            per_client: 10,
            per_source: 100,
            per_client_anywhere: 50,
            window: Duration::from_secs(60),
            max_keys: 10_000,
        }
    }
}

struct Window {
    opened: Instant,
    failures: u32,
}

/// Failures counted per key, in fixed windows.
pub struct FailureBudget {
    limits: BudgetLimits,
    windows: Mutex<HashMap<String, Window>>,
}

/// The keys one attempt counts against, each with whether it applies: (client id,
/// source), the source alone when it is known, and the client id from anywhere. (A
/// `\0` inside an id could at worst make two ids share a budget.)
fn keys(client_id: &str, source: Option<&str>) -> [(String, bool); 3] {
    let source = source.unwrap_or("");
    [
        (format!("c\0{client_id}\0{source}"), true),
        (format!("s\0{source}"), !source.is_empty()),
        (format!("a\0{client_id}"), true),
    ]
}

impl BudgetLimits {
    fn of_keys(&self) -> [u32; 3] {
        [self.per_client, self.per_source, self.per_client_anywhere]
    }
}

impl FailureBudget {
    /// An empty budget.
    pub fn new(limits: BudgetLimits) -> Self {
        FailureBudget {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// When `client_id` from `source` has spent a budget: how long until its window
    /// closes (at least one second).
    pub fn exhausted(&self, client_id: &str, source: Option<&str>) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        self.wait(&windows, client_id, source, Instant::now())
    }

    fn wait(
        &self,
        windows: &HashMap<String, Window>,
        client_id: &str,
        source: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        let limits = self.limits.of_keys();
        keys(client_id, source)
            .iter()
            .zip(limits)
            .filter(|((_, used), _)| *used)
            .filter_map(|((key, _), limit)| {
                let w = windows.get(key)?;
                let left = self
                    .limits
                    .window
                    .checked_sub(now.duration_since(w.opened))?;
                (w.failures >= limit).then_some(left.max(Duration::from_secs(1)))
            })
            .max()
    }

    /// Takes one attempt of `client_id` from `source` out of its budgets, before the
    /// secret is checked, so that concurrent guesses cannot overrun a budget: `Err(wait)`
    /// when a budget is spent (answer 429), else `Ok(last)`, `last` when this attempt
    /// was the last one a budget allowed. A successful attempt is handed back with
    /// [`FailureBudget::give_back`]; a failed one stays counted.
    pub fn take(&self, client_id: &str, source: Option<&str>) -> Result<bool, Duration> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wait) = self.wait(&windows, client_id, source, now) {
            return Err(wait);
        }
        let limits = self.limits.of_keys();
        let mut last = false;
        for ((key, used), limit) in keys(client_id, source).into_iter().zip(limits) {
            if !used {
                continue;
            }
            if !windows.contains_key(&key) && windows.len() >= self.limits.max_keys {
                self.make_room(&mut windows, now);
            }
            let w = windows.entry(key).or_insert(Window {
                opened: now,
                failures: 0,
            });
            if now.duration_since(w.opened) >= self.limits.window {
                *w = Window {
                    opened: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
            last |= w.failures == limit;
        }
        Ok(last)
    }

    /// Hands back an attempt taken with [`FailureBudget::take`] that succeeded.
    pub fn give_back(&self, client_id: &str, source: Option<&str>) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for (key, used) in keys(client_id, source) {
            if let Some(w) = windows.get_mut(&key).filter(|_| used) {
                w.failures = w.failures.saturating_sub(1);
            }
        }
    }

    /// Drops closed windows, then the oldest one if still full.
    fn make_room(&self, windows: &mut HashMap<String, Window>, now: Instant) {
        let window = self.limits.window;
        windows.retain(|_, w| now.duration_since(w.opened) < window);
        if windows.len() >= self.limits.max_keys {
            let oldest = windows
                .iter()
                .min_by_key(|(_, w)| w.opened)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                windows.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> FailureBudget {
        FailureBudget::new(BudgetLimits {
            per_client: 3,
            per_source: 5,
            per_client_anywhere: 7,
            window: Duration::from_millis(200),
            max_keys: 100,
        })
    }

    #[test]
    fn a_client_and_source_is_stopped_after_its_failures_until_the_window_closes() {
        let b = small();
        for i in 0..3 {
            assert_eq!(b.exhausted("bulk-client", Some("203.0.113.9")), None);
            assert_eq!(b.take("bulk-client", Some("203.0.113.9")), Ok(i == 2));
        }
        assert!(b.take("bulk-client", Some("203.0.113.9")).is_err());
        let wait = b.exhausted("bulk-client", Some("203.0.113.9")).unwrap();
        assert!(
            wait >= Duration::from_secs(1),
            "Retry-After is at least 1 s"
        );
        // Another source, or another client from the same source, still has its own.
        assert_eq!(b.exhausted("bulk-client", Some("198.51.100.7")), None);
        assert_eq!(b.exhausted("other", Some("203.0.113.9")), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(b.exhausted("bulk-client", Some("203.0.113.9")), None);
    }

    #[test]
    fn one_source_spraying_client_ids_is_stopped_too() {
        let b = small();
        for i in 0..5 {
            b.take(&format!("guess-{i}"), Some("203.0.113.9")).unwrap();
        }
        assert!(b.exhausted("never-tried", Some("203.0.113.9")).is_some());
        // Without a known source only the per-client budget applies.
        for i in 0..5 {
            b.take(&format!("guess-{i}"), None).unwrap();
        }
        assert_eq!(b.exhausted("never-tried", None), None);
        assert!(b.exhausted("guess-0", None).is_none());
    }

    #[test]
    fn one_client_id_guessed_from_many_sources_is_stopped_too() {
        let b = small();
        for i in 0..7 {
            b.take("bulk-client", Some(&format!("203.0.113.{i}")))
                .unwrap();
        }
        // A source that never failed is refused for this id, not for others.
        assert!(b.exhausted("bulk-client", Some("198.51.100.7")).is_some());
        assert!(b.take("bulk-client", Some("198.51.100.8")).is_err());
        assert_eq!(b.exhausted("other", Some("198.51.100.7")), None);
    }

    #[test]
    fn a_successful_attempt_is_handed_back() {
        let b = small();
        for _ in 0..10 {
            b.take("bulk-client", None).unwrap();
            b.give_back("bulk-client", None);
        }
        assert_eq!(b.exhausted("bulk-client", None), None);
    }

    #[test]
    fn the_tracked_keys_stay_bounded() {
        let b = small();
        for i in 0..1_000 {
            b.take(&format!("id-{i}"), None).unwrap();
        }
        assert!(b.windows.lock().unwrap().len() <= 100);
    }
}
