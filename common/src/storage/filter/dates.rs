//! Date tests: the target's range `[lo, hi)` against the search range `[SL, SH)`.
//!
//! A stored date, dateTime or instant is matched by a regular expression and its
//! bounds computed with `make_interval` arithmetic on a naive timestamp, which never
//! raises an error (a cast would, on `2021-02-30` or similar hand-inserted data, and
//! abort the export): such a value simply rolls over (`2021-03-02`). A value without a
//! time zone is UTC. Fractions of a second beyond 9 digits, or any other shape, make
//! the value not match.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

use super::jsonpath::path;
use super::literal;
use crate::error::Result;
use crate::fhir::search::filter::{DateRange, Prefix};
use crate::fhir::search::ParamPath;

/// Groups: 1 year, 2 month, 3 day, 4 hour, 5 minute, 6 seconds (with fraction), 7 zone.
const SHAPE: &str = r"^([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2}(?:\.[0-9]{1,9})?))?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?$";

/// A timestamptz literal; years outside 1..=9999 become -infinity / infinity.
fn instant(t: &DateTime<Utc>) -> String {
    match t.year() {
        y if y < 1 => "'-infinity'::timestamptz".into(),
        y if y > 9999 => "'infinity'::timestamptz".into(),
        _ => format!(
            "{}::timestamptz",
            literal(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        ),
    }
}

/// The start (or, `upper`, the end) of the range of the regexp_match result `m`.
fn bound(m: &str, upper: bool) -> String {
    let zone = format!(
        "CASE WHEN {m}[7] IS NULL OR {m}[7] = 'Z' THEN 0 ELSE \
         (CASE WHEN left({m}[7], 1) = '-' THEN -1 ELSE 1 END) * \
         (substr({m}[7], 2, 2)::int * 60 + substr({m}[7], 5, 2)::int) END"
    );
    let width = if upper {
        format!(
            " + CASE WHEN {m}[2] IS NULL THEN interval '1 year' \
             WHEN {m}[3] IS NULL THEN interval '1 month' \
             WHEN {m}[4] IS NULL THEN interval '1 day' \
             WHEN {m}[6] IS NULL THEN interval '1 minute' \
             WHEN strpos({m}[6], '.') = 0 THEN interval '1 second' \
             ELSE make_interval(secs => greatest(power(10::float8, 3 - length({m}[6])), 0.000001)) END"
        )
    } else {
        String::new()
    };
    format!(
        "((timestamp '1970-01-01' + make_interval(years => {m}[1]::int - 1970, \
         months => coalesce({m}[2]::int, 1) - 1, days => coalesce({m}[3]::int, 1) - 1, \
         hours => coalesce({m}[4]::int, 0), mins => coalesce({m}[5]::int, 0) - ({zone}), \
         secs => coalesce({m}[6]::float8, 0)){width}) AT TIME ZONE 'UTC')"
    )
}

/// The comparison of a target range `[lo, hi)` with the search range.
fn compare(lo: &str, hi: &str, prefix: Prefix, range: &DateRange) -> String {
    let (sl, sh) = (instant(&range.low), instant(&range.high));
    let within = format!("{lo} >= {sl} AND {hi} <= {sh}");
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => format!("NOT ({within})"),
        Prefix::Gt => format!("{hi} > {sh}"),
        Prefix::Lt => format!("{lo} < {sl}"),
        Prefix::Ge => format!("({hi} > {sh} OR ({within}))"),
        Prefix::Le => format!("({lo} < {sl} OR ({within}))"),
        Prefix::Sa => format!("{lo} >= {sh}"),
        Prefix::Eb => format!("{hi} <= {sl}"),
        Prefix::Ap => format!("{lo} < {sh} AND {hi} > {sl}"),
    }
}

/// `_lastUpdated`: the instant `ts` as the range `[ts, ts + 1µs)`, written so a btree
/// index on the column can serve it.
pub(super) fn point(ts: &str, prefix: Prefix, range: &DateRange) -> String {
    let (sl, sh) = (instant(&range.low), instant(&range.high));
    let within = format!("{ts} >= {sl} AND {ts} < {sh}");
    match prefix {
        Prefix::Eq | Prefix::Ap => format!("({within})"),
        Prefix::Ne => format!("(NOT ({within}))"),
        Prefix::Gt | Prefix::Sa => format!("{ts} >= {sh}"),
        Prefix::Lt | Prefix::Eb => format!("{ts} < {sl}"),
        Prefix::Ge => format!("{ts} >= {sl}"),
        Prefix::Le => format!("{ts} < {sh}"),
    }
}

/// A date test on element `p` of type `ty` (date, dateTime, instant, Period, Timing).
pub(super) fn element(
    p: &ParamPath,
    ty: &str,
    prefix: Prefix,
    range: &DateRange,
    res: &str,
) -> Result<Option<String>> {
    let base = path(p)?;
    let shape = literal(SHAPE);
    let (jp, matches, lo, hi, present) = match ty {
        "date" | "dateTime" | "instant" | "Timing" => {
            let jp = if ty == "Timing" {
                format!("{base}.\"event\"[*]")
            } else {
                base
            };
            (
                jp,
                format!("regexp_match(tf_d.v #>> '{{}}', {shape}) AS m"),
                bound("tf_m.m", false),
                bound("tf_m.m", true),
                "tf_m.m IS NOT NULL".to_string(),
            )
        }
        "Period" => (
            base,
            format!(
                "regexp_match(tf_d.v ->> 'start', {shape}) AS s, \
                 regexp_match(tf_d.v ->> 'end', {shape}) AS e"
            ),
            format!(
                "coalesce({}, '-infinity'::timestamptz)",
                bound("tf_m.s", false)
            ),
            format!(
                "coalesce({}, 'infinity'::timestamptz)",
                bound("tf_m.e", true)
            ),
            "(tf_m.s IS NOT NULL OR tf_m.e IS NOT NULL)".to_string(),
        ),
        _ => return Ok(None),
    };
    Ok(Some(format!(
        "EXISTS (SELECT 1 FROM jsonb_path_query({res}, {}, '{{}}', true) AS tf_d(v) \
         CROSS JOIN LATERAL (SELECT {matches}) AS tf_m \
         CROSS JOIN LATERAL (SELECT {lo} AS lo, {hi} AS hi) AS tf_r \
         WHERE {present} AND {})",
        literal(&jp),
        compare("tf_r.lo", "tf_r.hi", prefix, range)
    )))
}
