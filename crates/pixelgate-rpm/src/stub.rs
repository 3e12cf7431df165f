//! A file-less stub package that provides what an EL8/EL9 base system would.
//!
//! `make rpm-test` installs pixelgate into a Debian root, which has no rpm database of its own.
//! Installing this stub first lets `rpm -i pixelgate` run with its dependency checks on: a
//! requirement that the stub does not list (`rpm/stub/el-base.provides`) fails the install.

use std::path::{Path, PathBuf};

use rpm::{Dependency, PackageBuilder};

use crate::{Error, error::read_text, package::write_package};

pub const NAME: &str = "el-base-stub";
pub const FILE_NAME: &str = "el-base-stub-1-1.noarch.rpm";

/// The capabilities listed in a provides file: one a line, `#` starts a comment.
pub fn parse_provides(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Builds the stub from a provides file and writes it into `dir`.
pub fn write(provides_file: &Path, dir: &Path, source_date: Option<u32>) -> Result<PathBuf, Error> {
    let provides = parse_provides(&read_text(provides_file)?);
    let mut config = rpm::BuildConfig::v4().compression(rpm::CompressionType::Gzip);
    if let Some(date) = source_date {
        config = config.source_date(date);
    }
    let mut builder = PackageBuilder::new(
        NAME,
        "1",
        crate::metadata::LICENSE,
        "noarch",
        "Stands in for an EL base system in pixelgate's install test",
    );
    builder.using_config(config).description(
        "Provides, without any files, what pixelgate requires from an EL8/EL9 base system,\n\
         so that its RPM installs into a Debian test root with dependency checks on.",
    );
    for name in provides {
        builder.provides(Dependency::any(name));
    }
    let package = builder.build().map_err(|source| Error::Rpm {
        what: FILE_NAME.into(),
        source,
    })?;
    write_package(&package, dir, FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_files_skip_comments_and_blanks() {
        let text = "# what EL has\n/bin/sh\n\n  systemd  # PID 1\nlibc.so.6(GLIBC_2.28)(64bit)\n";
        assert_eq!(
            parse_provides(text),
            ["/bin/sh", "systemd", "libc.so.6(GLIBC_2.28)(64bit)"]
        );
    }

    #[test]
    fn the_stub_has_no_files_and_the_listed_provides() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("provides");
        std::fs::write(&list, "/bin/sh\nshadow-utils\n").unwrap();
        let path = write(&list, dir.path(), Some(1_700_000_000)).unwrap();
        let package = rpm::Package::open(path).unwrap();
        assert!(package.metadata.get_file_entries().unwrap().is_empty());
        let provides = crate::dependency_names(package.metadata.get_provides());
        assert!(
            provides.contains(&"/bin/sh".to_owned())
                && provides.contains(&"shadow-utils".to_owned())
        );
    }
}
