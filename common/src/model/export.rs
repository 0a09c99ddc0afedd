//! Exports: a job (`$export` or dump-to-bucket) and its tasks, each writing files of
//! one resource type (or one id range of it), and the checkpoint a task resumes from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One uploaded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: i32,
    pub etag: String,
}

/// Where a file being written stands, as committed after its last uploaded part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub key: String,
    #[serde(rename = "uploadId", default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// Lines in the uploaded parts.
    pub count: u64,
    /// Bytes of those lines, uncompressed.
    pub bytes: u64,
}

/// One file on a manifest page (`allowPartialManifests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageFile {
    /// The manifest list it is on: `output` or `deleted`.
    pub list: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub key: String,
    pub count: u64,
}

/// The pages to add so that every file in `available` is on a page: the files on no
/// page yet, in their order, at most `max` to a page. Pages already written never change
/// (a manifest page once returned stays as it was, the IG says).
pub fn new_pages(
    paged: &[Vec<PageFile>],
    available: &[PageFile],
    max: usize,
) -> Vec<Vec<PageFile>> {
    let on_a_page: std::collections::HashSet<&str> =
        paged.iter().flatten().map(|f| f.key.as_str()).collect();
    let fresh: Vec<PageFile> = available
        .iter()
        .filter(|f| !on_a_page.contains(f.key.as_str()))
        .cloned()
        .collect();
    fresh.chunks(max.max(1)).map(<[PageFile]>::to_vec).collect()
}

/// A finished object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    pub key: String,
    /// Lines in it.
    pub count: u64,
    /// Its bytes, uncompressed.
    pub bytes: u64,
}

/// A task's checkpoint: everything before `after` (in the task's order) is in `files`
/// or in the uploaded parts of `file`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// The key of the last row written (an id, or `Type/id` for deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<WrittenFile>,
    /// The file being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileState>,
    /// The number of the next file (from 1).
    #[serde(default)]
    pub next: u32,
    /// Where an inventory import's planning stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanCheckpoint>,
    /// Where a pull import's planning stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<super::pull::PullCheckpoint>,
}

/// Where the planning of an inventory import stands. Staging is done a whole inventory
/// file at a time (a part is cleared and staged again after a crash); queueing walks
/// the staged objects in `file_id` order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCheckpoint {
    /// Inventory files staged so far (in the manifest's order).
    pub staged_files: u32,
    /// Objects staged so far.
    pub staged: u64,
    /// The staged objects have been compared with the LoaderFiles (one bulk join).
    #[serde(default)]
    pub compared: bool,
    /// The last `file_id` queued (or found unchanged); `None` before queueing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Objects looked at while queueing, and what they were.
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// LoaderFiles marked gone (the last step).
    pub gone: Option<u64>,
}

/// An export's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    Active,
    Done,
    Error,
    Cancelled,
}

impl ExportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::Active => "active",
            ExportStatus::Done => "done",
            ExportStatus::Error => "error",
            ExportStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => ExportStatus::Active,
            "done" => ExportStatus::Done,
            "error" => ExportStatus::Error,
            "cancelled" => ExportStatus::Cancelled,
            _ => return None,
        })
    }
}

/// A task's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Done,
    Error,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Error => "error",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "done" => TaskStatus::Done,
            "error" => TaskStatus::Error,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

/// An export job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    pub id: String,
    pub kind: ExportKind,
    pub owner: String,
    pub status: ExportStatus,
    /// What to export and where (the domain's request, as JSON; never credentials).
    pub request: Value,
    /// RFC 3339.
    pub transaction_time: String,
    pub error: Option<String>,
    pub created: String,
}

/// Which job an export row is: the three jobs share the export tables, tasks and
/// leases, and differ in what their tasks do and who may read them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// A Bulk Data `$export` (manifest, status URL).
    Fhir,
    /// A dump to a bucket (`$dump-to-bucket`).
    Bucket,
    /// The planning of an S3 Inventory import (its id is the `$import` session's).
    Inventory,
    /// A pull import (`$import-pnp`) of a remote Bulk Data export (its id is the
    /// `$import` session's).
    Pull,
}

