//! The one family of lease SQL. Loader files keep their lease inside the resource
//! (`resource->'lease'`, since a LoaderFile is a resource users read) and export tasks
//! in columns; [`LeaseColumns`] names where each keeps it, and every lease statement
//! (renew, give back, still ours, taken over, stalled) is written once here for both.
//! [`PgLeases`] is the Postgres adapter of the leases port ([`crate::lease::Leases`])
//! for both ([`FileLeases`], [`TaskLeases`]).

use std::time::Duration;

use futures::future::BoxFuture;

use super::statements::Statements;
use super::Db;
use crate::error::Result;
use crate::lease::{Claim, Leases};
use crate::model::export::{Export, ExportTask, TaskStatus};
use crate::model::{FileStatus, LoaderFile};

/// Where a leased table keeps its lease, as SQL expressions over one of its rows.
pub struct LeaseColumns {
    pub table: &'static str,
    /// True while the work runs (the only state a lease means anything in).
    pub running: &'static str,
    /// The owner, as text.
    pub owner: &'static str,
    /// When the lease runs out, as timestamptz.
    pub until: &'static str,
    /// The assignment that sets the lease's end to `{}`.
    pub set_until: &'static str,
    /// When the sweep last acted on the row (NULL: never), as timestamptz.
    pub recovered_at: &'static str,
    /// When a worker last claimed the row (or committed on it), as timestamptz: after
    /// the sweep's last act, the stall is a new one.
    pub claimed_at: &'static str,
    /// What giving the lease back also sets (with its trailing comma and space), if
    /// anything.
    pub on_release: &'static str,
}

/// The LoaderFile table's lease: `resource->'lease'` {owner, since, until}.
pub(super) const LOADER_FILE: LeaseColumns = LeaseColumns {
    table: crate::storage::loader_file_table::TABLE,
    running: "resource->>'status' = 'in-progress'",
    owner: "resource->'lease'->>'owner'",
    until: "siphon_ts(resource->'lease'->>'until')",
    set_until: "resource = jsonb_set(resource, '{lease,until}', to_jsonb({}))",
    recovered_at: "siphon_ts(resource->'recovery'->>'at')",
    claimed_at: "siphon_ts(resource->'lease'->>'since')",
    on_release: "ts = now(), ",
};

/// The export task table's lease: columns `lease_owner`, `lease_until`.
pub(super) const EXPORT_TASK: LeaseColumns = LeaseColumns {
    table: "siphon_export_task",
    running: "status = 'running'",
    owner: "lease_owner",
    until: "lease_until",
    set_until: "lease_until = {}",
    recovered_at: "(recovery->>'at')::timestamptz",
    claimed_at: "updated_at",
    on_release: "",
};

impl LeaseColumns {
    fn set_until(&self, to: &str) -> String {
        self.set_until.replace("{}", to)
    }

    /// The heartbeat (`$1` id, `$2` owner, `$3` seconds): extends the owner's live
    /// lease on running work. A lease given back or run out is never revived.
    pub fn renew_sql(&self) -> String {
        format!(
            "UPDATE {} SET {} WHERE id = $1 AND {} AND {} = $2::text AND {} > now()",
            self.table,
            self.set_until("now() + make_interval(secs => $3::float8)"),
            self.running,
            self.owner,
            self.until
        )
    }

    /// Gives the lease back without ending the work (`$1` id, `$2` owner): the next
    /// claim takes it at once.
    pub fn release_sql(&self) -> String {
        format!(
            "UPDATE {} SET {}{} WHERE id = $1 AND {} AND {} = $2::text",
            self.table,
            self.on_release,
            self.set_until("now() - interval '1 second'"),
            self.running,
            self.owner
        )
    }

    /// Whether running work is free for owner `owner` (an SQL parameter): no lease, a
    /// lease run out, or already the owner's (a message delivered again to it).
    pub fn free_for(&self, owner: &str) -> String {
        format!(
            "({until} IS NULL OR {until} < now() OR {o} = {owner})",
            until = self.until,
            o = self.owner
        )
    }

    /// Whether the row's lease is live (NULL-safe: false without a lease).
    pub fn live(&self) -> String {
        format!("coalesce({} > now(), false)", self.until)
    }

    /// Whether running work's lease ran out (the sweep's writes hold only then).
    pub fn ran_out(&self) -> String {
        format!("{} AND {} < now()", self.running, self.until)
    }

    /// The sweep's pick (`$1` grace seconds, `$2` again seconds): running work whose
    /// lease ran out more than the grace ago, not acted on within `again` unless a
    /// worker claimed it since (then that worker died too: a new stall).
    pub fn stalled(&self) -> String {
        format!(
            "{running} AND {until} < now() - make_interval(secs => $1::float8)
             AND ({at} IS NULL OR {at} < now() - make_interval(secs => $2::float8)
                  OR {claimed} > {at})",
            running = self.running,
            until = self.until,
            at = self.recovered_at,
            claimed = self.claimed_at
        )
    }

