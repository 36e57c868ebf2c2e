//! The error type of this crate.
//!
//! Every error caused by bad input names where the input was: the file, the line (1-based,
//! counting the header line), the column (field) and the offending value.

use std::path::PathBuf;

/// Errors of the data crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A value in a text file could not be read.
    #[error("{}:{line}: column `{column}`: {reason} (value {value:?})", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line number (the header, if any, is line 1).
        line: u64,
        /// Name of the column (field).
        column: String,
        /// The offending value, as read.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file does not have the SHA-256 digest it must have.
    #[error("{}: SHA-256 is {actual}, expected {expected}", file.display())]
    Checksum {
        /// The file (or archive member).
        file: PathBuf,
        /// The pinned digest.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },
    /// A zip archive is unreadable or unsafe to extract.
    #[error("zip archive {}: {reason}", archive.display())]
    Zip {
        /// The archive.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No source of a data set could be reached.
    #[error("{0}")]
    Fetch(String),
    /// A data set that must be present is absent.
    #[error("{0}")]
    Missing(String),
    /// A configuration (schema, protocol arguments) is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error at `file:line`, column `column`, value `value`.
    pub fn parse(
        file: impl Into<PathBuf>,
        line: u64,
        column: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        DataError::Parse {
            file: file.into(),
            line,
            column: column.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
