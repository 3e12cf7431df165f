//! Assembles the pixelgate RPM from the manifest, metadata, scriptlets and changelog.
//!
//! The output is a v4 package with a gzip payload, which EL8's rpm 4.14 reads. With a source
//! date (`SOURCE_DATE_EPOCH`) the build time and every file time are clamped to it, and the
//! package carries no build host, so two builds of the same inputs are byte for byte the same.

use std::path::{Path, PathBuf};

use rpm::{Dependency, FileOptions, PackageBuilder, Scriptlet};

use crate::{
    Error, changelog,
    manifest::{Content, Entry, Role, Sources, manifest},
    metadata::{self, REQUIRES, Release, When},
    scriptlets::Scriptlets,
};

/// Everything one build needs.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub sources: Sources,
    pub release: Release,
    /// Seconds since the epoch that the package's times are clamped to.
    pub source_date: Option<u32>,
}

/// Builds the package in memory.
pub fn build(inputs: &Inputs) -> Result<rpm::Package, Error> {
    let scriptlets = Scriptlets::load(&inputs.sources.scriptlets())?;
    let changes = changelog::load(&inputs.sources.changelog())?;
    let rpm_err = |source| Error::Rpm {
        what: metadata::file_name(&inputs.release),
        source,
    };

    let mut config = rpm::BuildConfig::v4().compression(rpm::CompressionType::Gzip);
    if let Some(date) = inputs.source_date {
        config = config.source_date(date);
    }
    let mut builder = PackageBuilder::new(
        metadata::NAME,
        metadata::VERSION,
        metadata::LICENSE,
        metadata::ARCH,
        metadata::SUMMARY,
    );
    builder
        .using_config(config)
        .release(inputs.release.as_str())
        .description(metadata::DESCRIPTION)
        .url(metadata::URL)
        .packager(metadata::PACKAGER)
        .group("System Environment/Daemons")
        .build_host(metadata::BUILD_HOST)
        .pre_install_script(Scriptlet::new(scriptlets.pre))
        .post_install_script(Scriptlet::new(scriptlets.post))
        .pre_uninstall_script(Scriptlet::new(scriptlets.preun))
        .post_uninstall_script(Scriptlet::new(scriptlets.postun));
    for (when, name) in REQUIRES {
        builder.requires(match when {
            When::Always => Dependency::any(*name),
            When::Pre => Dependency::script_pre(*name),
            When::Post => Dependency::script_post(*name),
            When::Preun => Dependency::script_preun(*name),
            When::Postun => Dependency::script_postun(*name),
        });
    }
    for name in metadata::RECOMMENDS {
        builder.recommends(Dependency::any(*name));
    }
    // No Provides here: the builder derives `config(pixelgate)` from the %config file and
    // `user(pixelgate)`, `group(pixelgate)` from the sysusers.d file, as rpm 4.19 does.
    for change in &changes {
        builder.add_changelog_entry(&change.author, &change.text, change.time);
    }
    for entry in manifest(&inputs.sources) {
        // The builder's own error would not say which file is missing.
        if let Content::File(source) = &entry.content {
            std::fs::metadata(source).map_err(|e| Error::Read {
                path: source.clone(),
                source: e,
            })?;
        }
        add(&mut builder, entry).map_err(rpm_err)?;
    }
    builder.build().map_err(rpm_err)
}

/// Builds the package and writes it as `dir/pixelgate-VERSION-RELEASE.x86_64.rpm`.
pub fn write(inputs: &Inputs, dir: &Path) -> Result<PathBuf, Error> {
    let package = build(inputs)?;
    write_package(&package, dir, &metadata::file_name(&inputs.release))
}

/// Writes a built package as `dir/name`, creating `dir`.
pub(crate) fn write_package(
    package: &rpm::Package,
    dir: &Path,
    name: &str,
) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    let write_err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(write_err)?);
    package.write(&mut file).map_err(|source| Error::Rpm {
        what: name.to_owned(),
        source,
    })?;
    std::io::Write::flush(&mut file).map_err(write_err)?;
    Ok(path)
}

