//! TLS for the client and peer ports, with rustls (ring provider): the certificate files a
//! port is configured with (etcd's `TLSInfo`), the server configurations built from them, the
//! TLS acceptor that turns a listener into a stream of finished handshakes, the client side
//! used to dial `https://` peers and members, and the common name of a verified client
//! certificate.
//!
//! Owns reading and checking PEM files and running handshakes; it must not know what is
//! served over the connections (gRPC, HTTP, the peer protocol) and depends on no other module
//! of the crate but `limits`.
//!
//! etcd-compat: the checks follow etcd's `pkg/transport` (`TLSInfo`, `NewListener`); where
//! etcd falls back to the system's root certificates (client or peer certificate
//! authentication without a trusted CA file, https peers without a peer CA), mnemo refuses
//! the configuration instead, since it never trusts the system store.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::limits::{TLS_ACCEPTED_QUEUE, TLS_HANDSHAKE_TIMEOUT, TLS_HANDSHAKES_PENDING_MAX};

/// ALPN protocols of the client port: gRPC needs HTTP/2, the health, version and gateway
/// endpoints are also served over HTTP/1.1 on the same port.
pub const ALPN_CLIENT_PORT: &[&[u8]] = &[b"h2", b"http/1.1"];

/// ALPN protocols of the peer port: the peer protocol is gRPC only.
pub const ALPN_PEER_PORT: &[&[u8]] = &[b"h2"];

/// Pause after a failed `accept` (for example out of file descriptors) before the next one,
/// so a persistent failure does not spin a core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The TLS files of one port, named as etcd's flags (`--cert-file` ... for the client port,
/// `--peer-cert-file` ... for the peer port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The port's certificate chain (PEM), presented to clients and, for the peer port, to
    /// the peers this member dials.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates (and, for the peer port, the peers'
    /// server certificates) must chain to. As in etcd, giving it makes the port refuse, at the
    /// handshake, a client without a certificate signed by it.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates (etcd also uses their common name as the user then); needs
    /// `trusted_ca_file`.
    pub client_cert_auth: bool,
}

