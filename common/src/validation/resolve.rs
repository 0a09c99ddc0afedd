//! Resolving references (`checks: refs|all`) in two steps, both inside transactions the
//! loader already has, so a worker dying at any line loses nothing and repeats nothing:
//!
//! 1. **Each batch** ([`resolve_batch`]): a reference resolves when its target is in the
//!    database (as the batch's transaction sees it) or among the batch's own rows. The
//!    others are kept in `siphon_ref_pending` with the batch's commit. With `enable: on`
//!    a line with an unresolved reference is *parked* (kept aside, not written) instead.
//! 2. **When the whole load has ended** ([`finish`]: every file of the `$import` session
//!    or load-from-bucket call, or the lone file): in one transaction, pending references
//!    whose target now exists are dropped, parked lines whose references all resolved are
//!    written to their tables (repeatedly, as they may resolve each other), and what is
//!    left becomes invalid lines: parked lines fail, loaded lines (`async`) are flagged.
//!    The worker that ends the load's last file calls it; the sweep calls it for loads
//!    whose worker died before.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::BytesMut;
use serde_json::json;

use super::refs::FoundRef;
use crate::error::Result;
use crate::model::LineError;
use crate::resource_type::ResourceType;
use crate::storage::copy_in::{encode_row, set_txid, Chunk, Row};
use crate::storage::refs::{Dangling, RefsTx};
use crate::storage::Db;

/// A row of a batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchRow<'a> {
    pub line: u64,
    pub resource_type: &'a str,
    pub id: &'a str,
}

/// What a batch's references come to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Lines to hold back until the load ends (only when parking).
    pub parked: HashSet<u64>,
    /// The references (indices into the batch's) to keep until the load ends.
    pub pending: Vec<usize>,
}