    /// The sweep's order: the longest stalled first.
    pub fn stalled_order(&self) -> String {
        format!("ORDER BY {}", self.until)
    }
}

/// One claim statement: work `id` for `owner` for `lease_secs`, keeping `receipt`.
type ClaimFn<W, E> = for<'a> fn(
    &'a Db,
    &'a str,
    &'a str,
    f64,
    Option<&'a str>,
) -> BoxFuture<'a, Result<Claim<W, E>>>;

/// The Postgres adapter of the leases port for one table: its claim statement (which
/// reads what the work is) and the table's [`LeaseColumns`], which renew and give back.
pub struct PgLeases<W, E> {
    db: Db,
    columns: &'static LeaseColumns,
    claim: ClaimFn<W, E>,
}

impl<W, E> Clone for PgLeases<W, E> {
    fn clone(&self) -> Self {
        PgLeases {
            db: self.db.clone(),
            columns: self.columns,
            claim: self.claim,
        }
    }
}

/// LoaderFiles' leases (`resource->'lease'`).
pub type FileLeases = PgLeases<Box<LoaderFile>, FileStatus>;

/// Export tasks' leases (`lease_owner`, `lease_until`); a claim hands over the task with
/// its export as it is now.
pub type TaskLeases = PgLeases<Box<(ExportTask, Export)>, TaskStatus>;

impl FileLeases {
    pub fn files(db: Db) -> Self {
        PgLeases {
            db,
            columns: &LOADER_FILE,
            claim: |db, id, owner, secs, receipt| {
                Box::pin(db.claim_loader_file(id, owner, secs, receipt))
            },
        }
    }
}

impl TaskLeases {
    pub fn tasks(db: Db) -> Self {
        PgLeases {
            db,
            columns: &EXPORT_TASK,
            claim: |db, id, owner, secs, receipt| {
                Box::pin(db.claim_export_task(id, owner, secs, receipt))
            },
        }
    }
}

impl<W: Send + 'static, E: Send + 'static> Leases for PgLeases<W, E> {
    type Work = W;
    type Ended = E;

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        receipt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim<W, E>>> {
        (self.claim)(&self.db, id, owner, lease.as_secs_f64(), receipt)
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let secs = lease.as_secs_f64();
            let n = client
                .run(&self.columns.renew_sql(), &[&id, &owner, &secs])
                .await?;
            Ok(n == 1)
        })
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let n = client
                .run(&self.columns.release_sql(), &[&id, &owner])
                .await?;
            Ok(n == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_renew_only_a_live_lease_of_their_owner() {
        assert_eq!(
            EXPORT_TASK.renew_sql(),
            "UPDATE siphon_export_task SET lease_until = now() + make_interval(secs => $3::float8) \
             WHERE id = $1 AND status = 'running' AND lease_owner = $2::text AND lease_until > now()"
        );
        let file = LOADER_FILE.renew_sql();
        assert!(
            file.contains("jsonb_set(resource, '{lease,until}', to_jsonb(now() + make_interval(secs => $3::float8)))")
                && file.ends_with("resource->'lease'->>'owner' = $2::text AND siphon_ts(resource->'lease'->>'until') > now()"),
            "{file}"
        );
    }

    #[test]
    fn a_release_ends_the_lease_in_the_past_and_only_the_owners() {
        assert_eq!(
            EXPORT_TASK.release_sql(),
            "UPDATE siphon_export_task SET lease_until = now() - interval '1 second' \
             WHERE id = $1 AND status = 'running' AND lease_owner = $2::text"
        );
        let file = LOADER_FILE.release_sql();
        assert!(
            file.contains("SET ts = now(), resource = jsonb_set"),
            "{file}"
        );
    }

    #[test]
    fn the_sweep_picks_by_the_same_rule_in_both_tables() {
        for (cols, claimed) in [
            (&EXPORT_TASK, "updated_at > (recovery->>'at')::timestamptz"),
            (
                &LOADER_FILE,
                "siphon_ts(resource->'lease'->>'since') > siphon_ts(resource->'recovery'->>'at')",
            ),
        ] {
            let sql = cols.stalled();
            assert!(sql.starts_with(cols.running), "{sql}");
            assert!(
                sql.contains("< now() - make_interval(secs => $1::float8)"),
                "{sql}"
            );
            assert!(
                sql.contains("< now() - make_interval(secs => $2::float8)"),
                "{sql}"
            );
            assert!(sql.contains(claimed), "{sql}");
        }
        assert_eq!(
            EXPORT_TASK.free_for("$2"),
            "(lease_until IS NULL OR lease_until < now() OR lease_owner = $2)"
        );
    }
}