impl TlsInfo {
    /// Whether neither a certificate nor a key was given.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// Why TLS files could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("open {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A file holds no certificate, or a malformed one.
    #[error("{path}: no valid PEM certificate: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file holds no private key, or a malformed one.
    #[error("{path}: no valid PEM private key: {reason}")]
    PrivateKey {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key were not both given.
    #[error("KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")]
    CertKeyPair {
        /// The key file given, or empty.
        key: String,
        /// The certificate file given, or empty.
        cert: String,
    },
    /// Client certificate authentication without a CA to verify against.
    #[error("client certificate authentication needs a trusted CA file")]
    NoTrustedCa,
    /// rustls refused the combination (for example a key that does not match the
    /// certificate, or a CA certificate it cannot use as a trust anchor).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&read_file(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(err.to_string()))?;
    if certs.is_empty() {
        return Err(bad("the file holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read_file(path)?).map_err(|err| TlsError::PrivateKey {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|err| TlsError::Config(format!("{}: {err}", path.display())))?;
    }
    Ok(roots)
}

/// The certificate and key files of `info`, both present.
fn cert_and_key(info: &TlsInfo) -> Result<(&Path, &Path), TlsError> {
    match (info.cert_file.as_deref(), info.key_file.as_deref()) {
        (Some(cert), Some(key)) => Ok((cert, key)),
        (cert, key) => Err(TlsError::CertKeyPair {
            key: key
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            cert: cert
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
        }),
    }
}

/// The server side of a port: its certificate, its client verification (required and
/// checked against the trusted CA when one is given, as etcd does; not asked for otherwise)
/// and the ALPN protocols it offers.
///
/// # Errors
/// [`TlsError`] when a file is missing or malformed, or the files do not fit together.
pub fn server_config(
    info: &TlsInfo,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_file, key_file) = cert_and_key(info)?;
    let chain = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |err: rustls::Error| TlsError::Config(err.to_string());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    // etcd-compat: as etcd's `TLSInfo.ServerConfig`, a trusted CA file alone already makes
    // the port require and verify client certificates.
    let builder = if info.client_cert_auth || info.trusted_ca_file.is_some() {
        let ca_file = info
            .trusted_ca_file
            .as_deref()
            .ok_or(TlsError::NoTrustedCa)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider)
                .build()
                .map_err(|err| TlsError::Config(err.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(config_error)?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a client needs to dial an `https://` member or peer: the CA its server certificate
/// must chain to, and optionally a certificate of its own to present.
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    /// Certificate chain and private key (PEM); never printed.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Shows what is configured, never the key.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Reads (and checks) the CA file and, when given, the client certificate and key.
    ///
    /// # Errors
    /// [`TlsError`] when a file is missing or malformed.
    pub fn from_files(
        trusted_ca_file: &Path,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, TlsError> {
        roots(trusted_ca_file)?;
        let identity = match cert_and_key {
            None => None,
            Some((cert_file, key_file)) => {
                read_certs(cert_file)?;
                read_key(key_file)?;
                Some((read_file(cert_file)?, read_file(key_file)?))
            }
        };
        Ok(ClientTls {
            ca_pem: read_file(trusted_ca_file)?,
            identity,
        })
    }

    /// The dialing side of a port configured with `info` (etcd's peers present their peer
    /// certificate as their client certificate): `None` without a trusted CA file.
    ///
    /// # Errors
    /// [`TlsError`] when a file is missing or malformed, or only one of certificate and key
    /// is given.
    pub fn for_peers(info: &TlsInfo) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca_file) = info.trusted_ca_file.as_deref() else {
            return Ok(None);
        };
        let identity = if info.is_empty() {
            None
        } else {
            Some(cert_and_key(info)?)
        };
        ClientTls::from_files(ca_file, identity).map(Some)
    }

    /// The configuration of a tonic channel to an `https://` URL.
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// Whether `url` (a URL string) is dialed with TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Accepts connections on `listener` and runs their TLS handshakes, yielding each connection
/// whose handshake succeeded. `port` names the port in logs ("client", "peer").
///
/// Handshakes run in their own tasks, at most [`TLS_HANDSHAKES_PENDING_MAX`] at once and
/// each for at most [`TLS_HANDSHAKE_TIMEOUT`], so a client that stalls never holds up the
/// others. A refused handshake (no client certificate, one from another CA, a client that
/// does not trust this server) is logged with the remote address, as etcd logs "rejected
/// connection". The listener is closed once the returned stream is dropped.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    port: &'static str,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (ready, accepted) = mpsc::channel(TLS_ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        ready,
        port,
    ));
    ReceiverStream::new(accepted)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    port: &'static str,
) {
    let slots = Arc::new(Semaphore::new(TLS_HANDSHAKES_PENDING_MAX));
    loop {
        let permit = tokio::select! {
            () = ready.closed() => return,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; if it were, no handshake could be admitted.
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, port, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            // Held until the connection is handed over or dropped.
            let _slot = permit;
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot disable Nagle on a connection");
            }
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(connection)) => {
                    // Fails only when the server stopped; the connection is dropped then.
                    let _ = ready.send(Ok(connection)).await;
                }
                Ok(Err(err)) => log_rejection(remote, port, &err.to_string()),
                Err(_) => log_rejection(
                    remote,
                    port,
                    &format!("handshake not finished within {TLS_HANDSHAKE_TIMEOUT:?}"),
                ),
            }
        });
    }
}

fn log_rejection(remote: SocketAddr, port: &'static str, reason: &str) {
    tracing::warn!(%remote, port, reason, "rejected connection: TLS handshake failed");
}

/// DER tag of a SEQUENCE.
const DER_SEQUENCE: u8 = 0x30;
/// DER tag of a SET.
const DER_SET: u8 = 0x31;
/// DER tag of an OBJECT IDENTIFIER.
const DER_OID: u8 = 0x06;
/// DER tag of a certificate's explicit `[0]` version field.
const DER_VERSION: u8 = 0xa0;
/// DER tags of the string types a common name comes in: UTF8String, PrintableString,
/// IA5String.
const DER_TEXT_TAGS: [u8; 3] = [0x0c, 0x13, 0x16];
/// The encoded object identifier of the common name attribute, 2.5.4.3.
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// Fields of a `TBSCertificate` before its subject, after the optional version: serial
/// number, signature algorithm, issuer, validity.
const FIELDS_BEFORE_SUBJECT: usize = 4;

/// Splits the DER element at the start of `input` into its tag, its contents and the bytes
/// after it; `None` when it is malformed or uses a multi-byte tag (certificates' structure
/// has none).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let length = bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, rest)
    };
    let (contents, after) = rest.split_at_checked(length)?;
    Some((tag, contents, after))
}

