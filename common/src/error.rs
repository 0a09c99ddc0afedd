//! The domain error: one type for the whole library. Callers match on its kind; only the
//! HTTP edge (`web::status_of`) turns a kind into a status code.

use std::fmt;

/// What went wrong, in words a caller (and a person on call) can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something invalid (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The action is not possible in the current state (HTTP 406, as in the Aidbox API).
    #[error("{0}")]
    NotAcceptable(String),
    /// The thing to create exists already (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than allowed (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// The request body's content type is not one the route takes (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests from this caller: try again after `retry_after_secs` (HTTP 429).
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after_secs: u64,
    },
    /// A store or queue (S3, SQS) could not be reached or answered "try again": worth a
    /// retry later, like a lost database connection (HTTP 503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Postgres failed; transient failures (connection lost, server restart) are retried
    /// by callers that can.
    #[error("database error: {0}")]
    Database(#[from] DbError),
    /// Anything else: a bug or an unavailable dependency (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when retrying the same operation later may succeed: decided by the kind of
    /// error, never by its wording.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => e.is_transient(),
            Error::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// A Postgres failure, from the driver or the pool.
#[derive(Debug)]
pub struct DbError {
    message: String,
    code: Option<String>,
    transient: bool,
}

impl DbError {
    /// The SQLSTATE, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// Connection lost, server shutting down, pool exhausted: worth a retry.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_string();
                // Class 08 = connection exception, 57P0x = admin/crash shutdown,
                // 40001/40P01 = serialization failure / deadlock.
                let transient = code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01"
                    || code == "53300";
                let mut message = db.message().to_string();
                if let Some(detail) = db.detail() {
                    message.push_str(": ");
                    message.push_str(detail);
                }
                DbError {
                    message,
                    code: Some(code),
                    transient,
                }
            }
            // No server error: the connection itself failed or was closed.
            None => DbError {
                message: e.to_string(),
                code: None,
                transient: true,
            },
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => DbError {
                message: format!("connection pool: {other}"),
                code: None,
                transient: true,
            },
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Database(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Database(e.into())
    }
}
