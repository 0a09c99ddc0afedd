//! Getting files into the load queue: `load-from-bucket` ([`bucket`]), S3 events
//! ([`events`]), and the queue itself ([`queue`]).

pub mod bucket;
pub mod events;
pub mod queue;