/// The elements one after another in `input`; stops at the end or at a malformed one.
fn der_elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, contents, rest) = der_element(input)?;
        input = rest;
        Some((tag, contents))
    })
}

/// The subject common name of `cert` (a DER certificate), if it has one in text form.
///
/// Only the path to the subject is walked (certificate, to-be-signed part, subject, its
/// attributes); the certificate was verified by the handshake already, so this reads, it does
/// not validate. A hand-written walk rather than an X.509 library: the only one that fits
/// pulls in procedural macros that change the features RocksDB's build script is compiled
/// with, forcing a rebuild of RocksDB for this one field.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (DER_SEQUENCE, certificate, _) = der_element(cert.as_ref())? else {
        return None;
    };
    let (DER_SEQUENCE, to_be_signed, _) = der_element(certificate)? else {
        return None;
    };
    let mut fields = der_elements(to_be_signed).peekable();
    fields.next_if(|(tag, _)| *tag == DER_VERSION);
    let (DER_SEQUENCE, subject) = fields.nth(FIELDS_BEFORE_SUBJECT)? else {
        return None;
    };
    der_elements(subject)
        .filter(|(tag, _)| *tag == DER_SET)
        .flat_map(|(_, names)| der_elements(names))
        .filter(|(tag, _)| *tag == DER_SEQUENCE)
        .find_map(|(_, attribute)| {
            let (DER_OID, oid, value) = der_element(attribute)? else {
                return None;
            };
            if oid != OID_COMMON_NAME {
                return None;
            }
            let (tag, text, _) = der_element(value)?;
            if !DER_TEXT_TAGS.contains(&tag) {
                return None;
            }
            String::from_utf8(text.to_vec()).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_recognised_in_any_case() {
        assert!(is_https("https://127.0.0.1:2379"));
        assert!(is_https("HTTPS://127.0.0.1:2379"));
        assert!(!is_https("http://127.0.0.1:2379"));
        assert!(!is_https("http"));
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_with_etcds_message() {
        let info = TlsInfo {
            cert_file: Some("server.pem".into()),
            ..TlsInfo::default()
        };
        let error = server_config(&info, ALPN_CLIENT_PORT).unwrap_err();
        assert_eq!(
            error.to_string(),
            "KeyFile and CertFile must both be present[key: , cert: server.pem]"
        );
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let info = TlsInfo {
            cert_file: Some("/nonexistent/server.pem".into()),
            key_file: Some("/nonexistent/server-key.pem".into()),
            ..TlsInfo::default()
        };
        let error = server_config(&info, ALPN_CLIENT_PORT).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("open /nonexistent/server.pem: "),
            "{error}"
        );
    }

    #[test]
    fn the_common_name_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
        let mut nameless = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        let cert = nameless.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        // Other attributes before and after the common name, and a long (multi-byte length)
        // name, are walked past and read.
        let long_name = "n".repeat(300);
        let mut crowded = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        crowded
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "mnemo");
        crowded
            .distinguished_name
            .push(rcgen::DnType::CommonName, long_name.as_str());
        crowded
            .distinguished_name
            .push(rcgen::DnType::CountryName, "NZ");
        let cert = crowded.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), Some(long_name));
    }

    #[test]
    fn malformed_certificates_have_no_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let der = params.self_signed(&key).unwrap().der().to_vec();
        // Every truncation is refused or read without a panic.
        for length in 0..der.len() {
            let truncated = CertificateDer::from(&der[..length]);
            assert_eq!(common_name(&truncated), None, "truncated to {length} bytes");
        }
        assert_eq!(
            common_name(&CertificateDer::from(&[0x30, 0x84, 0xff][..])),
            None
        );
    }

    #[test]
    fn client_cert_auth_needs_a_trusted_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let mut info = TlsInfo {
            cert_file: Some(dir.path().join("cert.pem")),
            key_file: Some(dir.path().join("key.pem")),
            trusted_ca_file: None,
            client_cert_auth: true,
        };
        assert_eq!(
            server_config(&info, ALPN_CLIENT_PORT).unwrap_err(),
            TlsError::NoTrustedCa
        );
        info.trusted_ca_file = Some(dir.path().join("cert.pem"));
        server_config(&info, ALPN_CLIENT_PORT).unwrap();
        info.key_file = Some(dir.path().join("cert.pem"));
        assert!(matches!(
            server_config(&info, ALPN_CLIENT_PORT),
            Err(TlsError::PrivateKey { .. })
        ));
    }
}
