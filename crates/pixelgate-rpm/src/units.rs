//! The systemd units the package ships (`deploy/*.service`), checked against systemd 239.
//!
//! EL8 runs systemd 239, which logs a warning for every directive it does not know. The test
//! machine's systemd is newer and cannot tell, so the directives each unit may use are listed
//! here, each with the systemd version that introduced it, and the tests hold the units to it.

/// Directives systemd 239 knows, by section, that the units may use; `(name, since version)`.
pub const SYSTEMD_239: &[(&str, &[(&str, u32)])] = &[
    (
        "Unit",
        &[
            ("Description", 1),
            ("Documentation", 187),
            ("Wants", 1),
            ("After", 1),
        ],
    ),
    (
        "Service",
        &[
            ("Type", 1),
            ("User", 1),
            ("Group", 1),
            ("ExecStartPre", 1),
            ("ExecStart", 1),
            ("ExecReload", 1),
            ("Restart", 1),
            ("RestartSec", 1),
            ("TimeoutStopSec", 188),
            ("LimitNOFILE", 1),
            ("UMask", 1),
            ("Environment", 1),
            ("WorkingDirectory", 1),
            ("StateDirectory", 235),
            ("StateDirectoryMode", 235),
            ("AmbientCapabilities", 229),
            ("CapabilityBoundingSet", 1),
            ("NoNewPrivileges", 187),
            ("ProtectSystem", 214),
            ("ProtectHome", 214),
            ("PrivateTmp", 1),
            ("PrivateDevices", 209),
            ("ProtectKernelTunables", 232),
            ("ProtectKernelModules", 232),
            ("ProtectControlGroups", 232),
            ("RestrictNamespaces", 233),
            ("RestrictRealtime", 231),
            ("RestrictAddressFamilies", 211),
            ("LockPersonality", 235),
            ("MemoryDenyWriteExecute", 231),
            ("RemoveIPC", 232),
            ("SystemCallArchitectures", 209),
            ("SystemCallFilter", 187),
            ("SystemCallErrorNumber", 209),
        ],
    ),
    ("Install", &[("WantedBy", 1)]),
];

/// The `(section, key, value)` assignments of a unit file, comments and blank lines skipped.
pub fn assignments(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

/// The directives of `unit` that systemd 239 would not know (or that this list does not vouch for).
pub fn unknown_to_systemd_239(unit: &str) -> Vec<String> {
    assignments(unit)
        .into_iter()
        .filter(|(section, key, _)| {
            !SYSTEMD_239.iter().any(|(s, keys)| {
                s == section && keys.iter().any(|(k, since)| k == key && *since <= 239)
            })
        })
        .map(|(section, key, _)| format!("[{section}] {key}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn unit(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy")
                .join(name),
        )
        .unwrap()
    }

    fn value(unit: &str, key: &str) -> Vec<String> {
        assignments(unit)
            .into_iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, v)| v)
            .collect()
    }

    #[test]
    fn both_units_use_only_what_systemd_239_knows() {
        for name in ["pixelgate.service", "pixelgate-drain.service"] {
            assert_eq!(
                unknown_to_systemd_239(&unit(name)),
                Vec::<String>::new(),
                "{name}"
            );
        }
    }

    #[test]
    fn newer_directives_are_caught() {
        let newer =
            "[Service]\nProtectClock=yes\nRestrictSUIDSGID=yes\nType=exec\n[Unit]\nUser=x\n";
        assert_eq!(
            unknown_to_systemd_239(newer),
            [
                "[Service] ProtectClock",
                "[Service] RestrictSUIDSGID",
                "[Unit] User"
            ]
        );
    }

    #[test]
    fn the_edge_unit_is_hardened_as_promised() {
        let edge = unit("pixelgate.service");
        for (key, want) in [
            ("ExecStartPre", "/usr/bin/pixelgate check-config"),
            ("ExecStart", "/usr/bin/pixelgate serve"),
            ("User", "pixelgate"),
            ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
            ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("StateDirectory", "pixelgate"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictNamespaces", "yes"),
            ("SystemCallFilter", "@system-service"),
            ("LimitNOFILE", "65536"),
            ("Restart", "on-failure"),
        ] {
            assert_eq!(value(&edge, key), [want], "{key}");
        }
    }

    #[test]
    fn the_drain_unit_runs_drain_with_no_capabilities() {
        let drain = unit("pixelgate-drain.service");
        assert_eq!(value(&drain, "ExecStart"), ["/usr/bin/pixelgate drain"]);
        assert_eq!(value(&drain, "CapabilityBoundingSet"), [""]);
        assert!(value(&drain, "AmbientCapabilities").is_empty());
        assert_eq!(value(&drain, "User"), ["pixelgate"]);
        assert_eq!(value(&drain, "ProtectSystem"), ["strict"]);
    }
}
