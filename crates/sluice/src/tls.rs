//! TLS pieces shared by sluice's clients (rustls with ring): the system's trusted root
//! certificates, and the configuration of the HTTP client of enrich stages.
//!
//! The enrich client checks servers against the system's roots as reqwest's own
//! configuration would, except that the roots are read when a server first shows a
//! certificate rather than when the client is built. Reading them (the bundle file, then
//! each file of `/etc/ssl/certs`) takes milliseconds that an `http://` API never needs and
//! that would otherwise sit before a job's first request. `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name other roots, as for reqwest and OpenSSL.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Result};

/// The handshake-signature methods of a `ServerCertVerifier` whose `self.provider` (an
/// `Arc<CryptoProvider>`) checks the signatures with its algorithms, as rustls's own WebPKI
/// verifier does: the part every verifier of sluice's shares, whatever it checks of the
/// certificate itself.
macro_rules! signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use signatures_by_provider;

/// The system's trusted root certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set); `None`
/// when there is none the checks could use.
pub(crate) fn system_roots() -> Option<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    (added > 0).then_some(roots)
}

/// The client configuration for reqwest: TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN, and
/// every server certificate checked against the system's roots (chain and name).
pub(crate) fn client_config() -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SystemRoots {
            provider,
            checker: OnceLock::new(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls's WebPKI checker over the system's roots, built on first use.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<CryptoProvider>,
    checker: OnceLock<std::result::Result<Arc<WebPkiServerVerifier>, String>>,
}

impl SystemRoots {
    fn checker(&self) -> std::result::Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.checker
            .get_or_init(|| {
                let roots = system_roots().ok_or_else(|| {
                    "no trusted root certificate found on this system \
                     (SSL_CERT_FILE can name a PEM file of them)"
                        .to_string()
                })?;
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.checker()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    crate::tls::signatures_by_provider!();
}
