//! TLS to PostgreSQL, as libpq's settings ask for it: `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` in the URL's query (`postgres://...?sslmode=verify-full&sslrootcert=ca.pem`) or in
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`, through rustls (the TLS stack
//! the rest of sluice already uses, so no OpenSSL to install).
//!
//! The modes do what libpq's do:
//!
//! | `sslmode` | encrypted | server's certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | no |
//! | `require` | always | no; against `sslrootcert` when one is given (as libpq does with a root file) |
//! | `verify-ca` | always | chain to a trusted root; any host name |
//! | `verify-full` | always | chain to a trusted root and the host name |
//!
//! The trusted roots are `sslrootcert` (a PEM file, or `system` for the system's store);
//! without it, `~/.postgresql/root.crt` when it exists, else the system's store (libpq fails
//! there instead; a server with a certificate from a public authority then just works).
//! `sslcert` and `sslkey` (PEM files) give a client certificate for the server's `cert`
//! authentication.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The connection's TLS settings, as given (nothing loaded yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode` (`prefer` when not given).
    pub mode: Mode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub root_cert: Option<String>,
    /// `sslcert`: the client's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unchecked (`allow` and `prefer`).
    #[default]
    Prefer,
    /// TLS, the certificate unchecked unless a root is given.
    Require,
    /// TLS, the certificate's chain checked.
    VerifyCa,
    /// TLS, the certificate's chain and host name checked.
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode> {
        Ok(match text {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode '{other}' is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, and whether it must succeed.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

impl TlsOptions {
    /// Takes the TLS keys out of `url`'s query (tokio-postgres knows only `sslmode` and not
    /// its `verify-*` values), completed from libpq's variables (`env` gives one by name): the
    /// URL without them, and the options.
    pub fn take(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<(String, TlsOptions)> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut kept = Vec::new();
        let (mut mode, mut root_cert, mut cert, mut key) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|_| Error::Config(format!("the URL's {k} is not UTF-8")))
            };
            match k {
                "sslmode" => mode = Some(value()?),
                "sslrootcert" => root_cert = Some(value()?),
                "sslcert" => cert = Some(value()?),
                "sslkey" => key = Some(value()?),
                _ => kept.push(pair),
            }
        }
        let options = TlsOptions {
            mode: match mode.or_else(|| env("PGSSLMODE")) {
                Some(m) => Mode::parse(&m)?,
                None => Mode::Prefer,
            },
            root_cert: root_cert.or_else(|| env("PGSSLROOTCERT")),
            cert: cert.or_else(|| env("PGSSLCERT")).map(PathBuf::from),
            key: key.or_else(|| env("PGSSLKEY")).map(PathBuf::from),
        };
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, options))
    }

    /// The connector these options ask for: certificates loaded and checked now, so a
    /// missing or unreadable file is one line before any connection.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        // `require` with a root given checks the chain, as libpq does with a root file.
        let checked = match self.mode {
            Mode::Disable | Mode::Prefer => None,
            Mode::Require => self.root_cert.as_ref().map(|_| false),
            Mode::VerifyCa => Some(false),
            Mode::VerifyFull => Some(true),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match checked {
            None => Arc::new(Lenient {
                chain: None,
                provider,
            }),
            Some(names) => {
                let roots = self.roots()?;
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
                if names {
                    webpki
                } else {
                    Arc::new(Lenient {
                        chain: Some(webpki),
                        provider,
                    })
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.cert, &self.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Config(format!("sslcert/sslkey: {e}")))?
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "a client certificate needs both sslcert and sslkey".into(),
                ))
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    /// The roots a certificate must chain to.
    fn roots(&self) -> Result<RootCertStore> {
        let home_root = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql/root.crt"))
            .filter(|p| p.is_file());
        let file = match self.root_cert.as_deref() {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => home_root,
        };
        match file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(&path)? {
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!("sslrootcert {}: {e}", path.display()))
                    })?;
                }
                Ok(roots)
            }
            None => crate::tls::system_roots().ok_or_else(|| {
                Error::Config(
                    "TLS: the system has no trusted root certificates: give sslrootcert=FILE"
                        .into(),
                )
            }),
        }
    }
}

/// The certificates of the PEM file `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no certificate in the file (PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    match e {
        rustls::pki_types::pem::Error::Io(e) => Error::io(path.display().to_string(), e),
        other => Error::Config(format!("{}: {other}", path.display())),
    }
}

/// The server check of the modes rustls' own verifier does not cover: no check of the
/// certificate (`prefer`, `require` without a root: encrypted, not authenticated), or its
/// chain without its host name (`verify-ca`). The handshake's signatures are checked either
/// way.
#[derive(Debug)]
struct Lenient {
    /// The chain's check (`None`: any certificate).
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    crate::tls::signatures_by_provider!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_tls_keys_leave_the_url_and_the_rest_stays() {
        let (url, o) = TlsOptions::take(
            "postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fa%20b.pem&connect_timeout=3",
            no_env,
        )
        .expect("options");
        assert_eq!(
            url,
            "postgres://u@h/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(o.mode, Mode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/tmp/a b.pem"));
        let (url, o) =
            TlsOptions::take("postgres://u@h/db?sslmode=require", no_env).expect("options");
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(o.mode, Mode::Require);
    }

    #[test]
    fn the_url_wins_over_the_environment() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLCERT" => Some("/c.pem".to_string()),
            _ => None,
        };
        let (_, o) = TlsOptions::take("postgres://u@h/db", env).expect("options");
        assert_eq!(o.mode, Mode::VerifyCa);
        assert_eq!(o.cert.as_deref(), Some(Path::new("/c.pem")));
        let (_, o) = TlsOptions::take("postgres://u@h/db?sslmode=disable", env).expect("options");
        assert_eq!(o.mode, Mode::Disable);
        let err =
            TlsOptions::take("postgres://u@h/db?sslmode=verify", no_env).expect_err("refused");
        assert!(err.to_string().contains("'verify' is not one of"), "{err}");
    }

    #[test]
    fn a_missing_certificate_file_is_one_line() {
        let o = TlsOptions {
            mode: Mode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = o.connector().err().expect("refused").to_string();
        assert!(err.starts_with("/nonexistent/ca.pem: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
