//! Postgres: every SQL statement siphon runs lives here, one file per table family.
//!
//! - [`pool`]: connection settings, TLS, a lazily built pool ([`Db`]).
//! - [`statements`]: how statements are sent (unnamed, one round trip; pooler-safe).
//! - [`migrations`]: versioned schema changes, applied once under an advisory lock.
//! - [`resources`]: one table per resource type, created on first use; CRUD on any type.
//! - [`copy_in`]: the binary COPY writer that puts loaded lines into resource tables.
//! - [`read`]: the one way a table or a query is read out (`COPY ... TO STDOUT`).
//! - [`loader_files`]: LoaderFiles (claims, leases, batch commits, line errors).
//! - [`imports`]: `$import` sessions.
//! - [`clients`]: Clients and AccessPolicies (authentication).
//! - [`bulk`]: resource tables whose indexes are dropped for a first load.
//! - [`exports`]: export jobs, their tasks and checkpoints.
//! - [`filter`]: `_typeFilter` compiled to a condition of the export query.
//! - [`plans`]: objects staged to plan an import (dry runs, S3 Inventories).
//! - [`dumps`]: query dumps to a bucket, materialized as siphon_reader.
//! - [`refs`]: references awaiting resolution and lines parked until theirs resolve.

pub mod batch;
pub mod bulk;
pub mod clients;
pub mod copy_in;
pub mod dumps;
pub mod exports;
pub mod filter;
pub mod imports;
pub mod leases;
mod loader_file_table;
pub mod loader_files;
pub mod migrations;
pub mod plans;
pub mod pool;
pub mod read;
mod reader;
pub mod refs;
pub mod resources;
pub mod script;
pub mod statements;
pub mod submissions;

pub use pool::{Db, DbConfig};
pub use resources::StoredResource;

use crate::error::Error;

/// True when `e` says the table does not exist (a type nothing was stored as yet).
pub(crate) fn is_undefined_table(e: &Error) -> bool {
    matches!(e, Error::Database(d) if d.code() == Some("42P01"))
}

/// The rows of a read from a table that may not exist yet (no LoaderFile before the
/// first load, no AccessPolicy before the first client): none.
pub(crate) fn rows_or_empty(
    read: Result<Vec<tokio_postgres::Row>, Error>,
) -> Result<Vec<tokio_postgres::Row>, Error> {
    match read {
        Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
        other => other,
    }
}
