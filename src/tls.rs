//! TLS configuration for both ends, on `rustls` (with the `ring` provider:
//! it builds with a C compiler alone, where `aws-lc-rs` needs cmake).
//!
//! The broker serves TLS only, on its one listener, when given a
//! certificate chain and its key (`--tls-cert`, `--tls-key`); the record
//! layer itself runs inside [`connection`](crate::connection), driven by the
//! poll loop like the plaintext path. Clients verify the broker against the
//! CA certificates of `--ca`, or the system's bundle when none is given.
//! A certificate in the `--ca` file that the broker presents as its own is
//! accepted as it is (pinned), so a self-signed broker certificate — which
//! webpki refuses as "a CA used as an end entity" — works by giving the
//! certificate itself as `--ca`; the handshake still proves the broker holds
//! its key. PEM files are read with `rustls-pki-types`.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system keeps its CA bundle (Debian and its derivatives), used
/// by clients given `--tls` without `--ca`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a TLS configuration could not be built.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    Pem { path: PathBuf, problem: String },
    /// rustls refused the certificates or key (a key that does not match
    /// the certificate, an unsupported algorithm).
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, problem } => write!(f, "{}: {problem}", path.display()),
            TlsError::Config(e) => write!(f, "TLS configuration refused: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn pem_error(path: &Path, problem: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// ring's suites with AES-128-GCM first: as safe as AES-256-GCM for this
/// use and about a third cheaper per byte, which matters on a broker that
/// encrypts every delivery on one core. Both ends put it first (a rustls
/// server follows the client's order).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let fast = cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider.cipher_suites.retain(|s| s.suite() != fast.suite());
    provider.cipher_suites.insert(0, fast);
    Arc::new(provider)
}

/// The broker's configuration: the certificate chain (leaf first) and the
/// private key, both PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// A client's configuration: trusts the CA certificates in `ca` (PEM), or
/// the system bundle when `None`.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let path = ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let certs = certificates(path)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(pem_error(path, "no usable CA certificate in the file"));
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| pem_error(path, e))?;
    // The system bundle holds CAs only: nothing there to pin.
    let pinned = if ca.is_some() { certs } else { Vec::new() };
    let verifier = PinnedOrWebPki { pinned, webpki };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// webpki's verification, or else an exact match with a certificate of
/// the `--ca` file (see the module doc). Signatures are always checked.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
