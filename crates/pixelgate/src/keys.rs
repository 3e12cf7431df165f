//! Loading the signing keys: a directory of `ID.key` files, or `PIXELGATE_SIGNING_KEY`.
//!
//! Each key file holds one secret (what `pixelgate keygen` prints) and is named after its id, so
//! rotating is `pixelgate keygen > /etc/pixelgate/keys/2.key` and a reload. A key file that every
//! user may read is refused: it would let any local user forge links.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use pixelgate_core::{KeyId, Keyring, Secret, key::KeyError, token::KeyringError};

use crate::config::SigningConfig;

/// Why the keys could not be loaded. Each message names the file or variable.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error(
        "no signing key: set PIXELGATE_SIGNING_KEY or signing.key_dir \
         (make one with `pixelgate keygen > /etc/pixelgate/keys/1.key`)"
    )]
    NoKey,
    #[error("PIXELGATE_SIGNING_KEY")]
    Env(#[source] KeyError),
    #[error("signing.key_dir {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing.key_dir {}: holds no ID.key file", dir.display())]
    EmptyDir { dir: PathBuf },
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("{}: every user can read it; run chmod o-rwx on it", path.display())]
    WorldReadable { path: PathBuf },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// The keyring the configuration names. `PIXELGATE_SIGNING_KEY` wins over `signing.key_dir`.
pub fn load_keyring(signing: &SigningConfig) -> Result<Keyring, KeyLoadError> {
    if let Some(env) = &signing.env_key {
        let (id, secret) = match env.0.split_once(':') {
            Some((id, secret)) => (id.parse().map_err(KeyLoadError::Env)?, secret),
            None => (KeyId(0), env.0.as_str()),
        };
        let secret = secret.parse().map_err(KeyLoadError::Env)?;
        return Ok(Keyring::new([(id, secret)])?);
    }
    let dir = signing.key_dir.as_deref().ok_or(KeyLoadError::NoKey)?;
    let keys = read_key_dir(dir)?;
    if keys.is_empty() {
        return Err(KeyLoadError::EmptyDir { dir: dir.into() });
    }
    Ok(Keyring::new(keys)?)
}

/// Reads every `*.key` file of `dir`; other files (an editor's backup, `1.key.rpmsave`) are left
/// alone, but a `.key` file with a bad name is an error rather than a silently unused key.
fn read_key_dir(dir: &Path) -> Result<Vec<(KeyId, Secret)>, KeyLoadError> {
    let read_dir = |source| KeyLoadError::ReadDir {
        dir: dir.into(),
        source,
    };
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir)? {
        let path = entry.map_err(read_dir)?.path();
        if path.extension().is_none_or(|ext| ext != "key") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let id = stem.parse().map_err(|source| KeyLoadError::BadKey {
            path: path.clone(),
            source,
        })?;
        let read = |source| KeyLoadError::Read {
            path: path.clone(),
            source,
        };
        let meta = fs::metadata(&path).map_err(read)?;
        // Opening a FIFO or a device would wait for a writer that may never come.
        if !meta.is_file() {
            return Err(KeyLoadError::NotAFile { path });
        }
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(KeyLoadError::WorldReadable { path });
        }
        let text = fs::read_to_string(&path).map_err(read)?;
        let secret = text.parse().map_err(|source| KeyLoadError::BadKey {
            path: path.clone(),
            source,
        })?;
        keys.push((id, secret));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use pixelgate_core::config::chain;

    use super::*;
    use crate::config::EnvSecret;

    fn write_key(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    fn from_dir(dir: &Path) -> Result<Keyring, KeyLoadError> {
        load_keyring(&SigningConfig {
            key_dir: Some(dir.into()),
            ..SigningConfig::default()
        })
    }

    #[test]
    fn a_key_dir_gives_every_key_and_the_highest_seals() {
        let dir = tempfile::tempdir().unwrap();
        for id in [1, 7, 3] {
            write_key(
                dir.path(),
                &format!("{id}.key"),
                &format!("{}\n", Secret::generate().unwrap()),
                0o640,
            );
        }
        write_key(dir.path(), "README", "not a key", 0o644);
        write_key(dir.path(), "2.key.rpmsave", "old", 0o644);
        let ring = from_dir(dir.path()).unwrap();
        assert_eq!(ring.sealing_key_id(), KeyId(7));
        assert_eq!(ring.key_ids().map(|k| k.0).collect::<Vec<_>>(), [1, 3, 7]);
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = from_dir(dir.path()).unwrap_err();
        let err = chain(&err);
        assert!(err.ends_with("holds no ID.key file"), "{err}");

        let secret = Secret::generate().unwrap().to_string();
        let open = write_key(dir.path(), "1.key", &secret, 0o644);
        let err = from_dir(dir.path()).unwrap_err();
        let err = chain(&err);
        assert_eq!(
            err,
            format!(
                "{}: every user can read it; run chmod o-rwx on it",
                open.display()
            )
        );
        fs::set_permissions(&open, Permissions::from_mode(0o600)).unwrap();
        assert!(from_dir(dir.path()).is_ok());

        let bad = write_key(dir.path(), "2.key", "not base64!", 0o600);
        let err = from_dir(dir.path()).unwrap_err();
        let err = chain(&err);
        assert!(
            err.starts_with(&format!("{}: a signing secret is 32 bytes", bad.display())),
            "{err}"
        );
        fs::remove_file(bad).unwrap();

        let named = write_key(dir.path(), "new.key", &secret, 0o600);
        let err = from_dir(dir.path()).unwrap_err();
        let err = chain(&err);
        assert!(
            err.starts_with(&format!("{}: a key id is a whole number", named.display())),
            "{err}"
        );

        let err = chain(&from_dir(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn the_environment_key_replaces_the_files() {
        let secret = Secret::generate().unwrap();
        let env = |v: String| SigningConfig {
            key_dir: Some("/nonexistent".into()),
            env_key: Some(EnvSecret(v)),
            ..SigningConfig::default()
        };
        assert_eq!(
            load_keyring(&env(secret.to_string()))
                .unwrap()
                .sealing_key_id(),
            KeyId(0)
        );
        assert_eq!(
            load_keyring(&env(format!("9:{secret}")))
                .unwrap()
                .sealing_key_id(),
            KeyId(9)
        );
        let err = load_keyring(&env("x:y".into())).unwrap_err();
        let err = chain(&err);
        assert!(err.starts_with("PIXELGATE_SIGNING_KEY: a key id"), "{err}");
        let err = load_keyring(&env("short".into())).unwrap_err();
        let err = chain(&err);
        assert!(
            err.starts_with("PIXELGATE_SIGNING_KEY: a signing secret"),
            "{err}"
        );
        let none = chain(&load_keyring(&SigningConfig::default()).unwrap_err());
        assert!(
            none.starts_with("no signing key: set PIXELGATE_SIGNING_KEY"),
            "{none}"
        );
    }
}
