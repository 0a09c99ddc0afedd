//! Object keys of dump-to-bucket files, as dlt (and so ingestr) lays them out: a
//! `layout` of placeholders, default `{table_name}/{load_id}.{file_id}.{ext}`.
//!
//! | placeholder | value |
//! |---|---|
//! | `{table_name}` | the table (`patient`), or `query` for a query dump |
//! | `{schema_name}` | the Postgres schema of the tables, `public` |
//! | `{load_id}` | the job's load id: its start as Unix seconds with microseconds (`1795473296.123456`) |
//! | `{file_id}` | the file within the table: `<range>_<n>` (`1_00003`), stable across retries |
//! | `{ext}` | `ndjson`, `csv`, `tsv`, `parquet`, `sql` or `bulk.ndjson`, plus `.gz` with gzip; appended as `.{ext}` when the layout has no `{ext}` |
//! | `{timestamp}`, `{timestamp_ms}`, `{load_package_timestamp}`, `{load_package_timestamp_ms}` | the job's start, Unix seconds / milliseconds |
//! | `{curr_date}` | `2026-11-23` |
//! | `{YYYY}` `{YY}` `{Y}` | year: 2026, 26, 2026 |
//! | `{MMMM}` `{MMM}` `{MM}` `{M}` | month: november, nov, 11, 11 |
//! | `{DD}` `{D}` | day of month: 03, 3 |
//! | `{HH}` `{H}`, `{mm}` `{m}`, `{ss}` `{s}` | hour, minute, second (UTC): 07, 7 ... |
//! | `{SSSS}` `{SSS}` `{SS}` `{S}` | fractions of the second: 1/10000 ... 1/10 |
//! | `{dddd}` `{ddd}` `{dd}` `{d}` | weekday: monday, mon, mo, 1 (0 = Sunday) |
//! | `{Q}` | quarter 1-4 |
//!
//! Names are lower case as dlt writes them. All times are the job's start, in UTC.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::error::{Error, Result};

/// dlt's default layout.
pub const DEFAULT_LAYOUT: &str = "{table_name}/{load_id}.{file_id}.{ext}";

const PLACEHOLDERS: &[&str] = &[
    "table_name",
    "schema_name",
    "load_id",
    "file_id",
    "ext",
    "timestamp",
    "timestamp_ms",
    "load_package_timestamp",
    "load_package_timestamp_ms",
    "curr_date",
    "YYYY",
    "YY",
    "Y",
    "MMMM",
    "MMM",
    "MM",
    "M",
    "DD",
    "D",
    "HH",
    "H",
    "mm",
    "m",
    "ss",
    "s",
    "SSSS",
    "SSS",
    "SS",
    "S",
    "dddd",
    "ddd",
    "dd",
    "d",
    "Q",
];

