//! Queue consumers: what a worker does with one message. The function crates only turn
//! Lambda events into calls of these (and `make serve` runs the same workers locally).
//!
//! - [`load`]: the load queue (one file per message).
//! - [`export`]: the export queue (one export task per message).
//!
//! Both run on [`runtime`]: one batch skeleton, each answering a [`runtime::Disposition`].

pub mod export;
pub mod load;
pub mod runtime;

pub use export::ExportWorker;
pub use load::LoadWorker;
