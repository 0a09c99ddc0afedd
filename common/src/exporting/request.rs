//! Reading a FHIR Bulk Data `$export` kick-off (Bulk Data Access IG v2.0.0 and STU3): the
//! headers, the query (GET) or `Parameters` body (POST). Every check that answers 400
//! happens here, before anything is stored.
//!
//! | parameter | siphon |
//! |---|---|
//! | `_outputFormat` | `application/fhir+ndjson`, `application/ndjson`, `ndjson`; `application/fhir+ndjson+gzip` (gzip files; `+gzip` after any text format); `application/jsonl` or `jsonl` (JSON Lines, `.jsonl` files); `application/vnd.apache.parquet` or `parquet` (Parquet files, dump-to-bucket's columns; not with `_elements`); anything else 400 |
//! | `_type` | comma-separated and repeated; R4 resource types; unknown 400 (lenient: ignored) |
//! | `_since` | FHIR instant; invalid or in the future 400 |
//! | `_until` | FHIR instant; invalid, or before `_since`, 400 |
//! | `patient` | POST, Patient and Group level; GET or system level 400 (lenient: ignored) |
//! | `_elements` | root elements, `Type.element` or `element`; nested paths 400 |
//! | `includeAssociatedData` | `LatestProvenanceResources`, `RelevantProvenanceResources` accepted, not applied (said in the error file); other values 400 (lenient: ignored) |
//! | `_typeFilter` | `Type?query` by the STU3 rules (see `type_filter`); a value outside what siphon evaluates 400 (lenient: ignored, named in the error file) |
//! | `allowPartialManifests` | `true`: 202 with the manifest of the files finished so far, paged with `link`; `false` (default); other values 400 |
//! | `organizeOutputBy` | `Patient`: files of Patient resource blocks (a `Parameters` header, the Patient, the resources of its compartment), the manifest's `outputOrganizedBy`; not with Parquet (400); another type 400 (lenient: ignored, named in the error file) |
//! | others | 400 (lenient: ignored, named in the error file) |
//!
//! `Accept: application/fhir+json` and `Prefer: respond-async` are required (400 without);
//! `Prefer: handling=lenient` and `separate-export-status` are honoured.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::type_filter;
use crate::error::{Error, Result};
use crate::fhir;
use crate::fhir::search::filter::TypeFilter;
use crate::formats::{Chosen, Exporter};
use crate::model::ids::is_valid_id;
use crate::resource_type::ResourceType;

/// Which resources the export covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$export`: every resource.
    System,
    /// `[base]/Patient/$export`: every Patient and their compartments.
    Patient,
    /// `[base]/Group/[id]/$export`: the Group's member Patients and their compartments.
    Group(String),
}

/// One `_elements` entry: an element of every type, or of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub resource_type: Option<ResourceType>,
    pub name: String,
}

pub use crate::formats::PARQUET_MEDIA_TYPE;

/// A checked kick-off.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRequest {
    pub level: Level,
    /// Files are gzip-compressed (`Content-Encoding: gzip`, `.ndjson.gz`).
    pub gzip: bool,
    /// The file format: ndjson, JSON Lines (`.jsonl`), or Parquet (`.parquet`: one row
    /// per resource with the columns of dump-to-bucket's Parquet, `id`, `resource_type`,
    /// `ts`, `txid`, `resource`).
    pub format: Chosen,
    /// `allowPartialManifests` (STU3): manifests of the files finished so far while the
    /// export runs, paged with `link`.
    pub partial_manifests: bool,
    /// `None`: every type the level covers.
    pub types: Option<Vec<ResourceType>>,
    pub since: Option<DateTime<Utc>>,
    /// `_until` (STU3): only resources last updated at or before it.
    pub until: Option<DateTime<Utc>>,
    /// `Patient/<id>` references (the `patient` parameter).
    pub patients: Vec<String>,
    pub elements: Vec<Element>,
    /// `Prefer: handling=lenient`.
    pub lenient: bool,
    /// `Prefer: separate-export-status` (STU3): status requests answer 200 with the
    /// export's own status in `X-Export-Status`.
    pub separate_status: bool,
    /// Parameters ignored under `handling=lenient`, said in the manifest's error file.
    pub ignored: Vec<String>,
    /// `includeAssociatedData` values accepted (the IG's `LatestProvenanceResources`,
    /// `RelevantProvenanceResources`) but not applied: siphon adds no associated
    /// resources, and says so in the manifest's error file.
    pub associated: Vec<String>,
    /// `_typeFilter` (STU3), one filter per type: its values ORed, each value's
    /// parameters ANDed. A type without one is not filtered.
    pub type_filters: Vec<TypeFilter>,
    /// `organizeOutputBy=Patient` (STU3): files of Patient resource blocks.
    pub organize_by_patient: bool,
}