fn add(builder: &mut PackageBuilder, entry: Entry) -> Result<(), rpm::Error> {
    let options = match entry.content {
        Content::Dir => FileOptions::dir(entry.path),
        Content::File(_) => FileOptions::new(entry.path),
    }
    .permissions(entry.mode)
    .user(entry.user)
    .group(entry.group);
    let options = match entry.role {
        Role::Plain => options,
        Role::ConfigNoReplace => options.config().noreplace(),
        Role::Doc => options.doc(),
        Role::License => options.license(),
    };
    match entry.content {
        Content::Dir => builder.with_dir_entry(options)?,
        Content::File(source) => builder.with_file(source, options)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rpm::{DependencyFlags, FileFlags, FileType};

    use super::*;

    /// Builds from the real workspace with a stand-in binary.
    fn inputs(dir: &Path, release: &str, source_date: Option<u32>) -> Inputs {
        let binary = dir.join("pixelgate");
        std::fs::write(&binary, b"\x7fELF stand-in").unwrap();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Inputs {
            sources: Sources::in_workspace(&workspace, &binary),
            release: release.parse().unwrap(),
            source_date,
        }
    }

    fn built(source_date: Option<u32>) -> rpm::Package {
        let dir = tempfile::tempdir().unwrap();
        build(&inputs(dir.path(), "1", source_date)).unwrap()
    }

    #[test]
    fn files_carry_their_modes_owners_and_flags() {
        let package = built(Some(1_700_000_000));
        let entries = package.metadata.get_file_entries().unwrap();
        let find = |path: &str| {
            entries
                .iter()
                .find(|e| e.path() == Path::new(path))
                .unwrap()
        };

        let config = find("/etc/pixelgate/pixelgate.toml");
        assert_eq!(
            (config.permissions(), config.user(), config.group()),
            (0o640, "root", "pixelgate")
        );
        assert!(
            config
                .flags()
                .contains(FileFlags::CONFIG | FileFlags::NOREPLACE)
        );

        let state = find("/var/lib/pixelgate");
        assert_eq!(state.file_type(), FileType::Dir);
        assert_eq!(
            (state.permissions(), state.user(), state.group()),
            (0o750, "pixelgate", "pixelgate")
        );

        let binary = find("/usr/bin/pixelgate");
        assert_eq!(
            (binary.permissions(), binary.user(), binary.group()),
            (0o755, "root", "root")
        );
        assert!(
            find("/usr/share/doc/pixelgate/LICENSE")
                .flags()
                .contains(FileFlags::LICENSE)
        );
        assert!(
            find("/usr/share/doc/pixelgate/README.md")
                .flags()
                .contains(FileFlags::DOC)
        );
        assert_eq!(
            entries.len(),
            manifest(&inputs(Path::new("/tmp"), "1", None).sources).len()
        );
    }

    #[test]
    fn scriptlets_are_the_shipped_files() {
        let package = built(None);
        let header = &package.metadata;
        let shipped =
            Scriptlets::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rpm/scriptlets"))
                .unwrap();
        assert_eq!(header.get_pre_install_script().unwrap().script, shipped.pre);
        assert_eq!(
            header.get_post_install_script().unwrap().script,
            shipped.post
        );
        assert_eq!(
            header.get_pre_uninstall_script().unwrap().script,
            shipped.preun
        );
        assert_eq!(
            header.get_post_uninstall_script().unwrap().script,
            shipped.postun
        );
    }

    #[test]
    fn dependencies_are_what_an_el_base_provides() {
        let package = built(None);
        let requires = package.metadata.get_requires().unwrap();
        let has = |name: &str, flag: DependencyFlags| {
            requires.iter().any(|d| d.name == name && d.flags == flag)
        };
        assert!(has("/bin/sh", DependencyFlags::ANY));
        assert!(has("libc.so.6(GLIBC_2.28)(64bit)", DependencyFlags::ANY));
        assert!(has("shadow-utils", DependencyFlags::SCRIPT_PRE));
        for phase in [
            DependencyFlags::SCRIPT_POST,
            DependencyFlags::SCRIPT_PREUN,
            DependencyFlags::SCRIPT_POSTUN,
        ] {
            assert!(has("systemd", phase));
        }
        let stub = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rpm/stub/el-base.provides"),
        )
        .unwrap();
        let provided = crate::stub::parse_provides(&stub);
        // rpmlib() is rpm itself; config(pixelgate) is the package's own.
        let external =
            |d: &&Dependency| !d.name.starts_with("rpmlib(") && !d.name.starts_with("config(");
        for dep in requires.iter().filter(external) {
            assert!(
                provided.contains(&dep.name),
                "the test stub does not provide {}",
                dep.name
            );
        }
        let recommends = crate::dependency_names(package.metadata.get_recommends());
        assert!(
            recommends.contains(&"redis".to_owned()) && recommends.contains(&"curl".to_owned())
        );
        let provides = crate::dependency_names(package.metadata.get_provides());
        for name in [
            "pixelgate",
            "config(pixelgate)",
            "user(pixelgate)",
            "group(pixelgate)",
        ] {
            assert!(
                provides.contains(&name.to_owned()),
                "{name} missing from {provides:?}"
            );
        }
    }

    #[test]
    fn header_fields_are_filled_in() {
        let package = built(None);
        let header = &package.metadata;
        assert_eq!(header.get_name().unwrap(), "pixelgate");
        assert_eq!(header.get_version().unwrap(), metadata::VERSION);
        assert_eq!(header.get_release().unwrap(), "1");
        assert_eq!(header.get_arch().unwrap(), "x86_64");
        assert_eq!(header.get_license().unwrap(), "Apache-2.0");
        assert!(header.get_url().unwrap().starts_with("https://"));
        assert!(!header.get_description().unwrap().is_empty());
        assert!(!header.get_changelog_entries().unwrap().is_empty());
        assert_eq!(
            header.get_payload_compressor().unwrap(),
            rpm::CompressionType::Gzip
        );
    }

    #[test]
    fn the_same_source_date_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let one = write(
            &inputs(dir.path(), "1", Some(1_700_000_000)),
            &dir.path().join("a"),
        )
        .unwrap();
        let two = write(
            &inputs(dir.path(), "1", Some(1_700_000_000)),
            &dir.path().join("b"),
        )
        .unwrap();
        assert_eq!(one.file_name().unwrap(), "pixelgate-0.1.0-1.x86_64.rpm");
        assert_eq!(std::fs::read(one).unwrap(), std::fs::read(two).unwrap());

        let package =
            rpm::Package::open(dir.path().join("a/pixelgate-0.1.0-1.x86_64.rpm")).unwrap();
        assert_eq!(package.metadata.get_build_time().unwrap(), 1_700_000_000);
        for entry in package.metadata.get_file_entries().unwrap() {
            assert!(
                u32::from(entry.modified_at()) <= 1_700_000_000,
                "{:?}",
                entry.path()
            );
        }
    }

    #[test]
    fn a_different_release_or_config_changes_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let mut two = inputs(dir.path(), "2", Some(1_700_000_000));
        let edited = dir.path().join("pixelgate.toml");
        std::fs::write(&edited, "# edited\n").unwrap();
        two.sources.config = edited;
        let package = build(&two).unwrap();
        assert_eq!(package.metadata.get_release().unwrap(), "2");
        let entries = package.metadata.get_file_entries().unwrap();
        let config = entries
            .iter()
            .find(|e| e.path() == Path::new("/etc/pixelgate/pixelgate.toml"))
            .unwrap();
        assert_eq!(config.size(), "# edited\n".len());
    }

    #[test]
    fn a_missing_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut broken = inputs(dir.path(), "1", None);
        broken.sources.binary = dir.path().join("no-such-binary");
        let error = build(&broken).unwrap_err();
        assert!(error.to_string().contains("no-such-binary"), "{error}");
    }
}
