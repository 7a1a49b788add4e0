//! TLS for SIP (`sips:`, port 5061): the server certificate and the rustls acceptor, and the
//! client side for connections of ours (a trunk over TLS).
//!
//! The certificate and key come from the config; when none is configured, a self-signed pair is
//! generated once into `<data_dir>/tls/` and reused on every start, so phones that pinned it keep
//! working across restarts. An ITSP's certificate is verified against the roots of a PEM file
//! (the system's bundle unless the trunk names one) and the name of its host; an ITSP that asks
//! for our certificate (mutual TLS) gets the same one the listeners show. Owns certificate
//! loading only; connections live in `transport`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Our certificate chain and key: the configured files or the generated self-signed pair. The
/// TLS listeners show it, and connections of ours to trunks present it when the ITSP asks for
/// a client certificate (mutual TLS, as Microsoft Teams Direct Routing and some carriers
/// require): one identity, as an SBC has.
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Identity, String> {
        let (cert_path, key_path) = match (cert, key) {
            (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
            (None, None) => self_signed(data_dir)?,
            _ => return Err("sip.tls_cert and sip.tls_key must be set together".into()),
        };
        let certs = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("reading certificate {}: {e}", cert_path.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", cert_path.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| format!("reading key {}: {e}", key_path.display()))?;
        Ok(Identity { certs, key })
    }
}

/// Builds the acceptor from configured files or the generated self-signed pair.
pub fn acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<TlsAcceptor, String> {
    let Identity { certs, key } = Identity::load(cert, key, data_dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Where Debian and its derivatives (and Alpine) keep the system's trusted roots.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client configuration for connections of ours whose peers must chain to a root in the
/// PEM file `roots`, presenting `identity` to a peer that asks for a client certificate.
pub fn connector(
    roots: &Path,
    identity: Option<&Identity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut store = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(roots)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading {}: {e}", roots.display()))?;
    // A bundle may hold a certificate rustls cannot use (an old format): the rest still count.
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("no usable certificate in {}", roots.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| format!("certificate and key do not match: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The generated pair's paths, creating it on first use.
fn self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let dir = data_dir.join("tls");
    let cert = dir.join("sip.crt");
    let key = dir.join("sip.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let host = hostname().unwrap_or_else(|| "switchboard.local".into());
    let pair = rcgen::generate_simple_self_signed(vec![host, "localhost".into()])
        .map_err(|e| format!("generating a certificate: {e}"))?;
    std::fs::write(&cert, pair.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    write_private(&key, pair.key_pair.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed SIP TLS certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