/// The parts of the HTTP request the kick-off reads.
pub struct KickOff<'a> {
    pub post: bool,
    pub level: Level,
    pub accept: Option<&'a str>,
    pub prefer: Vec<&'a str>,
    /// Query parameters in order (repeated ones repeated).
    pub query: Vec<(String, String)>,
    /// The POST body (a `Parameters` resource), if any.
    pub body: Option<&'a [u8]>,
    pub now: DateTime<Utc>,
}

/// The `includeAssociatedData` values the IG defines; siphon accepts them and reports
/// in the manifest's error file that it adds no associated resources.
pub const ASSOCIATED_DATA: [&str; 2] = ["LatestProvenanceResources", "RelevantProvenanceResources"];

fn bad(message: impl Into<String>) -> Error {
    Error::BadRequest(message.into())
}

/// `Accept` must name `application/fhir+json`, the only format of the kick-off's
/// OperationOutcome the IG defines. The IG lets a server refuse a request without it or
/// assume it; siphon refuses (400), as SMART's Bulk Data tester checks.
fn check_accept(accept: Option<&str>) -> Result<()> {
    let Some(accept) = accept else {
        return Err(bad(
            "the Accept header is required: send Accept: application/fhir+json",
        ));
    };
    let ok = accept.split(',').any(|v| {
        let media = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        media == "application/fhir+json"
    });
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "Accept {accept:?} is not supported: $export answers application/fhir+json (send Accept: application/fhir+json)"
        )))
    }
}

/// What `Prefer` asked for besides `respond-async`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Preferences {
    /// `handling=lenient`: unsupported parameters ignored.
    lenient: bool,
    /// `separate-export-status` (STU3).
    separate_status: bool,
}

/// `Prefer` must ask for `respond-async` (a request without it is refused, as the IG
/// allows and SMART's Bulk Data tester checks); `handling=lenient` makes unsupported
/// parameters ignored; `separate-export-status` gives status requests their own HTTP
/// status, the export's in `X-Export-Status`.
fn check_prefer(prefer: &[&str]) -> Result<Preferences> {
    let tokens: Vec<String> = prefer
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase().replace(' ', ""))
        .filter(|t| !t.is_empty())
        .collect();
    if !tokens.iter().any(|t| t == "respond-async") {
        return Err(bad(if prefer.is_empty() {
            "the Prefer header is required: $export only runs asynchronously (send Prefer: respond-async)".to_string()
        } else {
            format!(
                "Prefer {:?} is not supported: $export only runs asynchronously (send Prefer: respond-async)",
                prefer.join(", ")
            )
        }));
    }
    Ok(Preferences {
        lenient: tokens.iter().any(|t| t == "handling=lenient"),
        separate_status: tokens.iter().any(|t| t == "separate-export-status"),
    })
}

/// A FHIR `instant`: `YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)`, the value of `_since`.
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>> {
    parse_instant_of("_since", raw)
}