impl ExportKind {
    /// The stored spelling (`siphon_export.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Fhir => "fhir",
            ExportKind::Bucket => "bucket",
            ExportKind::Inventory => "inventory",
            ExportKind::Pull => "pull",
        }
    }

    /// Reads the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fhir" => ExportKind::Fhir,
            "bucket" => ExportKind::Bucket,
            "inventory" => ExportKind::Inventory,
            "pull" => ExportKind::Pull,
            _ => return None,
        })
    }
}

/// What a task exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Rows of a resource type.
    Resources,
    /// Patient resource blocks (`organizeOutputBy=Patient`) of a range of Patient ids:
    /// each a `Parameters` header, the Patient, and the rows referencing it.
    Blocks,
    /// Tombstones of deleted resources (`deleted[]`).
    Deleted,
    /// The rows of a query (dump-to-bucket `query`).
    Query,
    /// The planning of an S3 Inventory import: stage the listed objects, queue the new
    /// and changed ones, mark the gone ones.
    Inventory,
    /// The planning of a pull import (`$import-pnp`): kick off the remote export, poll
    /// it, and make each file of its manifests an input of the session.
    Pull,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Resources => "resources",
            TaskKind::Blocks => "blocks",
            TaskKind::Deleted => "deleted",
            TaskKind::Query => "query",
            TaskKind::Inventory => "inventory",
            TaskKind::Pull => "pull",
        }
    }

    /// Reads the stored spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "resources" => TaskKind::Resources,
            "blocks" => TaskKind::Blocks,
            "deleted" => TaskKind::Deleted,
            "query" => TaskKind::Query,
            "inventory" => TaskKind::Inventory,
            "pull" => TaskKind::Pull,
            _ => return None,
        })
    }
}

/// One task of an export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportTask {
    pub id: String,
    pub export_id: String,
    pub kind: TaskKind,
    pub resource_type: String,
    pub part: i32,
    pub range_from: Option<String>,
    pub range_to: Option<String>,
    pub status: TaskStatus,
    pub checkpoint: TaskCheckpoint,
    pub count: i64,
    pub error: Option<String>,
    pub lease_until: Option<String>,
    pub receipt: Option<String>,
}

/// How a column's values are typed in files that type them (Parquet), from the
/// Postgres type of the column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// text, varchar, uuid, json, jsonb (JSON text), numeric beyond 38 digits or
    /// NaN/Infinity (exact, as its text), and anything else (its text form).
    Text,
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// timestamptz, in UTC.
    TimestampUtc,
    /// timestamp without time zone.
    Timestamp,
    Date,
    /// numeric whose values fit a 128-bit decimal: `precision` digits (at most 38), of
    /// which `scale` after the point; other numerics are Text (exact).
    Decimal {
        precision: u8,
        scale: i8,
    },
}

/// A column of a dump: its name and kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str) -> PageFile {
        PageFile {
            list: "output".into(),
            resource_type: "Patient".into(),
            key: key.into(),
            count: 1,
        }
    }

    #[test]
    fn new_pages_take_only_files_on_no_page_in_order_and_never_touch_old_ones() {
        let available: Vec<PageFile> = ["a", "b", "c", "d", "e"].map(file).to_vec();
        assert!(new_pages(&[], &[], 2).is_empty());
        let first = new_pages(&[], &available[..3], 2);
        assert_eq!(first, vec![vec![file("a"), file("b")], vec![file("c")]]);
        // Later files make new pages; c's page stays as it was returned.
        let later = new_pages(&first, &available, 2);
        assert_eq!(later, vec![vec![file("d"), file("e")]]);
        let all: Vec<Vec<PageFile>> = first.into_iter().chain(later).collect();
        assert!(new_pages(&all, &available, 2).is_empty());
        assert_eq!(new_pages(&[], &available[..1], 0), vec![vec![file("a")]]);
    }
}
