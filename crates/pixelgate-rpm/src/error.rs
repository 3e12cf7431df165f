//! The one error type of the packaging crate.
//!
//! Every variant names the file or value at fault, so `make rpm` fails with one line that says
//! what to fix; the `rpm` crate's own error is kept as the source.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("release {0:?}: use letters, digits, '.', '_', '+' or '~', and no '-'")]
    Release(String),
    #[error("cannot assemble {what}")]
    Rpm {
        what: String,
        #[source]
        source: rpm::Error,
    },
}

/// Reads a whole file as text, naming the file on failure.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}
