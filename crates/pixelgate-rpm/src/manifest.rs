//! Every path the package installs, with its source, mode, owner and role (`%config`, `%doc`).
//!
//! This is the `%files` section of a spec file, as data. Directories the package owns are listed
//! too, so that `/var/lib/pixelgate` and the key directory get their owner and mode from rpm
//! itself. Paths owned by the base system (`/usr/bin`, `/usr/lib/systemd/system`) are not.

use std::path::{Path, PathBuf};

/// How rpm treats a file beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Plain,
    /// `%config(noreplace)`: an edited copy survives upgrades (`.rpmnew`) and erasure (`.rpmsave`).
    ConfigNoReplace,
    Doc,
    License,
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File(PathBuf),
    Dir,
}

/// One path in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: &'static str,
    pub content: Content,
    pub mode: u16,
    pub user: &'static str,
    pub group: &'static str,
    pub role: Role,
}

/// Where the inputs live: the workspace (for `rpm/` and `deploy/`), the release binary, and the
/// shipped configuration (the workspace's `deploy/pixelgate.toml` unless a test swaps it).
#[derive(Debug, Clone)]
pub struct Sources {
    pub workspace: PathBuf,
    pub binary: PathBuf,
    pub config: PathBuf,
}

impl Sources {
    /// The usual inputs: everything from the workspace at `workspace`.
    pub fn in_workspace(workspace: &Path, binary: &Path) -> Self {
        Self {
            workspace: workspace.to_owned(),
            binary: binary.to_owned(),
            config: workspace.join("deploy/pixelgate.toml"),
        }
    }

    /// The directory of the plain-shell scriptlets.
    pub fn scriptlets(&self) -> PathBuf {
        self.workspace.join("rpm/scriptlets")
    }

    /// The changelog, in spec-file syntax.
    pub fn changelog(&self) -> PathBuf {
        self.workspace.join("rpm/changelog")
    }
}

