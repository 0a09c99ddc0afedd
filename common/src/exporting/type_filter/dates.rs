//! Date search values: a prefix, then `YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]]`,
//! read as the range its precision covers.

use chrono::{DateTime, Duration, FixedOffset, Months, NaiveDate, NaiveDateTime, NaiveTime, Utc};

use super::{invalid, FilterError};
use crate::fhir::search::filter::{DateRange, Prefix, Value};

/// Splits a leading comparison prefix off `s` when one is there and `rest_ok` accepts
/// what follows (a value of the parameter's type).
pub(super) fn split_prefix(s: &str, rest_ok: impl Fn(&str) -> bool) -> (Prefix, &str) {
    let prefix = match s.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, s),
    };
    if rest_ok(&s[2..]) {
        (prefix, &s[2..])
    } else {
        (Prefix::Eq, s)
    }
}

const FORMAT: &str = "a date is [prefix]YYYY, YYYY-MM, YYYY-MM-DD or \
    YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm], prefixes eq ne gt lt ge le sa eb ap";

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// The instants `[low, high)` a date search value stands for; no zone means UTC.
pub fn date_range(s: &str) -> Option<DateRange> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let year = digits(parts.next()?, 4)? as i32;
    if year == 0 {
        return None;
    }
    let month = match parts.next() {
        Some(m) => Some(digits(m, 2)?),
        None => None,
    };
    let day = match parts.next() {
        Some(d) => Some(digits(d, 2)?),
        None => None,
    };
    if parts.next().is_some() || (time.is_some() && day.is_none()) {
        return None;
    }
    let start = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
    let Some(time) = time else {
        let low = start.and_time(NaiveTime::MIN);
        let high = match (month, day) {
            (None, _) => low.checked_add_months(Months::new(12))?,
            (_, None) => low.checked_add_months(Months::new(1))?,
            _ => low + Duration::days(1),
        };
        return Some(DateRange {
            low: low.and_utc(),
            high: high.and_utc(),
        });
    };
    // hh:mm[:ss[.f]] then the zone.
    let zone_at = time.find(['Z', '+', '-', ' ']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let offset = offset(zone)?;
    let mut fields = clock.split(':');
    let hour = digits(fields.next()?, 2)?;
    let minute = digits(fields.next()?, 2)?;
    let (second, nanos, width) = match fields.next() {
        None => (0, 0, Duration::minutes(1)),
        Some(sec) => seconds(sec)?,
    };
    if fields.next().is_some() {
        return None;
    }
    let clock = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = NaiveDateTime::new(start, clock);
    let low = local
        .and_local_timezone(offset)
        .single()?
        .with_timezone(&Utc);
    Some(DateRange {
        low,
        high: low + width,
    })
}

/// A zone: none or `Z` (UTC), or `+hh:mm` / `-hh:mm` up to 14 hours.
fn offset(zone: &str) -> Option<FixedOffset> {
    match zone {
        "" | "Z" => FixedOffset::east_opt(0),
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':')?;
            let secs = (digits(h, 2)? * 3600 + digits(m, 2)? * 60) as i32;
            if secs > 14 * 3600 {
                return None;
            }
            FixedOffset::east_opt(sign * secs)
        }
    }
}

/// `ss` or `ss.f` (1-9 digits): the second, its nanoseconds, and the width of the
/// precision given (a second, or the last digit's unit, at least a microsecond).
fn seconds(sec: &str) -> Option<(u32, u32, Duration)> {
    let Some((whole, frac)) = sec.split_once('.') else {
        return Some((digits(sec, 2)?, 0, Duration::seconds(1)));
    };
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    let width =
        Duration::nanoseconds(10i64.pow(9 - frac.len() as u32)).max(Duration::microseconds(1));
    Some((digits(whole, 2)?, nanos, width))
}

/// A date search value, `ap` widened by 10% of the time between the value and `now`
/// (at least one day) on both sides.
pub(super) fn parse_date(piece: &str, now: DateTime<Utc>) -> Result<Value, FilterError> {
    let starts_with_digit = |r: &str| r.starts_with(|c: char| c.is_ascii_digit());
    let (prefix, rest) = split_prefix(piece, starts_with_digit);
    let mut range = date_range(rest).ok_or_else(|| invalid(piece, FORMAT))?;
    if prefix == Prefix::Ap {
        let gap = (now - range.low).abs();
        let tolerance = (gap / 10).max(Duration::days(1));
        range = DateRange {
            low: range.low - tolerance,
            high: range.high + tolerance,
        };
    }
    Ok(Value::Date { prefix, range })
}
