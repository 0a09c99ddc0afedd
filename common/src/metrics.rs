//! What siphon counts, published two ways from one call, [`record`]:
//!
//! - in Lambda, as a CloudWatch **Embedded Metric Format** document on stdout: CloudWatch
//!   turns the log line into metrics, with no API call and no added latency. Namespace
//!   [`NAMESPACE`]; dimensions `Function` (the Lambda function's name), `Operation`, and,
//!   where a figure belongs to one, `ResourceType` (a FHIR R4 type or `other`: never an
//!   id, a URL or anything else a caller can make up, so the number of series is
//!   bounded);
//! - in every process, as running sums that `make serve` shows at `GET /metrics` in the
//!   Prometheus text format ([`prometheus`]).
//!
//! The figures and their names are listed in docs/operations.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every figure.
pub const NAMESPACE: &str = "siphon";

/// A figure's unit, as CloudWatch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    Count,
    Bytes,
    Seconds,
    /// A rate (resources per second of one file).
    CountPerSecond,
}

impl Unit {
    fn cloudwatch(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
            Unit::CountPerSecond => "Count/Second",
        }
    }
}

/// One figure: its name (CamelCase, as CloudWatch shows it), unit and value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

/// A count (`name`, `n`).
pub fn count(name: &'static str, n: u64) -> Figure {
    Figure {
        name,
        unit: Unit::Count,
        value: n as f64,
    }
}

/// A number of bytes.
pub fn bytes(name: &'static str, n: u64) -> Figure {
    Figure {
        name,
        unit: Unit::Bytes,
        value: n as f64,
    }
}

/// A rate: `n` things in `d` (0 for a zero duration).
pub fn per_second(name: &'static str, n: u64, d: std::time::Duration) -> Figure {
    let secs = d.as_secs_f64();
    Figure {
        name,
        unit: Unit::CountPerSecond,
        value: if secs > 0.0 { n as f64 / secs } else { 0.0 },
    }
}

/// A duration, in seconds.
pub fn seconds(name: &'static str, d: std::time::Duration) -> Figure {
    Figure {
        name,
        unit: Unit::Seconds,
        value: d.as_secs_f64(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    name: &'static str,
    unit: Unit,
    operation: &'static str,
    resource_type: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sum {
    total: f64,
    samples: u64,
}

struct Registry {
    /// Print EMF documents (in Lambda).
    emf: bool,
    /// The `Function` dimension.
    function: String,
    sums: Mutex<BTreeMap<Key, Sum>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // Set by Lambda itself, never by siphon's configuration.
        let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| {
            if in_lambda {
                "lambda".into()
            } else {
                "siphon-local".into()
            }
        });
        Registry {
            emf: in_lambda,
            function,
            sums: Mutex::new(BTreeMap::new()),
        }
    })
}

/// A resource type as a dimension: an R4 type, or `other` (a dimension's values must be
/// few, whatever callers send).
fn bounded(resource_type: Option<&str>) -> Option<&'static str> {
    resource_type.map(|t| crate::fhir::static_resource_type(t).unwrap_or("other"))
}

/// Records `figures` of `operation` (for `resource_type`, when they belong to one).
pub fn record(operation: &'static str, resource_type: Option<&str>, figures: &[Figure]) {
    let registry = registry();
    let resource_type = bounded(resource_type);
    {
        let mut sums = registry.sums.lock().unwrap_or_else(|p| p.into_inner());
        for f in figures {
            let sum = sums
                .entry(Key {
                    name: f.name,
                    unit: f.unit,
                    operation,
                    resource_type,
                })
                .or_default();
            sum.total += f.value;
            sum.samples += 1;
        }
    }
    if registry.emf && !figures.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // EMF documents are their own lines on stdout, beside the JSON logs.
        println!(
            "{}",
            emf(&registry.function, operation, resource_type, figures, now)
        );
    }
}

/// The EMF document of one [`record`] call.
pub fn emf(
    function: &str,
    operation: &str,
    resource_type: Option<&str>,
    figures: &[Figure],
    timestamp_ms: u64,
) -> Value {
    let mut dimensions = vec!["Function", "Operation"];
    if resource_type.is_some() {
        dimensions.push("ResourceType");
    }
    let metrics: Vec<Value> = figures
        .iter()
        .map(|f| json!({"Name": f.name, "Unit": f.unit.cloudwatch()}))
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions],
                "Metrics": metrics,
            }],
        }),
    );
    doc.insert("Function".into(), json!(function));
    doc.insert("Operation".into(), json!(operation));
    if let Some(t) = resource_type {
        doc.insert("ResourceType".into(), json!(t));
    }
    for f in figures {
        // Two figures of one name in one call are one value: their sum.
        let v = doc.get(f.name).and_then(Value::as_f64).unwrap_or(0.0) + f.value;
        doc.insert(f.name.into(), json!(v));
    }
    Value::Object(doc)
}

/// `ResourcesLoaded` -> `resources_loaded`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every sum so far in the Prometheus text format (version 0.0.4): counts and bytes as
/// counters (`siphon_<name>_total`), durations as summaries without quantiles
/// (`siphon_<name>_sum`, `_count`).
pub fn prometheus() -> String {
    let registry = registry();
    let sums = registry
        .sums
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    render(&registry.function, &sums)
}