/// The package's contents, parents before children.
pub fn manifest(src: &Sources) -> Vec<Entry> {
    let ws = |rel: &str| Content::File(src.workspace.join(rel));
    let root = |path, content, mode| Entry {
        path,
        content,
        mode,
        user: "root",
        group: "root",
        role: Role::Plain,
    };
    vec![
        root(
            "/usr/bin/pixelgate",
            Content::File(src.binary.clone()),
            0o755,
        ),
        root(
            "/usr/lib/systemd/system/pixelgate.service",
            ws("deploy/pixelgate.service"),
            0o644,
        ),
        root(
            "/usr/lib/systemd/system/pixelgate-drain.service",
            ws("deploy/pixelgate-drain.service"),
            0o644,
        ),
        root(
            "/usr/lib/sysusers.d/pixelgate.conf",
            ws("rpm/sysusers.conf"),
            0o644,
        ),
        root("/etc/pixelgate", Content::Dir, 0o755),
        // Secrets may appear in it (a Redis password): only root and the service read it.
        Entry {
            group: "pixelgate",
            role: Role::ConfigNoReplace,
            ..root(
                "/etc/pixelgate/pixelgate.toml",
                Content::File(src.config.clone()),
                0o640,
            )
        },
        // %post writes 1.key here; the package owns the directory, never the keys, so an erase
        // keeps them (mail already sent must still open after a reinstall).
        Entry {
            group: "pixelgate",
            ..root("/etc/pixelgate/keys", Content::Dir, 0o750)
        },
        Entry {
            user: "pixelgate",
            group: "pixelgate",
            ..root("/var/lib/pixelgate", Content::Dir, 0o750)
        },
        root("/usr/share/pixelgate", Content::Dir, 0o755),
        root("/usr/share/pixelgate/tests", Content::Dir, 0o755),
        // The smoke suite (run it) and the runner it sources when the system has no shunit2.
        root(
            "/usr/share/pixelgate/tests/smoke_test.sh",
            ws("rpm/tests/smoke_test.sh"),
            0o755,
        ),
        root(
            "/usr/share/pixelgate/tests/runner.sh",
            ws("rpm/tests/runner.sh"),
            0o644,
        ),
        root("/usr/share/doc/pixelgate", Content::Dir, 0o755),
        Entry {
            role: Role::Doc,
            ..root("/usr/share/doc/pixelgate/README.md", ws("README.md"), 0o644)
        },
        Entry {
            role: Role::Doc,
            ..root(
                "/usr/share/doc/pixelgate/packaging.md",
                ws("docs/packaging.md"),
                0o644,
            )
        },
        Entry {
            role: Role::License,
            ..root("/usr/share/doc/pixelgate/LICENSE", ws("rpm/LICENSE"), 0o644)
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        manifest(&Sources::in_workspace(
            Path::new("/ws"),
            Path::new("/bin.out"),
        ))
    }

    fn find(path: &str) -> Entry {
        entries().into_iter().find(|e| e.path == path).unwrap()
    }

    #[test]
    fn holds_exactly_the_contracted_paths() {
        let paths: Vec<_> = entries().iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "/usr/bin/pixelgate",
                "/usr/lib/systemd/system/pixelgate.service",
                "/usr/lib/systemd/system/pixelgate-drain.service",
                "/usr/lib/sysusers.d/pixelgate.conf",
                "/etc/pixelgate",
                "/etc/pixelgate/pixelgate.toml",
                "/etc/pixelgate/keys",
                "/var/lib/pixelgate",
                "/usr/share/pixelgate",
                "/usr/share/pixelgate/tests",
                "/usr/share/pixelgate/tests/smoke_test.sh",
                "/usr/share/pixelgate/tests/runner.sh",
                "/usr/share/doc/pixelgate",
                "/usr/share/doc/pixelgate/README.md",
                "/usr/share/doc/pixelgate/packaging.md",
                "/usr/share/doc/pixelgate/LICENSE",
            ]
        );
    }

    #[test]
    fn config_is_noreplace_and_readable_only_by_the_service() {
        let config = find("/etc/pixelgate/pixelgate.toml");
        assert_eq!(config.role, Role::ConfigNoReplace);
        assert_eq!(
            (config.mode, config.user, config.group),
            (0o640, "root", "pixelgate")
        );
        assert_eq!(
            config.content,
            Content::File("/ws/deploy/pixelgate.toml".into())
        );
        let only_config: Vec<_> = entries()
            .into_iter()
            .filter(|e| e.role == Role::ConfigNoReplace)
            .collect();
        assert_eq!(only_config.len(), 1);
    }

    #[test]
    fn state_and_key_directories_are_private() {
        let state = find("/var/lib/pixelgate");
        assert_eq!(
            (state.content, state.mode, state.user, state.group),
            (Content::Dir, 0o750, "pixelgate", "pixelgate")
        );
        let keys = find("/etc/pixelgate/keys");
        assert_eq!(
            (keys.content, keys.mode, keys.user, keys.group),
            (Content::Dir, 0o750, "root", "pixelgate")
        );
    }

    #[test]
    fn nothing_is_world_writable_or_setuid() {
        for e in entries() {
            assert_eq!(e.mode & 0o7002, 0, "{} has mode {:o}", e.path, e.mode);
        }
    }

    #[test]
    fn the_binary_comes_from_the_given_path() {
        let bin = find("/usr/bin/pixelgate");
        assert_eq!(
            (bin.content, bin.mode),
            (Content::File("/bin.out".into()), 0o755)
        );
    }

    #[test]
    fn every_workspace_source_exists() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let src = Sources::in_workspace(&workspace, Path::new("/bin.out"));
        for e in manifest(&src) {
            if let Content::File(path) = &e.content
                && e.path != "/usr/bin/pixelgate"
            {
                assert!(
                    path.is_file(),
                    "{} is missing for {}",
                    path.display(),
                    e.path
                );
            }
        }
        assert!(src.scriptlets().is_dir());
        assert!(src.changelog().is_file());
    }
}
