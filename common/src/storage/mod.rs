//! Postgres storage in the Aidbox-compatible layout (SPEC section 2).
//!
//! - [`pool`]: connection settings from the environment, TLS, a lazily built pool.
//! - [`migrations`]: versioned schema changes, applied once under an advisory lock.
//! - [`resources`]: one table per resource type, created on first use; CRUD on any type.

pub mod migrations;
pub mod pool;
pub mod resources;

pub use pool::{Db, DbConfig};
pub use resources::StoredResource;
