//! The pixelgate RPM, written by a pure-Rust builder: no rpmbuild, no spec file, no macros.
//!
//! `make rpm` runs this crate's binary. What goes into the package is plain data that tests
//! read: every path with its mode, owner and role (`manifest`), the name and dependencies
//! (`metadata`), the scriptlets (plain shell under `rpm/scriptlets/`), the changelog and the
//! units' directives (`units`). The same inputs and source date give the same bytes.

pub mod changelog;
pub mod error;
pub mod manifest;
pub mod metadata;
pub mod package;
pub mod scriptlets;
pub mod stub;
pub mod units;

pub use error::Error;
pub use manifest::{Entry, Role, Sources};
pub use metadata::Release;
pub use package::Inputs;

/// The names of a header's dependencies, for tests to compare.
#[cfg(test)]
pub(crate) fn dependency_names(deps: Result<Vec<rpm::Dependency>, rpm::Error>) -> Vec<String> {
    deps.unwrap().into_iter().map(|d| d.name).collect()
}
