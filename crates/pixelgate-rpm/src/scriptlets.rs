//! The four scriptlets, read from `rpm/scriptlets/{pre,post,preun,postun}.sh`.
//!
//! A pure-Rust builder expands no rpm macros, so `%systemd_post` and friends are written out as
//! plain POSIX shell there, for EL9 (`systemd-update-helper`) and EL8 (`systemctl`) alike. The
//! files are kept whole, comments included: `rpm -q --scripts` shows an operator the reasons.

use std::path::Path;

use crate::{Error, error::read_text};

/// The scriptlet bodies, run by `/bin/sh` with rpm's count of installed instances as `$1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scriptlets {
    pub pre: String,
    pub post: String,
    pub preun: String,
    pub postun: String,
}

impl Scriptlets {
    /// Reads the four files from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| read_text(&dir.join(format!("{name}.sh")));
        Ok(Self {
            pre: read("pre")?,
            post: read("post")?,
            preun: read("preun")?,
            postun: read("postun")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::metadata::UNITS;

    fn shipped() -> Scriptlets {
        Scriptlets::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rpm/scriptlets"))
            .unwrap()
    }

    #[test]
    fn pre_creates_the_group_and_system_user_only_when_missing() {
        let pre = shipped().pre;
        assert!(pre.contains("getent group pixelgate >/dev/null 2>&1 || groupadd -r pixelgate"));
        assert!(pre.contains("getent passwd pixelgate >/dev/null 2>&1 ||"));
        assert!(pre.contains("useradd -r -g pixelgate -d /var/lib/pixelgate -s /sbin/nologin"));
        assert!(
            pre.trim_end().ends_with("exit 0"),
            "%pre must never fail the transaction"
        );
    }

    #[test]
    fn the_user_is_never_deleted() {
        let all = shipped();
        for script in [&all.pre, &all.post, &all.preun, &all.postun] {
            assert!(!script.contains("userdel") && !script.contains("groupdel"));
        }
    }

    #[test]
    fn post_makes_a_group_readable_key_and_presets_on_first_install() {
        let post = shipped().post;
        assert!(post.contains("/usr/bin/pixelgate keygen"));
        assert!(post.contains("chown root:pixelgate") && post.contains("chmod 0640"));
        assert!(post.contains("if [ \"$1\" -eq 1 ]; then"));
        assert!(post.contains("systemd-update-helper install-system-units"));
        assert!(post.contains("systemctl --no-reload preset"));
    }

    #[test]
    fn preun_stops_only_on_erase_and_only_with_a_running_systemd() {
        let preun = shipped().preun;
        assert!(preun.contains("if [ \"$1\" -eq 0 ]; then"));
        assert!(preun.contains("systemd-update-helper remove-system-units"));
        assert!(preun.contains("elif [ -d /run/systemd/system ]; then"));
        assert!(preun.contains("disable --now"));
    }

    #[test]
    fn postun_restarts_on_upgrade() {
        let postun = shipped().postun;
        assert!(postun.contains("if [ \"$1\" -ge 1 ]; then"));
        assert!(postun.contains("systemd-update-helper mark-restart-system-units"));
        assert!(postun.contains("systemctl try-restart"));
    }

    #[test]
    fn every_systemd_call_names_both_units() {
        let all = shipped();
        let mut calls = 0;
        for script in [&all.post, &all.preun, &all.postun] {
            let joined = script.replace("\\\n", " ");
            let acting = |l: &&str| {
                let l = l.trim_start();
                !l.starts_with('#')
                    && !l.contains("-x /usr/lib/systemd/systemd-update-helper")
                    && !l.contains("daemon-reload")
                    && (l.contains("systemctl ") || l.contains("systemd-update-helper "))
            };
            for line in joined.lines().filter(acting) {
                calls += 1;
                for unit in UNITS {
                    assert!(line.contains(unit), "{unit} missing from: {line}");
                }
            }
        }
        assert_eq!(
            calls, 7,
            "two calls in %post, three in %preun, two in %postun"
        );
    }

    #[test]
    fn scriptlets_are_valid_posix_shell() {
        let all = shipped();
        for (name, script) in [
            ("pre", all.pre),
            ("post", all.post),
            ("preun", all.preun),
            ("postun", all.postun),
        ] {
            let out = Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "%{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
