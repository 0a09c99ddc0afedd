//! siphon's domain: everything the Lambda functions do, as plain async Rust.
//!
//! The function crates under `functions/` are thin adapters: they turn a Lambda event into
//! a call to one of these modules and the result into a response.
//!
//! - [`storage`]: the Aidbox-compatible Postgres layout (pool, migrations, resource tables).
//! - [`sources`]: where ndjson files come from (S3, or any async byte stream in tests).
//! - [`loading`]: stream one ndjson(.gz) file into its resource table, exactly once.
//! - [`sessions`]: `$import` sessions and `$load`: many files loaded as one job users control.
//! - [`resource_type`]: the one gate every identifier passes before it reaches SQL.
//! - [`telemetry`]: structured logging set-up shared by every binary.

pub mod auth;
pub mod dumping;
pub mod error;
pub mod ingestion;
pub mod loading;
pub mod resource_type;
pub mod secrets;
pub mod sessions;
pub mod sources;
pub mod storage;
pub mod telemetry;

pub use error::{Error, Result};
pub use resource_type::ResourceType;
