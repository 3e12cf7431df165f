//! HTTPS on the public listener: certificates chosen by SNI, ALPN `h2` and `http/1.1`.
//!
//! Each configured certificate answers its `names` (customers' own tracking domains, `*.`
//! wildcards allowed); the first also answers clients that send no SNI name. The built
//! `rustls::ServerConfig` sits behind an `ArcSwap`, so `SIGHUP` swaps in reloaded certificates
//! for new connections while open ones keep theirs.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::config::TlsConfig;

/// Why certificates could not be loaded. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a certificate rustls can read", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: not a private key rustls can sign with", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} does not match {}", key.display(), cert.display())]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server's TLS settings, or `None` when no certificate is configured.
pub fn load(config: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let Some(first) = config.certificates.first() else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut by_name = HashMap::new();
    let mut default = None;
    for cert in &config.certificates {
        let key = Arc::new(certified_key(&cert.cert, &cert.key, &provider)?);
        for name in &cert.names {
            by_name.insert(name.to_ascii_lowercase(), key.clone());
        }
        if std::ptr::eq(cert, first) {
            default = Some(key);
        }
    }
    let resolver = SniResolver { by_name, default };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

fn certified_key(
    cert: &PathBuf,
    key: &PathBuf,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    for path in [cert, key] {
        // Opening a FIFO or a device would wait for a writer that may never come.
        let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(TlsError::NotAFile { path: path.clone() });
        }
    }
    let pem = |path: &PathBuf| {
        let path = path.clone();
        move |source| TlsError::Pem { path, source }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<_, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::Key {
            path: key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|source| match source {
        // The leaf's public key could not even be read: the certificate is at fault.
        rustls::Error::InvalidCertificate(_) => TlsError::Certificate {
            path: cert.clone(),
            source,
        },
        source => TlsError::Mismatch {
            key: key.clone(),
            cert: cert.clone(),
            source,
        },
    })?;
    Ok(certified)
}

/// Picks a certificate by SNI name: exact, then `*.` wildcard, then the default.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        self.by_name
            .get(&name)
            .or_else(|| wildcard.and_then(|w| self.by_name.get(&w)))
            .or(self.default.as_ref())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use pixelgate_core::config::chain;

    use super::*;
    use crate::config::CertificateConfig;

    fn load_pair(dir: &std::path::Path, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let config = TlsConfig {
            certificates: vec![CertificateConfig {
                names: vec!["t.example.com".into()],
                cert,
                key,
            }],
        };
        load(&config).map(drop)
    }

    /// A certificate that is not one is blamed on its own file, not on the key beside it; a key
    /// of another certificate is a mismatch naming both.
    #[test]
    fn each_bad_file_is_named_for_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["t.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        load_pair(dir.path(), &cert.pem(), &key.serialize_pem()).unwrap();

        let garbage = base64::engine::general_purpose::STANDARD.encode([0x30, 0x03, 1, 2, 3]);
        let not_a_cert =
            format!("-----BEGIN CERTIFICATE-----\n{garbage}\n-----END CERTIFICATE-----\n");
        let err = load_pair(dir.path(), &not_a_cert, &key.serialize_pem()).unwrap_err();
        let said = chain(&err);
        assert!(matches!(err, TlsError::Certificate { .. }), "{said}");
        assert!(
            said.starts_with(&format!(
                "{}: not a certificate",
                dir.path().join("c.pem").display()
            )),
            "{said}"
        );
        assert!(!said.contains("k.pem"), "{said}");

        let other = rcgen::KeyPair::generate().unwrap();
        let err = load_pair(dir.path(), &cert.pem(), &other.serialize_pem()).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{}", chain(&err));
        assert!(chain(&err).contains("does not match"), "{}", chain(&err));
    }
}
