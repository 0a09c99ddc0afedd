//! Versioned schema migrations, applied idempotently and safely when many Lambdas cold
//! start at once: everything runs in one transaction holding a transaction-level advisory
//! lock, so a racing starter waits and then finds the work done.

use crate::storage::statements::Statements;
use tokio_postgres::Client;

use crate::error::Result;

/// The advisory lock key that serialises migrations (arbitrary, fixed forever).
const MIGRATION_LOCK_KEY: i64 = 0x5170_4e00_0000_0001;

/// Every migration, in order. Never edit a released one: add a new version.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "import_sessions",
        include_str!("../../migrations/0002_import_sessions.sql"),
    ),
    (
        3,
        "bulk_tables",
        include_str!("../../migrations/0003_bulk_tables.sql"),
    ),
    (
        4,
        "exports",
        include_str!("../../migrations/0004_exports.sql"),
    ),
    (5, "plans", include_str!("../../migrations/0005_plans.sql")),
    (
        6,
        "dump_schema",
        include_str!("../../migrations/0006_dump_schema.sql"),
    ),
    (
        7,
        "inventory",
        include_str!("../../migrations/0007_inventory.sql"),
    ),
    (
        8,
        "validation",
        include_str!("../../migrations/0008_validation.sql"),
    ),
    (
        9,
        "plan_compare",
        include_str!("../../migrations/0009_plan_compare.sql"),
    ),
    (10, "auth", include_str!("../../migrations/0010_auth.sql")),
    (
        11,
        "export_pages",
        include_str!("../../migrations/0011_export_pages.sql"),
    ),
    (
        12,
        "submissions",
        include_str!("../../migrations/0012_submissions.sql"),
    ),
];

/// Applies the migrations that have not run yet. Returns how many ran now.
pub async fn migrate(client: &mut Client) -> Result<usize> {
    let tx = client.transaction().await?;
    tx.run("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS siphon_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .rows("SELECT version FROM siphon_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.run(
            "INSERT INTO siphon_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "applied migration");
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
