//! What an export job stores about itself (`siphon_export.request`): everything its
//! tasks need to know to write their files, read again by every task invocation.

use serde::{Deserialize, Serialize};

use crate::model::StoreRef;

/// The stored description of an export.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    /// `system`, `patient`, `group` ($export), or `bucket` (dump-to-bucket).
    pub level: String,
    /// The Group of a Group-level export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The types exported, in order.
    pub types: Vec<String>,
    /// RFC 3339; only rows changed after it (and deletions after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
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
    /// Parameters ignored under lenient handling; written as the error file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// The key of the error file, when there is one.
    #[serde(rename = "errorFile", default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<String>,
}

impl ExportSpec {
    /// The key of file `n` of task `part` of `ty` (`Observation-1-001.ndjson`).
    pub fn file_key(&self, ty: &str, part: i32, n: u32) -> String {
        format!(
            "{}{ty}-{part}-{n:03}.ndjson{}",
            self.prefix,
            if self.gzip { ".gz" } else { "" }
        )
    }

    /// The key of file `n` of the deleted resources.
    pub fn deleted_key(&self, n: u32) -> String {
        format!(
            "{}deleted-{n:03}.ndjson{}",
            self.prefix,
            if self.gzip { ".gz" } else { "" }
        )
    }

    /// True for a Patient- or Group-level export (rows limited to Patient compartments).
    pub fn compartment_level(&self) -> bool {
        self.level == "patient" || self.level == "group"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