/// [`parse_instant`] for the parameter `name` (named in the error).
pub fn parse_instant_of(name: &str, raw: &str) -> Result<DateTime<Utc>> {
    let shape_ok = raw.len() >= 20
        && raw.as_bytes()[10] == b'T'
        // `get`: byte 19 of a caller's text need not be a char boundary.
        && (raw.ends_with('Z') || raw.get(19..).is_some_and(|t| t.contains(['+', '-'])));
    match (shape_ok, DateTime::parse_from_rfc3339(raw)) {
        (true, Ok(t)) => Ok(t.with_timezone(&Utc)),
        _ => Err(bad(format!(
            "{name} {raw:?} is not a FHIR instant (e.g. 2024-01-01T00:00:00Z: date, time with seconds, and time zone)"
        ))),
    }
}

/// The parameters of a `Parameters` body as (name, text) pairs.
fn body_parameters(body: &[u8]) -> Result<Vec<(String, String)>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not a FHIR Parameters resource in JSON: {e}"
        ))
    })?;
    if v["resourceType"] != "Parameters" {
        return Err(bad(
            "the body must be a FHIR Parameters resource (resourceType Parameters)",
        ));
    }
    let mut out = Vec::new();
    for p in v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| bad("every Parameters.parameter needs a name"))?;
        let value = [
            "valueString",
            "valueInstant",
            "valueCode",
            "valueUri",
            "valueDateTime",
        ]
        .iter()
        .find_map(|k| p[*k].as_str().map(str::to_string))
        .or_else(|| {
            p["valueReference"]["reference"]
                .as_str()
                .map(str::to_string)
        })
        .ok_or_else(|| bad(format!("parameter {name} has no supported value[x]")))?;
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Parses and checks a kick-off.
pub fn parse(k: KickOff<'_>) -> Result<ExportRequest> {
    check_accept(k.accept)?;
    let prefer = check_prefer(&k.prefer)?;
    let mut params: Vec<(String, String, bool)> =
        k.query.into_iter().map(|(n, v)| (n, v, false)).collect();
    if k.post {
        if let Some(body) = k.body.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
            params.extend(
                body_parameters(body)?
                    .into_iter()
                    .map(|(n, v)| (n, v, true)),
            );
        }
    }
    let mut request = ExportRequest {
        level: k.level.clone(),
        gzip: false,
        format: Chosen::parse(Exporter::Export, None)?,
        partial_manifests: false,
        types: None,
        since: None,
        until: None,
        patients: Vec::new(),
        elements: Vec::new(),
        lenient: prefer.lenient,
        separate_status: prefer.separate_status,
        ignored: Vec::new(),
        associated: Vec::new(),
        type_filters: Vec::new(),
        organize_by_patient: false,
    };
    for (name, value, from_body) in params {
        request.apply(&name, value, from_body, k.now)?;
    }
    request.check()?;
    Ok(request)
}

