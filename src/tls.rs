//! TLS for serving https and wss directly (`--tls-cert`, `--tls-key`): loads the PEM files into
//! a rustls configuration (ring crypto, TLS 1.2 and 1.3, ALPN http/1.1) and keeps it swappable,
//! so `SIGHUP` loads a renewed certificate without dropping connections (new handshakes use the
//! new one). A reload that fails keeps the old certificate and logs why.
//!
//! `server` calls `Tls::acceptor` for each connection; nothing else touches TLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The certificate and key files, and the configuration loaded from them (or, for
/// `--tls-self-signed`, a certificate made in memory: no files, nothing to reload).
pub struct Tls {
    files: Option<(PathBuf, PathBuf)>,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads and checks the files; the error is one sentence naming the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let config = build(cert, key)?;
        Ok(Tls {
            files: Some((cert.to_path_buf(), key.to_path_buf())),
            current: RwLock::new(config),
        })
    }

    /// A configuration from a certificate chain (leaf first) and its key, held in memory.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Tls, String> {
        let config = server_config(chain, key).map_err(|e| format!("TLS setup failed: {e}"))?;
        Ok(Tls {
            files: None,
            current: RwLock::new(config),
        })
    }

    /// An acceptor for one new connection, with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Loads the files again; on success new connections use them.
    pub fn reload(&self) -> Result<(), String> {
        let Some((cert, key)) = &self.files else {
            return Ok(());
        };
        let config = build(cert, key)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

fn build(cert: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the TLS certificate file {} holds no PEM certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "cannot read the TLS private key {} (PEM, PKCS#8, PKCS#1 or SEC1): {e}",
            key_file.display()
        )
    })?;
    server_config(certs, key).map_err(|e| {
        format!(
            "the TLS key {} does not fit the certificate {}: {e}",
            key_file.display(),
            cert.display()
        )
    })
}

/// rustls with ring, TLS 1.2 and 1.3, ALPN http/1.1.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reloads `tls` on every SIGHUP, for as long as the server runs. Without TLS, SIGHUP is only
/// logged (so closing the terminal chatd was started from, or `systemctl reload`, never kills
/// it).
pub async fn reload_on_sighup(tls: Option<Arc<Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch SIGHUP, TLS reload is off: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("received SIGHUP: nothing to reload (no --tls-cert)");
                continue;
            };
            let Some((cert, _)) = &tls.files else {
                tracing::info!("received SIGHUP: nothing to reload (self-signed certificate)");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(e) => tracing::error!("TLS reload failed, keeping the old certificate: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}
