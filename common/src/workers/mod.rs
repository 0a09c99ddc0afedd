//! Queue consumers: what a worker does with one message. The function crates only turn
//! Lambda events into calls of these (and `make serve` runs the same workers locally).
//!
//! - [`load`]: the load queue (one file per message).

pub mod load;

pub use load::LoadWorker;
