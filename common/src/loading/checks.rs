//! What a batch commit does for validation (`validation: {enable, checks}`), inside the
//! batch's transaction so the loader's checkpoints cover it: findings of asynchronous
//! validation are merged with the batch's invalid lines, and references (`checks:
//! refs|all`) are resolved against the database and the batch, the rest kept (and with
//! `enable: on` their lines parked) until the load ends (`validation::resolve`).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::decode::Batch;
use crate::error::{Error, Result};
use crate::model::line_error::excerpt;
use crate::model::validation::Enable;
use crate::model::{LineError, LoaderFile};
use crate::resource_type::ResourceType;
use crate::storage::batch::BatchTx;
use crate::storage::refs::{ParkedLine, PendingRef};
use crate::validation::resolve::{resolve_batch, BatchRow, Resolution};

/// What keeping a batch's references did.
#[derive(Debug, Default)]
pub struct Kept {
    /// References kept until the load ends.
    pub pending: u64,
    /// Lines parked (taken out of the batch's rows).
    pub parked: u64,
}

/// Resolves the batch's references; keeps the unresolved ones and parks their lines
/// (`enable: on`), removing them from the rows to write. Call before writing the rows.
pub async fn keep_refs(tx: &BatchTx<'_>, file: &LoaderFile, batch: &mut Batch) -> Result<Kept> {
    let validation = file.options.validation;
    if !validation.refs() || batch.refs.is_empty() {
        return Ok(Kept::default());
    }
    let park = validation.enable == Enable::On;
    let resolution = resolve(tx, file, batch, park).await?;
    if resolution.pending.is_empty() {
        return Ok(Kept::default());
    }
    let excerpts = excerpts(batch, &resolution);
    let pending = pending_refs(batch, &resolution, &excerpts);
    let parked = parked_lines(batch, &resolution)?;
    tx.keep_refs(&file.load_owner(), &file.id, &pending, &parked)
        .await?;
    let kept = Kept {
        pending: pending.len() as u64,
        parked: resolution.parked.len() as u64,
    };
    drop((pending, parked));
    for chunk in &mut batch.chunks {
        chunk.rows.retain(|r| !resolution.parked.contains(&r.line));
    }
    batch.chunks.retain(|c| !c.rows.is_empty());
    Ok(kept)
}

/// Which of the batch's references resolve: to a row of the batch itself, or to a row
/// already in the database (looked up once per type).
async fn resolve(
    tx: &BatchTx<'_>,
    file: &LoaderFile,
    batch: &Batch,
    park: bool,
) -> Result<Resolution> {
    let rows: Vec<BatchRow> = batch
        .chunks
        .iter()
        .flat_map(|c| {
            c.rows.iter().map(move |r| BatchRow {
                line: r.line,
                resource_type: c.resource_type.as_str(),
                id: &r.id,
            })
        })
        .collect();
    let provided: HashSet<(&str, &str)> = rows.iter().map(|r| (r.resource_type, r.id)).collect();
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, r) in &batch.refs {
        if !provided.contains(&(r.target_type, r.id.as_str())) {
            wanted.entry(r.target_type).or_default().push(&r.id);
        }
    }
    let mut in_db: HashMap<&str, HashSet<String>> = HashMap::new();
    // Without its primary key a table has no index to look ids up: everything is
    // resolved when the load ends, after the key is back.
    if !file.options.drop_primary_key {
        for (ty, mut ids) in wanted {
            ids.sort_unstable();
            ids.dedup();
            in_db.insert(ty, tx.existing_ids(&ResourceType::parse(ty)?, &ids).await?);
        }
    }
    Ok(resolve_batch(&batch.refs, &rows, &in_db, park))
}

/// The excerpt of each line with a pending reference.
fn excerpts(batch: &Batch, resolution: &Resolution) -> HashMap<u64, String> {
    // Where each line's row is.
    let mut at: HashMap<u64, (usize, usize)> = HashMap::new();
    for (c, chunk) in batch.chunks.iter().enumerate() {
        for (r, row) in chunk.rows.iter().enumerate() {
            at.insert(row.line, (c, r));
        }
    }
    resolution
        .pending
        .iter()
        .filter_map(|&i| {
            let line = batch.refs[i].0;
            let (c, r) = at.get(&line)?;
            let chunk = &batch.chunks[*c];
            Some((line, excerpt(chunk.json(&chunk.rows[*r]))))
        })
        .collect()
}

/// The references kept until the load ends, each with its line's excerpt.
fn pending_refs<'a>(
    batch: &'a Batch,
    resolution: &Resolution,
    excerpts: &'a HashMap<u64, String>,
) -> Vec<PendingRef<'a>> {
    resolution
        .pending
        .iter()
        .map(|&i| {
            let (line, r) = &batch.refs[i];
            PendingRef {
                line: *line,
                path: &r.path,
                target_type: r.target_type,
                target_id: &r.id,
                parked: resolution.parked.contains(line),
                excerpt: excerpts.get(line).map(String::as_str).unwrap_or(""),
            }
        })
        .collect()
}

/// The parked lines (taken out of the rows), with their JSON, by type.
fn parked_lines<'a>(
    batch: &'a Batch,
    resolution: &Resolution,
) -> Result<Vec<(ResourceType, Vec<ParkedLine<'a>>)>> {
    let mut parked: Vec<(ResourceType, Vec<ParkedLine>)> = Vec::new();
    for chunk in &batch.chunks {
        let mut lines = Vec::new();
        for row in chunk
            .rows
            .iter()
            .filter(|r| resolution.parked.contains(&r.line))
        {
            let resource = std::str::from_utf8(chunk.json(row)).map_err(|e| {
                Error::Internal(format!("parked line {} is not UTF-8: {e}", row.line))
            })?;
            lines.push(ParkedLine {
                line: row.line,
                id: &row.id,
                resource,
            });
        }
        if !lines.is_empty() {
            parked.push((chunk.resource_type.clone(), lines));
        }
    }
    Ok(parked)
}

/// Merges asynchronous findings into the batch's invalid lines: a finding on a line
/// that did not load after all (Postgres refused it) joins that line's error; the others
/// stay findings. Returns the findings left.
pub fn merge_findings(errors: &mut [LineError], findings: Vec<LineError>) -> Vec<LineError> {
    let by_line: HashMap<u64, usize> = errors
        .iter()
        .enumerate()
        .map(|(i, e)| (e.line, i))
        .collect();
    let mut left = Vec::new();
    for f in findings {
        match by_line.get(&f.line) {
            Some(&i) => {
                let e = &mut errors[i];
                e.reason = format!("{}; {}", e.reason, f.reason);
            }
            None => left.push(f),
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_on_refused_lines_join_their_error() {
        let mut errors = vec![LineError::new(3, "Postgres refused the line: x", b"{}")];
        let findings = vec![
            LineError::finding(2, "Patient.gender: expected a string", b"{}"),
            LineError::finding(3, "Patient.birthDate: bad", b"{}"),
        ];
        let left = merge_findings(&mut errors, findings);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].line, left[0].loaded), (2, true));
        assert_eq!(
            errors[0].reason,
            "Postgres refused the line: x; Patient.birthDate: bad"
        );
        assert!(!errors[0].loaded);
    }
}
