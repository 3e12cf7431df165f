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
    #[error("{}: holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
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
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            key: key.clone(),
            cert: cert.clone(),
            source,
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
