//! siphon's domain: everything the Lambda functions do, as plain async Rust.
//!
//! The function crates under `functions/` are thin adapters: they turn a Lambda event into
//! a call to one of these modules and the result into a response.
//!
//! Foundations (import nothing above them):
//! - [`error`], [`config`] (typed settings from the environment), [`resource_type`] (the
//!   one gate every identifier passes before it reaches SQL), [`telemetry`], [`memory`]
//!   (how the process allocates).
//! - [`model`]: plain data (LoaderFile, line errors, session states, locations).
//! - [`fhir`]: the FHIR R4 definitions (resource types, the Patient compartment).
//! - [`metrics`]: what siphon counts (CloudWatch EMF in Lambda, `/metrics` locally).
//!
//! Edges (talk to the outside world, know no domain logic):
//! - [`storage`]: Postgres; every SQL statement lives there.
//! - [`sources`]: where files are read from (S3, https, memory).
//! - [`sinks`]: where exported files are written (S3 multipart uploads, memory).
//! - [`formats`]: the file formats exporters write, one file each, and their registry.
//! - [`queue`]: where work waits (SQS, memory).
//! - [`secrets`]: AWS Secrets Manager.
//! - [`web`]: the HTTP edge every HTTP function shares (bodies, errors, status codes).
//!
//! Domain (uses the edges):
//! - [`loading`]: stream one ndjson(.gz) file into its resource table, exactly once.
//! - [`sessions`]: `$import` sessions and `$load`: many files loaded as one job.
//! - [`exporting`]: FHIR Bulk Data `$export` to S3, on resumable export tasks.
//! - [`ingestion`]: load-from-bucket and S3 events put files on the load queue.
//! - [`workers`]: what a queue consumer does with one message (load it, settle, retry).
//! - [`sweep`]: picks up work whose worker died, within about a minute.
//! - [`dead_letters`]: what the queues gave up on, and retrying it.
//! - [`boot`]: the cold start every function shares (configuration, logs, queues).
//! - [`dumping`]: `$dump` and `$dump-sql` streams.
//! - [`resources`]: reading and writing resources through the API (`PUT /`, lists).
//! - [`auth`]: HTTP Basic against Clients and AccessPolicies.
//! - [`validation`]: FHIR R4 checks of loaded lines (structure, references).

pub mod auth;
pub mod boot;
pub mod config;
pub mod dead_letters;
pub mod dumping;
pub mod error;
pub mod exporting;
pub mod fhir;
pub mod formats;
pub mod ingestion;
pub mod inventory;
pub mod lease;
pub mod loading;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pulling;
pub mod queue;
pub mod resource_type;
pub mod resources;
pub mod secrets;
pub mod sessions;
pub mod sinks;
pub mod sources;
pub mod storage;
pub mod sweep;
pub mod telemetry;
pub mod validation;
pub mod web;
pub mod workers;

pub use error::{Error, Result};
pub use resource_type::ResourceType;
