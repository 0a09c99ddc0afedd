//! Getting files into the load queue: `load-from-bucket` ([`bucket`]) and S3 events
//! ([`events`]).

pub mod bucket;
pub mod events;
pub mod throughput;