fn render(function: &str, sums: &BTreeMap<Key, Sum>) -> String {
    let mut by_name: BTreeMap<(&str, Unit), Vec<(&Key, &Sum)>> = BTreeMap::new();
    for (k, v) in sums {
        by_name.entry((k.name, k.unit)).or_default().push((k, v));
    }
    let mut out = String::new();
    for ((name, unit), series) in by_name {
        let base = format!("{NAMESPACE}_{}", snake(name));
        let labels = |k: &Key| {
            let mut l = format!(
                "function=\"{}\",operation=\"{}\"",
                escape(function),
                k.operation
            );
            if let Some(t) = k.resource_type {
                let _ = write!(l, ",resource_type=\"{t}\"");
            }
            l
        };
        match unit {
            Unit::Count | Unit::Bytes => {
                let _ = writeln!(out, "# TYPE {base}_total counter");
                for (k, v) in series {
                    let _ = writeln!(out, "{base}_total{{{}}} {}", labels(k), v.total);
                }
            }
            // Durations and rates: their sum and number (a mean is sum / count).
            Unit::Seconds | Unit::CountPerSecond => {
                let _ = writeln!(out, "# TYPE {base} summary");
                for (k, v) in series {
                    let _ = writeln!(out, "{base}_sum{{{}}} {}", labels(k), v.total);
                    let _ = writeln!(out, "{base}_count{{{}}} {}", labels(k), v.samples);
                }
            }
        }
    }
    out
}

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_count_per_second_and_a_zero_duration_is_no_rate() {
        let r = per_second(
            "ResourcesPerSecond",
            1000,
            std::time::Duration::from_millis(500),
        );
        assert_eq!((r.unit, r.value), (Unit::CountPerSecond, 2000.0));
        assert_eq!(per_second("X", 5, std::time::Duration::ZERO).value, 0.0);
        assert_eq!(Unit::CountPerSecond.cloudwatch(), "Count/Second");
        let mut sums = BTreeMap::new();
        sums.insert(
            Key {
                name: "ResourcesPerSecond",
                unit: Unit::CountPerSecond,
                operation: "load",
                resource_type: None,
            },
            Sum {
                total: 3000.0,
                samples: 2,
            },
        );
        let text = render("f", &sums);
        assert!(
            text.contains("# TYPE siphon_resources_per_second summary"),
            "{text}"
        );
        assert!(
            text.contains("siphon_resources_per_second_count{function=\"f\",operation=\"load\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn an_emf_document_names_its_metrics_units_and_dimensions() {
        let doc = emf(
            "siphon-loader",
            "load",
            Some("Patient"),
            &[
                count("ResourcesLoaded", 1200),
                bytes("BytesRead", 4096),
                seconds("LoadSeconds", std::time::Duration::from_millis(1500)),
            ],
            1_700_000_000_000,
        );
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000u64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "siphon");
        assert_eq!(
            directive["Dimensions"],
            json!([["Function", "Operation", "ResourceType"]])
        );
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "ResourcesLoaded", "Unit": "Count"},
                {"Name": "BytesRead", "Unit": "Bytes"},
                {"Name": "LoadSeconds", "Unit": "Seconds"}
            ])
        );
        // Every dimension and metric named in the directive is a member of the root.
        assert_eq!(doc["Function"], "siphon-loader");
        assert_eq!(doc["Operation"], "load");
        assert_eq!(doc["ResourceType"], "Patient");
        assert_eq!(doc["ResourcesLoaded"], 1200.0);
        assert_eq!(doc["BytesRead"], 4096.0);
        assert_eq!(doc["LoadSeconds"], 1.5);
        let without = emf("f", "sweep", None, &[count("Recovered", 2)], 0);
        assert_eq!(
            without["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Operation"]])
        );
        assert!(without.get("ResourceType").is_none());
    }

    #[test]
    fn a_caller_made_type_is_not_a_dimension_value() {
        assert_eq!(bounded(Some("Observation")), Some("Observation"));
        assert_eq!(bounded(Some("Obs\"}\nevil")), Some("other"));
        assert_eq!(bounded(Some("x".repeat(500).as_str())), Some("other"));
        assert_eq!(bounded(None), None);
    }

    #[test]
    fn prometheus_text_has_counters_and_summaries() {
        let mut sums = BTreeMap::new();
        let key = |name, unit, ty| Key {
            name,
            unit,
            operation: "load",
            resource_type: ty,
        };
        sums.insert(
            key("ResourcesLoaded", Unit::Count, Some("Patient")),
            Sum {
                total: 7.0,
                samples: 2,
            },
        );
        sums.insert(
            key("LoadSeconds", Unit::Seconds, None),
            Sum {
                total: 2.5,
                samples: 2,
            },
        );
        let text = render("siphon\"local", &sums);
        assert_eq!(
            text,
            "# TYPE siphon_load_seconds summary\n\
             siphon_load_seconds_sum{function=\"siphon\\\"local\",operation=\"load\"} 2.5\n\
             siphon_load_seconds_count{function=\"siphon\\\"local\",operation=\"load\"} 2\n\
             # TYPE siphon_resources_loaded_total counter\n\
             siphon_resources_loaded_total{function=\"siphon\\\"local\",operation=\"load\",resource_type=\"Patient\"} 7\n"
        );
    }
}