impl ExportRequest {
    /// One parameter, `from_body` when it came in a POST `Parameters` body.
    fn apply(
        &mut self,
        name: &str,
        value: String,
        from_body: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match name {
            "_outputFormat" => self.output_format(&value)?,
            "_since" => {
                let since = parse_instant(&value)?;
                if since > now {
                    return Err(bad(format!("_since {value} is in the future")));
                }
                self.since = Some(since);
            }
            "_until" => self.until = Some(parse_instant_of("_until", &value)?),
            "allowPartialManifests" => {
                self.partial_manifests = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(bad(format!(
                            "allowPartialManifests {other:?} is not a boolean (true or false)"
                        )))
                    }
                }
            }
            "_type" => self.add_types(&value)?,
            "patient" => self.add_patient(value, from_body)?,
            "_elements" => self.add_elements(&value)?,
            "_typeFilter" => match type_filter::parse_one(&value, now) {
                Ok((ty, query)) => type_filter::add(&mut self.type_filters, ty, query),
                Err(e) => self.unsupported(e.to_string())?,
            },
            "includeAssociatedData" => self.add_associated(&value)?,
            "organizeOutputBy" if value == "Patient" => self.organize_by_patient = true,
            "organizeOutputBy" => self.unsupported(format!(
                "organizeOutputBy {value:?} is not supported: siphon organizes output by Patient only"
            ))?,
            other => {
                self.unsupported(format!("parameter {other:?} is not supported by $export"))?
            }
        }
        Ok(())
    }

    /// Refuses, or under lenient handling ignores and remembers, what is not supported.
    fn unsupported(&mut self, why: String) -> Result<()> {
        if self.lenient {
            self.ignored.push(why);
            Ok(())
        } else {
            Err(bad(format!(
                "{why} (send Prefer: handling=lenient to have it ignored)"
            )))
        }
    }

    /// `_outputFormat`: a format of the registry; a text format may end in `+gzip`
    /// (gzip-compressed files).
    fn output_format(&mut self, value: &str) -> Result<()> {
        let (name, gzip) = match value.strip_suffix("+gzip") {
            Some(name) => (name, true),
            None => (value, false),
        };
        self.format = Chosen::find(Exporter::Export, name)
            .filter(|f| f.check_gzip(gzip).is_ok())
            .ok_or_else(|| {
                bad(format!(
                    "_outputFormat {value:?} is not supported: use {} \
                     (a text format followed by +gzip for gzip files)",
                    crate::formats::accepted(Exporter::Export)
                ))
            })?;
        self.gzip = gzip;
        Ok(())
    }

    /// `_type`: comma-separated R4 resource types, each once.
    fn add_types(&mut self, value: &str) -> Result<()> {
        for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let known = ResourceType::parse(t)
                .ok()
                .filter(|ty| fhir::is_resource_type(ty.as_str()));
            match known {
                Some(ty) => {
                    let types = self.types.get_or_insert_with(Vec::new);
                    if !types.contains(&ty) {
                        types.push(ty);
                    }
                }
                None => self.unsupported(format!("_type {t:?} is not a FHIR R4 resource type"))?,
            }
        }
        Ok(())
    }

    /// `patient`: a Patient reference, in a POST body, at the Patient or Group level.
    fn add_patient(&mut self, value: String, from_body: bool) -> Result<()> {
        if self.level == Level::System {
            return self.unsupported(
                "patient is not allowed in a system-level export: use Patient/$export or Group/[id]/$export".into(),
            );
        }
        if !from_body {
            return self.unsupported("patient is only supported in a POST Parameters body".into());
        }
        let id = value.strip_prefix("Patient/").unwrap_or("");
        if !is_valid_id(id) {
            return Err(bad(format!(
                "patient {value:?} is not a Patient reference (Patient/<id>)"
            )));
        }
        if !self.patients.contains(&value) {
            self.patients.push(value);
        }
        Ok(())
    }

    /// `_elements`: `Type.element` (a type starts with a capital) or `element`, root
    /// elements only.
    fn add_elements(&mut self, value: &str) -> Result<()> {
        for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            // Anything else with a dot is a nested path.
            let (ty, name) = match e.split_once('.') {
                Some((t, n)) if t.starts_with(|c: char| c.is_ascii_uppercase()) => (Some(t), n),
                Some(_) => (None, ""),
                None => (None, e),
            };
            let ty = ty
                .map(|t| {
                    ResourceType::parse(t)
                        .ok()
                        .filter(|t| fhir::is_resource_type(t.as_str()))
                        .ok_or_else(|| {
                            bad(format!(
                                "_elements {e:?}: {t:?} is not a FHIR R4 resource type"
                            ))
                        })
                })
                .transpose()?;
            let root = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric());
            if !root {
                return Err(bad(format!(
                    "_elements {e:?}: only root elements are allowed (Type.element or element)"
                )));
            }
            self.elements.push(Element {
                resource_type: ty,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// `includeAssociatedData`: the IG's values, each once.
    fn add_associated(&mut self, value: &str) -> Result<()> {
        for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            if ASSOCIATED_DATA.contains(&v) {
                if !self.associated.iter().any(|a| a == v) {
                    self.associated.push(v.to_string());
                }
            } else {
                self.unsupported(format!(
                    "includeAssociatedData {v:?} is not supported (accepted: {})",
                    ASSOCIATED_DATA.join(", ")
                ))?;
            }
        }
        Ok(())
    }

    /// What holds between parameters.
    fn check(&self) -> Result<()> {
        if self.format.typed() && self.organize_by_patient {
            return Err(bad(
                "organizeOutputBy=Patient writes ndjson resource blocks, not Parquet \
                 (ask for ndjson, or leave organizeOutputBy out)",
            ));
        }
        if self.format.typed() && !self.elements.is_empty() {
            return Err(bad(
                "_elements does not apply to Parquet output: its resource column holds whole resources \
                 (ask for ndjson, or leave _elements out)",
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if until < since {
                return Err(bad(format!(
                    "_until {} is before _since {}: the window is empty",
                    until.to_rfc3339(),
                    since.to_rfc3339()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_instant("2026-11-23T12:00:00Z").unwrap()
    }

    fn kick(level: Level, query: &[(&str, &str)]) -> KickOff<'static> {
        KickOff {
            post: false,
            level,
            accept: Some("application/fhir+json"),
            prefer: vec!["respond-async"],
            query: query
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: None,
            now: now(),
        }
    }

    fn refused(k: KickOff<'_>, why: &str) {
        match parse(k) {
            Err(Error::BadRequest(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("expected 400 saying {why:?}, got {other:?}"),
        }
    }

    #[test]
    fn prefer_separate_export_status_is_remembered() {
        let mut k = kick(Level::System, &[]);
        k.prefer = vec!["respond-async,separate-export-status"];
        let r = parse(k).unwrap();
        assert!(r.separate_status && !r.lenient);
        assert!(!parse(kick(Level::System, &[])).unwrap().separate_status);
        let mut k = kick(Level::System, &[]);
        k.prefer = vec!["separate-export-status"];
        refused(k, "send Prefer: respond-async");
    }

    #[test]
    fn organize_output_by_patient_only_and_not_with_parquet() {
        let r = parse(kick(Level::System, &[("organizeOutputBy", "Patient")])).unwrap();
        assert!(r.organize_by_patient);
        assert!(!parse(kick(Level::System, &[])).unwrap().organize_by_patient);
        refused(
            kick(Level::Patient, &[("organizeOutputBy", "Encounter")]),
            "organizeOutputBy \"Encounter\" is not supported",
        );
        refused(
            kick(
                Level::Group("g".into()),
                &[
                    ("organizeOutputBy", "Patient"),
                    ("_outputFormat", "parquet"),
                ],
            ),
            "not Parquet",
        );
        let mut lenient = kick(Level::System, &[("organizeOutputBy", "patient")]);
        lenient.prefer = vec!["respond-async", "handling=lenient"];
        let r = parse(lenient).unwrap();
        assert!(!r.organize_by_patient);
        assert!(
            r.ignored[0].contains("organizeOutputBy \"patient\""),
            "{:?}",
            r.ignored
        );
    }

    #[test]
    fn a_full_get_kick_off() {
        let r = parse(kick(
            Level::System,
            &[
                ("_outputFormat", "application/fhir+ndjson"),
                ("_type", "Patient,Observation"),
                ("_type", "Encounter,Patient"),
                ("_since", "2024-01-01T00:00:00.5+02:00"),
                ("_elements", "Observation.status,id"),
            ],
        ))
        .unwrap();
        let types: Vec<&str> = r
            .types
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(types, ["Patient", "Observation", "Encounter"]);
        assert_eq!(
            r.since.unwrap().to_rfc3339(),
            "2023-12-31T22:00:00.500+00:00"
        );
        assert_eq!(r.elements.len(), 2);
        assert_eq!(
            r.elements[0].resource_type.as_ref().unwrap().as_str(),
            "Observation"
        );
        assert!(!r.gzip && !r.lenient && r.ignored.is_empty());
        for f in ["application/ndjson", "ndjson"] {
            assert!(
                !parse(kick(Level::System, &[("_outputFormat", f)]))
                    .unwrap()
                    .gzip
            );
        }
        assert!(
            parse(kick(
                Level::System,
                &[("_outputFormat", "application/fhir+ndjson+gzip")]
            ))
            .unwrap()
            .gzip
        );
        for f in [PARQUET_MEDIA_TYPE, "parquet"] {
            let r = parse(kick(Level::System, &[("_outputFormat", f)])).unwrap();
            assert!(r.format.name() == "parquet" && !r.gzip, "{f}");
        }
    }

    #[test]
    fn parquet_output_refuses_elements() {
        refused(
            kick(
                Level::System,
                &[("_outputFormat", PARQUET_MEDIA_TYPE), ("_elements", "id")],
            ),
            "_elements does not apply to Parquet",
        );
    }

    #[test]
    fn accept_and_prefer_are_required_and_checked() {
        let mut k = kick(Level::System, &[]);
        k.accept = None;
        refused(k, "Accept header is required");
        let mut k = kick(Level::Patient, &[]);
        k.prefer = vec![];
        refused(k, "Prefer header is required");
        for accept in ["application/xml", "application/json", "*/*"] {
            let mut k = kick(Level::System, &[]);
            k.accept = Some(accept);
            refused(k, "Accept");
        }
        let mut k = kick(Level::System, &[]);
        k.prefer = vec!["return=minimal"];
        refused(k, "respond-async");
        let mut k = kick(Level::Group("g".into()), &[]);
        k.prefer = vec!["handling=lenient"];
        refused(k, "respond-async");
        let mut k = kick(Level::System, &[]);
        k.accept = Some("application/fhir+json; q=0.9, text/html");
        k.prefer = vec!["respond-async, handling=lenient"];
        assert!(parse(k).unwrap().lenient);
    }

    #[test]
    fn until_closes_a_window_that_since_opens() {
        let r = parse(kick(
            Level::System,
            &[
                ("_since", "2024-01-01T00:00:00Z"),
                ("_until", "2024-06-30T23:59:59.999+02:00"),
            ],
        ))
        .unwrap();
        assert_eq!(
            r.until.unwrap().to_rfc3339(),
            "2024-06-30T21:59:59.999+00:00"
        );
        // Alone, and in the future (nothing is later than now anyway): accepted.
        assert!(
            parse(kick(Level::Patient, &[("_until", "2999-01-01T00:00:00Z")]))
                .unwrap()
                .since
                .is_none()
        );
        refused(kick(Level::System, &[("_until", "2024-06-30")]), "_until");
        refused(
            kick(
                Level::System,
                &[
                    ("_since", "2024-02-01T00:00:00Z"),
                    ("_until", "2024-01-01T00:00:00Z"),
                ],
            ),
            "before _since",
        );
    }

    #[test]
    fn include_associated_data_is_accepted_for_the_ig_values_only() {
        let r = parse(kick(
            Level::System,
            &[
                (
                    "includeAssociatedData",
                    "LatestProvenanceResources,RelevantProvenanceResources",
                ),
                ("includeAssociatedData", "LatestProvenanceResources"),
            ],
        ))
        .unwrap();
        assert_eq!(
            r.associated,
            ["LatestProvenanceResources", "RelevantProvenanceResources"]
        );
        assert!(r.ignored.is_empty());
        refused(
            kick(Level::Patient, &[("includeAssociatedData", "_custom")]),
            "includeAssociatedData \"_custom\"",
        );
        let mut k = kick(Level::System, &[("includeAssociatedData", "_custom")]);
        k.prefer = vec!["respond-async,handling=lenient"];
        let r = parse(k).unwrap();
        assert!(r.associated.is_empty());
        assert_eq!(r.ignored.len(), 1);
        assert!(r.ignored[0].contains("includeAssociatedData"));
    }

    #[test]
    fn refusals_and_lenient_handling() {
        refused(
            kick(Level::System, &[("_outputFormat", "text/csv")]),
            "_outputFormat",
        );
        refused(
            kick(Level::System, &[("_type", "Patient,Nope")]),
            "\"Nope\"",
        );
        refused(
            kick(Level::System, &[("_type", "LoaderFile")]),
            "LoaderFile",
        );
        refused(
            kick(Level::System, &[("_type", "patient;drop")]),
            "not a FHIR R4",
        );
        refused(kick(Level::System, &[("_since", "2024-01-01")]), "instant");
        refused(
            kick(Level::System, &[("_since", "2024-01-01T00:00:00")]),
            "instant",
        );
        refused(
            kick(Level::System, &[("_since", "2030-01-01T00:00:00Z")]),
            "future",
        );
        refused(
            kick(
                Level::System,
                &[("_typeFilter", "Observation?status=final&_sort=date")],
            ),
            "_sort",
        );
        refused(
            kick(Level::System, &[("_typeFilter", "Observation?nope=1")]),
            "nope",
        );
        refused(kick(Level::System, &[("_count", "10")]), "_count");
        refused(
            kick(Level::System, &[("_elements", "name.family")]),
            "root elements",
        );
        refused(kick(Level::System, &[("_elements", "Nope.id")]), "Nope");
        refused(
            kick(Level::System, &[("patient", "Patient/1")]),
            "system-level",
        );
        refused(kick(Level::Patient, &[("patient", "Patient/1")]), "POST");
        let mut k = kick(
            Level::System,
            &[
                ("_type", "Patient,Nope"),
                ("_typeFilter", "Patient?x=y"),
                ("_count", "1"),
            ],
        );
        k.prefer = vec!["respond-async", "handling=lenient"];
        let r = parse(k).unwrap();
        assert_eq!(r.types.unwrap().len(), 1);
        assert_eq!(r.ignored.len(), 3, "{:?}", r.ignored);
        assert!(r.type_filters.is_empty());
    }

    #[test]
    fn type_filters_of_one_type_are_ored_and_each_types_kept_apart() {
        let r = parse(kick(
            Level::System,
            &[
                ("_typeFilter", "Observation?status=final"),
                ("_typeFilter", "Patient?gender=female"),
                ("_typeFilter", "Observation?category=laboratory&code=1234-5"),
            ],
        ))
        .unwrap();
        let by_type: Vec<(&str, usize)> = r
            .type_filters
            .iter()
            .map(|f| (f.resource_type.as_str(), f.queries.len()))
            .collect();
        assert_eq!(by_type, [("Observation", 2), ("Patient", 1)]);
        assert_eq!(r.type_filters[0].queries[1].clauses.len(), 2);
    }

    #[test]
    fn post_parameters_bodies() {
        let body = br#"{"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Observation"},
            {"name": "_since", "valueInstant": "2024-05-01T10:00:00Z"},
            {"name": "patient", "valueReference": {"reference": "Patient/p-1"}},
            {"name": "patient", "valueReference": {"reference": "Patient/p-2"}}]}"#;
        let mut k = kick(Level::Group("g1".into()), &[]);
        k.post = true;
        k.body = Some(body);
        let r = parse(k).unwrap();
        assert_eq!(r.patients, ["Patient/p-1", "Patient/p-2"]);
        assert!(r.since.is_some());
        for (bad_body, why) in [
            (&br#"{"resourceType": "Bundle"}"#[..], "Parameters"),
            (&b"{"[..], "not a FHIR Parameters"),
            (&br#"{"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": {"reference": "Group/x"}}]}"#[..], "Patient reference"),
            (&br#"{"resourceType": "Parameters", "parameter": [{"name": "_type", "valueBoolean": true}]}"#[..], "value[x]"),
        ] {
            let mut k = kick(Level::Patient, &[]);
            k.post = true;
            k.body = Some(bad_body);
            refused(k, why);
        }
    }
}
