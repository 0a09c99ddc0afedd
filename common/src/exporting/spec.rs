//! What an export job stores about itself (`siphon_export.request`): everything its
//! tasks need to know to write their files, read again by every task invocation.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::formats::{Chosen, Exporter};
use crate::model::StoreRef;

/// Which rows an export reads and how its files are named: a Bulk Data `$export` at
/// one of its three levels, or a dump to a bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecLevel {
    /// `[base]/$export`: every row of the types.
    #[default]
    System,
    /// `Patient/$export`: the Patient compartments.
    Patient,
    /// `Group/[id]/$export`: the compartments of the Group's members.
    Group,
    /// `$dump-to-bucket`: a table or query in a layout of files.
    Bucket,
}

/// The stored description of an export.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    pub level: SpecLevel,
    /// The Group of a Group-level export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The types exported, in order.
    pub types: Vec<String>,
    /// RFC 3339; only rows changed after it (and deletions after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// RFC 3339; only rows changed at or before it (`_until`), deletions too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `_typeFilter`: a type's rows are those passing its filter (types without one:
    /// every row).
    #[serde(rename = "typeFilters", default, skip_serializing_if = "Vec::is_empty")]
    pub type_filters: Vec<crate::fhir::search::filter::TypeFilter>,
    /// `organizeOutputBy` (STU3): `Patient` for files of Patient resource blocks.
    #[serde(
        rename = "organizeOutputBy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub organize_by: Option<String>,
    /// Limited to the Patients listed in `siphon_export_patient`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub patients: bool,
    /// `_elements`: `(type or none, element)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<(Option<String>, String)>,
    pub gzip: bool,
    /// The kick-off URL (the manifest's `request`).
    pub request: String,
    /// Where the files go: bucket and key prefix (ends with `/`).
    pub bucket: String,
    pub prefix: String,
    /// How the bucket is reached when not the function's own (credentials never here).
    #[serde(default, skip_serializing_if = "StoreRef::is_default")]
    pub store: StoreRef,
    /// `allowPartialManifests` (STU3): the status answers 202 with the manifest of the
    /// files finished so far, paged with `link`s; a page never changes once returned.
    #[serde(
        rename = "allowPartialManifests",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub partial_manifests: bool,
    /// `Prefer: separate-export-status` at the kick-off (STU3).
    #[serde(
        rename = "separateExportStatus",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub separate_status: bool,
    /// Parameters ignored under lenient handling; written as the error file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// `includeAssociatedData` values accepted but not applied; said in the error file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associated: Vec<String>,
    /// The key of the error file, when there is one.
    #[serde(rename = "errorFile", default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<String>,
    /// The file format's name in `formats::REGISTRY` (`ndjson` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// dump-to-bucket: the `table` of `sql` / the index of `elastic-bulk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// dump-to-bucket: the key layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// dump-to-bucket: the load id (`{load_id}`) and start (RFC 3339) of the job.
    #[serde(rename = "loadId", default, skip_serializing_if = "Option::is_none")]
    pub load_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// dump-to-bucket: the query, when it dumps a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// dump-to-bucket: `$dump-sql`'s statement timeout, for running the query.
    #[serde(rename = "timeoutMs", default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl ExportSpec {
    /// The key of file `n` of task `part` of `ty`: `Observation-1-001.ndjson` for
    /// `$export`, the layout's key for dump-to-bucket.
    pub fn file_key(&self, ty: &str, part: i32, n: u32) -> String {
        if let (Some(layout), Some(load_id), Some(started)) =
            (&self.layout, &self.load_id, &self.started)
        {
            let started = chrono::DateTime::parse_from_rfc3339(started)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| chrono::Utc::now());
            let ext = format!("{}{}", self.extension(), if self.gzip { ".gz" } else { "" });
            let table = if ty == "query" {
                "query".to_string()
            } else {
                ty.to_ascii_lowercase()
            };
            let file_id = format!("{part}_{n:05}");
            // Without {file_id} a table is one file (see `single_file`); a further one
            // (a Parquet file closed at a hand-over) gets its file id before the
            // extension rather than overwrite the first.
            let ext = if self.single_file() && (part, n) != (1, 1) {
                format!("{file_id}.{ext}")
            } else {
                ext
            };
            let key = super::layout::render(
                layout,
                &super::layout::KeyParts {
                    table: &table,
                    load_id,
                    file_id: &file_id,
                    ext: &ext,
                    started,
                },
            );
            return format!("{}{key}", self.prefix);
        }
        format!(
            "{}{ty}-{part}-{n:03}.{}{}",
            self.prefix,
            self.extension(),
            if self.gzip { ".gz" } else { "" }
        )
    }

    /// Who writes the files: dump-to-bucket or `$export`.
    pub fn exporter(&self) -> Exporter {
        match self.level {
            SpecLevel::Bucket => Exporter::Bucket,
            SpecLevel::System | SpecLevel::Patient | SpecLevel::Group => Exporter::Export,
        }
    }

    /// The file format (checked at the kick-off; `ndjson` when none was named).
    pub fn file_format(&self) -> Result<Chosen> {
        Chosen::parse(self.exporter(), self.format.as_deref())
    }

    /// The extension of the files of resources or query rows.
    fn extension(&self) -> &'static str {
        self.file_format()
            .map(|f| f.extension())
            .unwrap_or("ndjson")
    }

    /// The key of file `n` of the deleted resources.
    pub fn deleted_key(&self, n: u32) -> String {
        format!(
            "{}deleted-{n:03}.ndjson{}",
            self.prefix,
            if self.gzip { ".gz" } else { "" }
        )
    }

    /// True when the layout has no `{file_id}` (`{table_name}.{ext}`): each table is
    /// written as one file, neither split into id ranges nor by size.
    pub fn single_file(&self) -> bool {
        self.layout
            .as_deref()
            .is_some_and(|l| !l.contains("{file_id}"))
    }

    /// What the kick-off reports in the manifest's error file: one OperationOutcome per
    /// parameter ignored under lenient handling (naming it) and per
    /// `includeAssociatedData` value accepted but not applied.
    pub fn kick_off_outcomes(&self) -> Vec<serde_json::Value> {
        let outcome = |severity: &str, code: &str, text: String| {
            serde_json::json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": severity, "code": code, "diagnostics": text}]})
        };
        let ignored = self
            .ignored
            .iter()
            .map(|why| outcome("warning", "not-supported", format!("ignored: {why}")));
        let associated = self.associated.iter().map(|v| {
            outcome(
                "information",
                "informational",
                format!(
                    "includeAssociatedData {v} accepted but not applied: siphon adds no associated resources; \
                     ask for Provenance with _type to export it"
                ),
            )
        });
        ignored.chain(associated).collect()
    }

    /// True for a Patient- or Group-level export (rows limited to Patient compartments).
    pub fn compartment_level(&self) -> bool {
        matches!(self.level, SpecLevel::Patient | SpecLevel::Group)
    }

    /// True when the files hold Patient resource blocks (`organizeOutputBy=Patient`).
    pub fn organized(&self) -> bool {
        self.organize_by.as_deref() == Some("Patient")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_without_file_id_never_overwrites() {
        let s = ExportSpec {
            prefix: "out/".into(),
            layout: Some("{table_name}.{ext}".into()),
            load_id: Some("1.000001".into()),
            started: Some("2026-11-23T10:00:00Z".into()),
            format: Some("parquet".into()),
            ..Default::default()
        };
        assert!(s.single_file());
        assert_eq!(s.file_key("Patient", 1, 1), "out/patient.parquet");
        assert_eq!(s.file_key("Patient", 1, 2), "out/patient.1_00002.parquet");
        let dlt = ExportSpec {
            layout: Some(super::super::layout::DEFAULT_LAYOUT.into()),
            ..s
        };
        assert!(!dlt.single_file());
        assert_eq!(
            dlt.file_key("query", 1, 2),
            "out/query/1.000001.1_00002.parquet"
        );
    }

    #[test]
    fn the_kick_off_outcomes_name_each_ignored_parameter_and_associated_value() {
        let s = ExportSpec {
            ignored: vec!["_typeFilter \"Patient?x=y\" is not supported".into()],
            associated: vec!["LatestProvenanceResources".into()],
            ..Default::default()
        };
        let o = s.kick_off_outcomes();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0]["resourceType"], "OperationOutcome");
        assert_eq!(o[0]["issue"][0]["severity"], "warning");
        assert!(o[0]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("_typeFilter"));
        assert!(o[1]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("includeAssociatedData LatestProvenanceResources accepted"));
        assert!(ExportSpec::default().kick_off_outcomes().is_empty());
    }

    #[test]
    fn keys_name_the_type_part_and_file() {
        let mut s = ExportSpec {
            prefix: "exports/abc/".into(),
            ..Default::default()
        };
        assert_eq!(
            s.file_key("Observation", 2, 7),
            "exports/abc/Observation-2-007.ndjson"
        );
        s.gzip = true;
        assert_eq!(s.deleted_key(1), "exports/abc/deleted-001.ndjson.gz");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<ExportSpec>(v).unwrap(), s);
    }

    #[test]
    fn levels_keep_their_stored_spelling() {
        for (level, word) in [
            (SpecLevel::System, "system"),
            (SpecLevel::Patient, "patient"),
            (SpecLevel::Group, "group"),
            (SpecLevel::Bucket, "bucket"),
        ] {
            let s = ExportSpec {
                level,
                ..Default::default()
            };
            assert_eq!(serde_json::to_value(&s).unwrap()["level"], word);
        }
        let old = serde_json::json!({"level": "group", "group": "g", "types": ["Patient"],
            "gzip": false, "request": "r", "bucket": "b", "prefix": "p/"});
        let s: ExportSpec = serde_json::from_value(old).unwrap();
        assert!(s.compartment_level());
    }
}
