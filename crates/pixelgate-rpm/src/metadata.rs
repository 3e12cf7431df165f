//! Who the package is: name, version, release, summary, description and dependencies.
//!
//! Version, licence and URL come from the workspace manifest, so the RPM never disagrees with
//! `pixelgate --version`. Dependencies are written out by hand: without rpmbuild nothing
//! generates them, so this list is the whole contract with an EL8/EL9 base system.

use std::{fmt, str::FromStr};

use crate::Error;

pub const NAME: &str = "pixelgate";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");
pub const URL: &str = env!("CARGO_PKG_REPOSITORY");
pub const ARCH: &str = "x86_64";
pub const SUMMARY: &str = "Email open and click tracking edge server";
pub const DESCRIPTION: &str = "\
pixelgate answers the open pixels and click links that an email
platform puts into outbound mail. It checks each sealed token,
rate-limits clients, answers at once with a 1x1 GIF or a redirect,
and records every event in a Redis queue through pooled, batched
writes. A drain worker moves the events in atomic batches into
MariaDB/MySQL, PostgreSQL or JSON lines.

Both run as hardened systemd units under the pixelgate system user.
Smoke tests for an installed host are in /usr/share/pixelgate/tests.";
/// Who built the package, as the changelog names them.
pub const PACKAGER: &str = "pixelgate maintainers <maintainers@pixelgate.invalid>";
/// Recorded instead of the build machine's name, so that builds are reproducible (the name
/// rpm's own reproducible-build setting uses).
pub const BUILD_HOST: &str = "reproducible";

/// The system user and group that %pre creates and the units run as.
pub const USER: &str = "pixelgate";
/// The units that the scriptlets preset, stop and restart.
pub const UNITS: [&str; 2] = ["pixelgate.service", "pixelgate-drain.service"];

/// When a requirement must hold: at any time, or while one scriptlet runs (`Requires(pre)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    Pre,
    Post,
    Preun,
    Postun,
}

/// What the package needs from the base system. The binary is linked against glibc with no
/// symbol newer than 2.28 (checked by `make rpm-test`), hence the one versioned libc provide.
pub const REQUIRES: &[(When, &str)] = &[
    (When::Always, "/bin/sh"),
    (When::Always, "libc.so.6(GLIBC_2.28)(64bit)"),
    (When::Pre, "shadow-utils"),
    (When::Post, "systemd"),
    (When::Preun, "systemd"),
    (When::Postun, "systemd"),
];

/// Weak dependencies: a local Redis for the queue, curl for the smoke tests.
pub const RECOMMENDS: &[&str] = &["redis", "curl"];

/// An RPM release: what changes when the same version is packaged again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release(String);

impl FromStr for Release {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._+~".contains(c);
        if s.is_empty() || !s.chars().all(allowed) {
            return Err(Error::Release(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Release {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `pixelgate-VERSION-RELEASE.x86_64.rpm`, the name fixed by the product contract.
pub fn file_name(release: &Release) -> String {
    format!("{NAME}-{VERSION}-{release}.{ARCH}.rpm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_checked() {
        assert_eq!("1".parse::<Release>().unwrap().as_str(), "1");
        assert_eq!(
            "2.el8_test+x~1".parse::<Release>().unwrap().to_string(),
            "2.el8_test+x~1"
        );
        for bad in ["", "1-2", "1 2", "1/2", "é"] {
            assert!(bad.parse::<Release>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn file_name_follows_the_contract() {
        let name = file_name(&"3".parse().unwrap());
        assert_eq!(name, format!("pixelgate-{VERSION}-3.x86_64.rpm"));
    }

    #[test]
    fn summary_and_description_please_rpmlint() {
        assert!(SUMMARY.len() < 80 && !SUMMARY.ends_with('.'));
        assert!(SUMMARY.starts_with(char::is_uppercase));
        assert!(
            DESCRIPTION.lines().all(|l| l.len() <= 79),
            "a description line is too long"
        );
    }

    #[test]
    fn every_scriptlet_phase_requires_what_it_runs() {
        let needs = |when| {
            REQUIRES
                .iter()
                .filter(move |(w, _)| *w == when)
                .map(|(_, n)| *n)
        };
        assert_eq!(needs(When::Pre).collect::<Vec<_>>(), ["shadow-utils"]);
        for when in [When::Post, When::Preun, When::Postun] {
            assert_eq!(needs(when).collect::<Vec<_>>(), ["systemd"]);
        }
    }
}
