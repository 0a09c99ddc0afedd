//! The last hour's load throughput, minute by minute, from the LoaderFiles themselves
//! (their start, end and count), so that it shows every loader's work: in AWS the
//! process answering the console is never the one that loaded.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// One file's run: when it started, when it ended (`None` while it loads) and the
/// resources it has loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub loaded: u64,
}

/// Resources loaded in each of the `minutes` minutes up to `now`, oldest first (the last
/// is the minute under way). A file's count is spread evenly over its run (from its start
/// to its end, or to `now` while it loads); the shares are rounded so that a run inside
/// the window adds exactly its count.
pub fn per_minute(spans: &[Span], now: DateTime<Utc>, minutes: usize) -> Vec<u64> {
    let mut out = vec![0u64; minutes];
    if minutes == 0 {
        return out;
    }
    let minute = TimeDelta::minutes(1);
    let last = now.duration_trunc(minute).unwrap_or(now);
    let first = last - minute * (minutes as i32 - 1);
    for s in spans {
        let end = s.end.unwrap_or(now).min(now);
        let start = s.start.min(end);
        let run = (end - start).num_milliseconds();
        if run <= 0 {
            // A run too short to measure: its count belongs to the minute it ended in.
            if end >= first {
                let i = ((end - first).num_seconds() / 60) as usize;
                out[i.min(minutes - 1)] += s.loaded;
            }
            continue;
        }
        // Cumulative rounding: bucket i gets round(n x run-up-to-its-end) minus what the
        // run before it got, so the shares add up to the rounded whole. Measured from the
        // run's start each time (not as a sum of per-minute pieces, each rounded to the
        // millisecond): the bucket the run ends in reaches exactly n. What ran before the
        // window is not shown.
        let share = |t: DateTime<Utc>| -> u64 {
            let done = (t.min(end) - start).num_milliseconds().clamp(0, run);
            (s.loaded as f64 * done as f64 / run as f64).round() as u64
        };
        let mut given = share(first);
        for (i, slot) in out.iter_mut().enumerate() {
            let from = first + minute * i as i32;
            let to = from + minute;
            if end.min(to) <= start.max(from) {
                continue;
            }
            let due = share(to);
            *slot += due - given;
            given = due;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sub_millisecond_ends_lose_no_resource() {
        // Each minute's piece of this run rounds down to the millisecond; summed, they
        // came to a millisecond short of the run, and 120,300 showed as 120,299.
        let now = at("2026-12-03T10:00:30Z");
        let span = Span {
            start: at("2026-12-03T09:57:30.000400Z"),
            end: Some(at("2026-12-03T09:59:30.000900Z")),
            loaded: 120_300,
        };
        let m = per_minute(&[span], now, 5);
        assert_eq!(m.iter().sum::<u64>(), 120_300, "{m:?}");
    }

    #[test]
    fn a_run_inside_the_window_adds_exactly_its_count_spread_over_its_minutes() {
        let now = at("2026-12-03T10:00:30Z");
        let span = Span {
            start: at("2026-12-03T09:57:30Z"),
            end: Some(at("2026-12-03T09:59:30Z")),
            loaded: 1001,
        };
        let m = per_minute(&[span], now, 5);
        // Minutes 09:56 .. 10:00; the run covers half of 09:57, all of 09:58, half of 09:59.
        assert_eq!(m, vec![0, 250, 501, 250, 0]);
        assert_eq!(m.iter().sum::<u64>(), 1001);
    }

    #[test]
    fn a_running_file_counts_up_to_now_and_a_run_before_the_window_only_its_part_in_it() {
        let now = at("2026-12-03T10:00:00Z");
        let running = Span {
            start: at("2026-12-03T09:59:00Z"),
            end: None,
            loaded: 600,
        };
        let old = Span {
            start: at("2026-12-03T09:54:00Z"),
            end: Some(at("2026-12-03T09:58:00Z")),
            loaded: 400,
        };
        let m = per_minute(&[running, old], now, 3);
        // Window 09:58, 09:59, 10:00 (under way). The old run ended as the window began.
        assert_eq!(m, vec![0, 600, 0]);
        // A 4-minute run whose last 30 s fall in the window: an eighth of it.
        assert_eq!(per_minute(&[old_at(&now)], now, 3), vec![50, 0, 0]);
    }

    fn old_at(now: &DateTime<Utc>) -> Span {
        // 09:54:30 to 09:58:30 for a window from 09:58.
        Span {
            start: *now - TimeDelta::minutes(5) - TimeDelta::seconds(30),
            end: Some(*now - TimeDelta::minutes(1) - TimeDelta::seconds(30)),
            loaded: 400,
        }
    }

    #[test]
    fn an_instant_run_counts_in_its_minute_and_a_start_after_its_end_is_no_run() {
        let now = at("2026-12-03T10:00:10Z");
        let instant = Span {
            start: at("2026-12-03T09:59:20Z"),
            end: Some(at("2026-12-03T09:59:20Z")),
            loaded: 7,
        };
        let backwards = Span {
            start: at("2026-12-03T10:00:05Z"),
            end: Some(at("2026-12-03T10:00:01Z")),
            loaded: 3,
        };
        assert_eq!(per_minute(&[instant, backwards], now, 2), vec![7, 3]);
        assert!(per_minute(&[], now, 0).is_empty());
    }
}
