//! The plain data siphon works with: what a LoaderFile, a line error or a session status
//! is. No I/O here; `storage` reads and writes these types, the domain modules reason
//! about them.

pub mod export;
pub mod ids;
pub mod line_error;
pub mod loader_file;
pub mod location;
pub mod pull;
pub mod session;
pub mod submission;
pub mod validation;

pub use line_error::LineError;
pub use loader_file::{
    Checkpoint, FileOptions, FileStatus, Lease, LoaderFile, Recovery, StoreRef, Stuck,
};
pub use location::{Location, ObjectLocation};
pub use session::SessionStatus;
pub use validation::Validation;