/// The placeholders of `layout`, in order; unknown or unclosed ones are a
/// `BadRequest` naming them.
pub fn check(layout: &str) -> Result<Vec<String>> {
    if layout.is_empty() || layout.len() > 512 {
        return Err(Error::BadRequest(
            "layout must be 1 to 512 characters".into(),
        ));
    }
    let mut found = Vec::new();
    let mut rest = layout;
    while let Some(open) = rest.find('{') {
        // A `}` in the text before this placeholder has no `{` of its own.
        if rest[..open].contains('}') {
            return Err(Error::BadRequest(format!(
                "layout {layout:?} has a }} without its {{"
            )));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            Error::BadRequest(format!("layout {layout:?} has a {{ without its }}"))
        })?;
        let name = &after[..close];
        if name.contains('{') {
            return Err(Error::BadRequest(format!(
                "layout {layout:?} has a {{ without its }}"
            )));
        }
        if !PLACEHOLDERS.contains(&name) {
            return Err(Error::BadRequest(format!(
                "layout placeholder {{{name}}} is unknown: use {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        found.push(name.to_string());
        rest = &after[close + 1..];
    }
    if rest.contains('}') || layout.split('{').next().unwrap_or("").contains('}') {
        return Err(Error::BadRequest(format!(
            "layout {layout:?} has a }} without its {{"
        )));
    }
    // Keys are paths inside the bucket: no way out of the prefix, nothing invisible.
    if layout.starts_with('/')
        || layout.split('/').any(|s| s == ".." || s == ".")
        || layout.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(Error::BadRequest(format!(
            "layout {layout:?} must be a relative path without '.', '..', backslashes or control characters"
        )));
    }
    Ok(found)
}

/// What a file's key is made of.
pub struct KeyParts<'a> {
    pub table: &'a str,
    pub load_id: &'a str,
    pub file_id: &'a str,
    pub ext: &'a str,
    /// The job's start.
    pub started: DateTime<Utc>,
}

/// A job's load id: its start as Unix seconds with microseconds.
pub fn load_id(started: DateTime<Utc>) -> String {
    format!(
        "{}.{:06}",
        started.timestamp(),
        started.timestamp_subsec_micros()
    )
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// The key of a file: `layout` (checked) with its placeholders filled, `.{ext}`
/// appended when the layout has no `{ext}`.
pub fn render(layout: &str, parts: &KeyParts<'_>) -> String {
    let t = parts.started;
    let month = MONTHS[t.month0() as usize];
    let day = DAYS[t.weekday().num_days_from_sunday() as usize];
    let nanos = t.timestamp_subsec_nanos();
    let value = |name: &str| -> String {
        match name {
            "table_name" => parts.table.to_string(),
            "schema_name" => "public".to_string(),
            "load_id" => parts.load_id.to_string(),
            "file_id" => parts.file_id.to_string(),
            "ext" => parts.ext.to_string(),
            "timestamp" | "load_package_timestamp" => t.timestamp().to_string(),
            "timestamp_ms" | "load_package_timestamp_ms" => t.timestamp_millis().to_string(),
            "curr_date" => t.format("%Y-%m-%d").to_string(),
            "YYYY" | "Y" => format!("{:04}", t.year()),
            "YY" => format!("{:02}", t.year() % 100),
            "MMMM" => month.to_string(),
            "MMM" => month[..3].to_string(),
            "MM" => format!("{:02}", t.month()),
            "M" => t.month().to_string(),
            "DD" => format!("{:02}", t.day()),
            "D" => t.day().to_string(),
            "HH" => format!("{:02}", t.hour()),
            "H" => t.hour().to_string(),
            "mm" => format!("{:02}", t.minute()),
            "m" => t.minute().to_string(),
            "ss" => format!("{:02}", t.second()),
            "s" => t.second().to_string(),
            "SSSS" => format!("{:04}", nanos / 100_000),
            "SSS" => format!("{:03}", nanos / 1_000_000),
            "SS" => format!("{:02}", nanos / 10_000_000),
            "S" => format!("{}", nanos / 100_000_000),
            "dddd" => day.to_string(),
            "ddd" => day[..3].to_string(),
            "dd" => day[..2].to_string(),
            "d" => t.weekday().num_days_from_sunday().to_string(),
            "Q" => ((t.month0() / 3) + 1).to_string(),
            _ => String::new(),
        }
    };
    let mut out = String::new();
    let mut rest = layout;
    let mut has_ext = false;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        let name = &after[..close];
        has_ext |= name == "ext";
        out.push_str(&value(name));
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    if !has_ext {
        out.push('.');
        out.push_str(parts.ext);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> KeyParts<'static> {
        KeyParts {
            table: "patient",
            load_id: "1795473296.123456",
            file_id: "1_00001",
            ext: "parquet",
            // Monday 2026-11-23 07:04:05.678912 UTC
            started: DateTime::parse_from_rfc3339("2026-11-23T07:04:05.678912Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn the_default_layout_and_every_placeholder() {
        assert_eq!(
            render(DEFAULT_LAYOUT, &parts()),
            "patient/1795473296.123456.1_00001.parquet"
        );
        let all = "{schema_name}/{table_name}/{YYYY}-{YY}-{Y}/{MMMM}-{MMM}-{MM}-{M}/{DD}-{D}/{HH}{H}:{mm}{m}:{ss}{s}.{SSSS}.{SSS}.{SS}.{S}/{dddd}-{ddd}-{dd}-{d}/Q{Q}/{timestamp}-{timestamp_ms}-{load_package_timestamp}-{load_package_timestamp_ms}-{curr_date}";
        check(all).unwrap();
        assert_eq!(
            render(all, &parts()),
            "public/patient/2026-26-2026/november-nov-11-11/23-23/077:044:055.6789.678.67.6/monday-mon-mo-1/Q4/1795417445-1795417445678-1795417445-1795417445678-2026-11-23.parquet"
        );
        assert_eq!(render("{table_name}.{ext}", &parts()), "patient.parquet");
    }

    #[test]
    fn bad_layouts_are_refused_naming_the_problem() {
        for (layout, why) in [
            ("{table}/{file_id}", "{table} is unknown"),
            ("{table_name", "without its }"),
            ("a}/{file_id}", "without its {"),
            ("../{file_id}", "relative path"),
            ("/abs/{file_id}", "relative path"),
            ("a/./{file_id}", "relative path"),
            ("", "1 to 512"),
        ] {
            match check(layout) {
                Err(Error::BadRequest(m)) => assert!(m.contains(why), "{layout}: {m}"),
                other => panic!("{layout}: {other:?}"),
            }
        }
    }
}
