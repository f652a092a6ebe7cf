//! TLS as real environments need it: trust in the machine's store (where
//! companies put their internal CA) beside the web roots and `--ca-cert`
//! files, client certificates for meshes that ask for them (mTLS), and the
//! server side for the recording proxy (`--tls-cert`, `--tls-key`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What a client trusts and presents, loaded and checked once.
#[derive(Clone, Default)]
pub struct Trust {
    /// Certificates trusted besides the machine's store and the web roots.
    extra_roots: Vec<CertificateDer<'static>>,
    /// The client certificate chain and its key, for mutual TLS.
    identity: Option<Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>>,
    /// Where they came from, for logs and errors.
    described: Vec<String>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("from", &self.described)
            .finish()
    }
}

/// The files a [`Trust`] is loaded from.
#[derive(Debug, Clone, Default)]
pub struct TrustFiles {
    /// PEM files of CA certificates to trust (`--ca-cert`, repeatable).
    pub ca_certs: Vec<PathBuf>,
    /// PEM file of the client certificate chain (`--client-cert`).
    pub client_cert: Option<PathBuf>,
    /// PEM file of its private key (`--client-key`).
    pub client_key: Option<PathBuf>,
}

impl Trust {
    /// Reads and checks the files; an error names the file and what is wrong.
    pub fn load(files: &TrustFiles) -> anyhow::Result<Trust> {
        let mut trust = Trust::default();
        for path in &files.ca_certs {
            let certs = certificates(path)?;
            trust
                .described
                .push(format!("--ca-cert {}", path.display()));
            trust.extra_roots.extend(certs);
        }
        match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| anyhow::anyhow!("{}: no private key: {e}", key.display()))?;
                trust
                    .described
                    .push(format!("--client-cert {}", cert.display()));
                trust.identity = Some(Arc::new((chain, key)));
            }
            (None, None) => {}
            _ => anyhow::bail!("--client-cert and --client-key go together"),
        }
        Ok(trust)
    }

    /// The roots a client trusts: the web roots, the machine's store and
    /// the extra certificates.
    fn roots(&self) -> rustls::RootCertStore {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(native_roots().iter().cloned());
        roots.add_parsable_certificates(self.extra_roots.iter().cloned());
        roots
    }

    /// A client configuration with these roots and identity, offering
    /// HTTP/2 and HTTP/1.1 by ALPN (set by the connector).
    pub(super) fn client_config(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> rustls::ClientConfig {
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(self.roots());
        match &self.identity {
            Some(identity) => {
                let (chain, key) = &**identity;
                // The key was parsed at load time; rustls checks it matches
                // its kind here, so a failure is a programming error only.
                builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .unwrap_or_else(|e| panic!("client certificate rejected after loading: {e}"))
            }
            None => builder.with_no_client_auth(),
        }
    }
}

/// The machine's trust store, read once per process (it is thousands of
/// certificates); what cannot be read is logged, not fatal: the web roots
/// and `--ca-cert` still apply.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!("machine trust store: {error}");
        }
        found.certs
    })
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate file: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// A TLS server configuration from a certificate chain and key (PEM),
/// offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{}: no private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("{}: the key does not fit the certificate", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