/// Resolves a batch's references against `in_db` (the targets found in the database,
/// by type) and the batch's own `rows`. With `park`, lines with an unresolved
/// reference are parked, and rows they would have provided no longer count.
pub fn resolve_batch(
    refs: &[(u64, FoundRef)],
    rows: &[BatchRow<'_>],
    in_db: &HashMap<&str, HashSet<String>>,
    park: bool,
) -> Resolution {
    let db_has = |r: &FoundRef| in_db.get(r.target_type).is_some_and(|s| s.contains(&r.id));
    let mut parked: HashSet<u64> = HashSet::new();
    loop {
        let present: HashSet<(&str, &str)> = rows
            .iter()
            .filter(|r| !parked.contains(&r.line))
            .map(|r| (r.resource_type, r.id))
            .collect();
        let resolved =
            |r: &FoundRef| db_has(r) || present.contains(&(r.target_type, r.id.as_str()));
        if !park {
            let pending = (0..refs.len()).filter(|&i| !resolved(&refs[i].1)).collect();
            return Resolution { parked, pending };
        }
        let newly: Vec<u64> = refs
            .iter()
            .filter(|(line, r)| !parked.contains(line) && !resolved(r))
            .map(|(line, _)| *line)
            .collect();
        if newly.is_empty() {
            break;
        }
        parked.extend(newly);
    }
    let pending = (0..refs.len())
        .filter(|&i| parked.contains(&refs[i].0) && !db_has(&refs[i].1))
        .collect();
    Resolution { parked, pending }
}

/// Per file: lines written from the park, and invalid lines / findings to record.
#[derive(Default)]
struct Settled {
    written: BTreeMap<String, u64>,
    errors: BTreeMap<String, Vec<LineError>>,
    /// Parked lines that failed on a dangling reference.
    failed: BTreeMap<String, u64>,
}

/// Settles the references of load `scope` if it has ended (see the module). Returns
/// false when there was nothing to do yet. Safe to call from anywhere, any number of
/// times: one call at a time works on a scope, and it takes what it settles.
pub async fn finish(db: &Db, scope: &str) -> Result<bool> {
    if !db.refs_waiting(scope).await? {
        return Ok(false);
    }
    let mut client = db.client().await?;
    let tx = Db::begin_refs(&mut client, scope).await?;
    if !tx.scope_finished(scope).await? {
        return Ok(false);
    }
    let mut settled = Settled::default();
    write_ready(&tx, scope, &mut settled).await?;
    let dangling = tx.take_dangling(scope).await?;
    // Every parked line left has a dangling reference: it becomes an invalid line.
    let parked_left = tx.take_parked(scope, false).await?;
    record_dangling(&dangling, &mut settled);
    let (written, failed, flagged) = settle_files(&tx, scope, settled).await?;
    tx.commit().await?;
    tracing::info!(
        scope,
        written,
        failed,
        flagged,
        dangling = dangling.len(),
        parked_failed = parked_left.len(),
        "references resolved at the end of the load"
    );
    Ok(true)
}

/// Writes the parked lines whose references now resolve, until none is left.
async fn write_ready(tx: &RefsTx<'_>, scope: &str, settled: &mut Settled) -> Result<()> {
    let mut upsert: HashMap<String, bool> = HashMap::new();
    loop {
        tx.resolve_existing(scope).await?;
        let ready = tx.take_parked(scope, true).await?;
        if ready.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ready.iter().map(|p| p.file_id.clone()).collect();
        for file in tx.files(&ids).await? {
            upsert.insert(file.id.clone(), file.options.upsert);
        }
        let mut chunks: BTreeMap<(String, String), Chunk> = BTreeMap::new();
        for p in &ready {
            let ty = ResourceType::parse(&p.resource_type)?;
            let chunk = chunks
                .entry((p.file_id.clone(), p.resource_type.clone()))
                .or_insert_with(|| Chunk {
                    resource_type: ty.clone(),
                    buf: BytesMut::new(),
                    rows: Vec::new(),
                });
            let start = chunk.buf.len();
            encode_row(&mut chunk.buf, &p.id, ty.as_str(), p.resource.as_bytes());
            chunk.rows.push(Row {
                line: p.line,
                start,
                end: chunk.buf.len(),
                id: p.id.clone(),
            });
        }
        let txid = tx.next_txid().await?;
        for ((file_id, _), mut chunk) in chunks {
            set_txid(&mut chunk, txid);
            let result = tx
                .write(chunk, upsert.get(&file_id).copied().unwrap_or(true))
                .await?;
            *settled.written.entry(file_id.clone()).or_default() += result.loaded;
            settled
                .errors
                .entry(file_id)
                .or_default()
                .extend(result.errors);
        }
    }
}

/// One line error per line with dangling references, naming each; parked lines among
/// them count as failed.
fn record_dangling(dangling: &[Dangling], settled: &mut Settled) {
    let mut reasons: BTreeMap<(String, u64), (Vec<String>, bool, String)> = BTreeMap::new();
    for d in dangling {
        let entry = reasons
            .entry((d.file_id.clone(), d.line))
            .or_insert_with(|| (Vec::new(), d.parked, d.excerpt.clone()));
        entry.0.push(format!(
            "{}: {}/{} does not exist",
            d.path, d.target_type, d.target_id
        ));
    }
    for ((file_id, line), (why, parked, excerpt)) in reasons {
        let error = LineError {
            line,
            reason: why.join("; "),
            excerpt,
            loaded: !parked,
        };
        if parked {
            *settled.failed.entry(file_id.clone()).or_default() += 1;
        }
        settled.errors.entry(file_id).or_default().push(error);
    }
}

/// Records each file's errors and adds its counts; answers the totals written, failed
/// and flagged.
async fn settle_files(
    tx: &RefsTx<'_>,
    scope: &str,
    mut settled: Settled,
) -> Result<(u64, u64, u64)> {
    let mut ids: Vec<String> = settled
        .errors
        .keys()
        .chain(settled.written.keys())
        .cloned()
        .collect();
    ids.extend(tx.scope_files_waiting(scope).await?);
    ids.sort();
    ids.dedup();
    let (mut flagged_total, mut failed_total, mut written_total) = (0, 0, 0);
    for file in tx.files(&ids).await? {
        let file_errors = settled.errors.remove(&file.id).unwrap_or_default();
        let parked_failed = settled.failed.get(&file.id).copied().unwrap_or(0);
        let refused = file_errors.iter().filter(|e| !e.loaded).count() as u64 - parked_failed;
        let new_lines = tx.record(&file.id, &file_errors).await?;
        let new_findings = file_errors.iter().filter(|e| e.loaded).count() as u64;
        // Lines already recorded (a structure finding) are flagged already.
        let flagged = new_findings.min(new_lines);
        let loaded = settled.written.get(&file.id).copied().unwrap_or(0);
        let failed = parked_failed + refused;
        let mut patch = json!({"loaded": file.loaded + loaded, "failed": file.failed + failed});
        if file.flagged + flagged > 0 {
            patch["flagged"] = json!(file.flagged + flagged);
        }
        tx.settle_file(&file.id, &patch).await?;
        flagged_total += flagged;
        failed_total += failed;
        written_total += loaded;
    }
    Ok((written_total, failed_total, flagged_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: u64, ty: &'static str, id: &str) -> (u64, FoundRef) {
        (
            line,
            FoundRef {
                path: "X.subject".into(),
                target_type: ty,
                id: id.into(),
            },
        )
    }

    #[test]
    fn a_batch_resolves_against_the_database_and_its_own_rows() {
        let rows = [
            BatchRow {
                line: 1,
                resource_type: "Patient",
                id: "p1",
            },
            BatchRow {
                line: 2,
                resource_type: "Observation",
                id: "o1",
            },
            BatchRow {
                line: 3,
                resource_type: "Observation",
                id: "o2",
            },
        ];
        let in_db: HashMap<&str, HashSet<String>> =
            [("Patient", HashSet::from(["p0".to_string()]))].into();
        let refs = vec![
            r(2, "Patient", "p0"), // in the database
            r(2, "Patient", "p1"), // in the batch
            r(3, "Patient", "p9"), // nowhere yet
            r(3, "Observation", "o1"),
        ];
        let kept = resolve_batch(&refs, &rows, &in_db, false);
        assert_eq!(
            kept,
            Resolution {
                parked: HashSet::new(),
                pending: vec![2]
            }
        );
        // Parking line 3: its reference to o1 is kept too (resolved when the load ends).
        let parked = resolve_batch(&refs, &rows, &in_db, true);
        assert_eq!(parked.parked, HashSet::from([3]));
        assert_eq!(parked.pending, vec![2, 3]);
    }

    #[test]
    fn parking_a_line_parks_the_lines_that_needed_it() {
        let rows = [
            BatchRow {
                line: 1,
                resource_type: "Encounter",
                id: "e1",
            },
            BatchRow {
                line: 2,
                resource_type: "Observation",
                id: "o1",
            },
            BatchRow {
                line: 3,
                resource_type: "Observation",
                id: "o2",
            },
        ];
        let refs = vec![
            r(1, "Patient", "missing"),
            r(2, "Encounter", "e1"),
            r(3, "Observation", "o2"), // itself: fine
        ];
        let res = resolve_batch(&refs, &rows, &HashMap::new(), true);
        assert_eq!(res.parked, HashSet::from([1, 2]));
        assert_eq!(res.pending, vec![0, 1]);
    }
}
