//! TLS to PostgreSQL, shared by the replication and the catalog connection: the connector
//! for an `sslmode`, and a one-line reason when a handshake fails.
//!
//! OpenSSL's own text repeats itself (`error:0A000086:SSL routines:…:certificate verify
//! failed:…(hostname mismatch)` twice, ~430 characters); an operator needs the reason, and
//! for a name mismatch the names the certificate does hold. Those come from a second
//! handshake that checks the chain but not the name, made only after the first one failed.
//!
//! The error's kind and code come from its type (native-tls's error in the source chain:
//! permanent, `postgres.tls`). native-tls keeps OpenSSL's X.509 verify result to itself, so
//! the reason comes from a probe handshake with the same checks made directly with OpenSSL,
//! whose typed verify result [`Reason::of`] maps; when the probe names none (the handshake
//! failed for another reason), the first line of the library's text is kept.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{PostgresConfig, SslMode};
use crate::error::{Code, Error, Result};

/// How long the probe for the certificate's names may take; it only improves a message.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends PostgreSQL's SSLRequest and returns its one-byte answer (`S`: go on with TLS,
/// `N`: not offered).
pub async fn ssl_request(tcp: &mut TcpStream) -> std::io::Result<u8> {
    let mut b = BytesMut::new();
    frontend::ssl_request(&mut b);
    tcp.write_all(&b).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    Ok(answer[0])
}

/// The TLS settings for an sslmode, shared by the replication and the catalog connection.
pub fn connector(cfg: &PostgresConfig) -> Result<native_tls::TlsConnector> {
    builder(cfg, cfg.sslmode)?
        .build()
        .map_err(|e| Error::permanent(Code::PostgresTls, format!("TLS setup: {e}")).with_source(e))
}

fn builder(cfg: &PostgresConfig, mode: SslMode) -> Result<native_tls::TlsConnectorBuilder> {
    let mut b = native_tls::TlsConnector::builder();
    match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            b.danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyCa => {
            b.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyFull => {}
    }
    if let Some(path) = &cfg.sslrootcert {
        let pem = std::fs::read(path).map_err(|e| {
            Error::permanent(
                Code::PostgresTls,
                format!("postgres.sslrootcert {}: cannot read: {e}", path.display()),
            )
            .with_source(e)
        })?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
            Error::permanent(
                Code::PostgresTls,
                format!(
                    "postgres.sslrootcert {}: not a PEM certificate: {e}",
                    path.display()
                ),
            )
            .with_source(e)
        })?;
        b.add_root_certificate(cert).disable_built_in_roots(true);
    }
    Ok(b)
}

/// The permanent error for a failed handshake with `server` (`host:port`); `text` is the TLS
/// library's message with its causes, used only when OpenSSL names no verify failure.
pub async fn handshake_failed(cfg: &PostgresConfig, server: &str, text: &str) -> Error {
    let why = tokio::time::timeout(PROBE_TIMEOUT, verify_failure(cfg)).await;
    let reason = match why {
        Ok(Some((code, words))) => Reason::of(code, &words),
        _ => Reason::Other(
            text.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        ),
    };
    let reason = match reason {
        Reason::NameMismatch => {
            let names = match tokio::time::timeout(PROBE_TIMEOUT, certificate_names(cfg)).await {
                Ok(Some(names)) if !names.is_empty() => names.join(", "),
                _ => "other names".to_owned(),
            };
            format!(
                "certificate is for {names}, connected to {} (sslmode verify-full checks the name: set postgres.host to a name the certificate lists, or use sslmode verify-ca)",
                cfg.host
            )
        }
        Reason::Expired => "the server certificate has expired; renew it on the server".to_owned(),
        Reason::UnknownCa => {
            "the server certificate is not signed by a CA in postgres.sslrootcert; point postgres.sslrootcert at the CA that signed it".to_owned()
        }
        Reason::Other(first) => format!(
            "{first}; check postgres.sslmode, postgres.sslrootcert and the server certificate"
        ),
    };
    Error::permanent(
        Code::PostgresTls,
        format!(
            "PostgreSQL {server}: TLS handshake failed (sslmode {}): {reason}",
            cfg.sslmode.as_str()
        ),
    )
}

#[derive(Debug, PartialEq)]
enum Reason {
    NameMismatch,
    Expired,
    UnknownCa,
    /// OpenSSL's words for another verify failure, or the first line of the library's text
    /// (cut at 200 characters) when the handshake failed for another reason.
    Other(String),
}

// OpenSSL's X.509 verify results (`include/openssl/x509_vfy.h`), stable across versions.
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const X509_V_ERR_CERT_HAS_EXPIRED: i32 = 10;
const X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
const X509_V_ERR_HOSTNAME_MISMATCH: i32 = 62;
const X509_V_ERR_IP_ADDRESS_MISMATCH: i32 = 64;

impl Reason {
    /// `code` is the verify result's number, `words` OpenSSL's text for it.
    fn of(code: i32, words: &str) -> Reason {
        match code {
            X509_V_ERR_HOSTNAME_MISMATCH | X509_V_ERR_IP_ADDRESS_MISMATCH => Reason::NameMismatch,
            X509_V_ERR_CERT_HAS_EXPIRED => Reason::Expired,
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => Reason::UnknownCa,
            _ => Reason::Other(format!("certificate verify failed: {words}")),
        }
    }
}

/// OpenSSL's verify result for the server's certificate under `cfg`'s checks (the same CA
/// file and name check as the connection): a second handshake, made only to word the
/// error, since native-tls keeps the result to itself. None when verification passed or
/// the probe could not get that far.
async fn verify_failure(cfg: &PostgresConfig) -> Option<(i32, String)> {
    if !matches!(cfg.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) {
        return None;
    }
    let mut tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .ok()?;
    if ssl_request(&mut tcp).await.ok()? != b'S' {
        return None;
    }
    // OpenSSL's handshake is blocking: on the socket in blocking mode, off the runtime.
    let tcp = tcp.into_std().ok()?;
    tcp.set_nonblocking(false).ok()?;
    tcp.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    tcp.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || verify_handshake(&cfg, tcp))
        .await
        .ok()?
}

fn verify_handshake(cfg: &PostgresConfig, tcp: std::net::TcpStream) -> Option<(i32, String)> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslVerifyMode};
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509VerifyResult, X509};

    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::PEER);
    if let Some(path) = &cfg.sslrootcert {
        // As the connection: only this file's certificates are trusted.
        let pem = std::fs::read(path).ok()?;
        let mut store = X509StoreBuilder::new().ok()?;
        for cert in X509::stack_from_pem(&pem).ok()? {
            store.add_cert(cert).ok()?;
        }
        builder.set_cert_store(store.build());
    }
    let mut conf = builder.build().configure().ok()?;
    conf.set_verify_hostname(cfg.sslmode == SslMode::VerifyFull);
    match conf.connect(&cfg.host, tcp) {
        Err(HandshakeError::Failure(mid)) => {
            let r = mid.ssl().verify_result();
            (r != X509VerifyResult::OK).then(|| (r.as_raw(), r.error_string().to_owned()))
        }
        _ => None,
    }
}

/// The names (subject alternative names, else the common name) of the certificate that the
/// server presents, read through a handshake that checks the chain but not the name.
async fn certificate_names(cfg: &PostgresConfig) -> Option<Vec<String>> {
    let mut tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .ok()?;
    if ssl_request(&mut tcp).await.ok()? != b'S' {
        return None;
    }
    let connector = builder(cfg, SslMode::VerifyCa).ok()?.build().ok()?;
    let tls = tokio_native_tls::TlsConnector::from(connector)
        .connect(&cfg.host, tcp)
        .await
        .ok()?;
    let der = tls.get_ref().peer_certificate().ok()??.to_der().ok()?;
    Some(names_in(&der))
}

fn names_in(der: &[u8]) -> Vec<String> {
    let Ok(cert) = openssl::x509::X509::from_der(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(dns) = san.dnsname() {
                names.push(dns.to_owned());
            } else if let Some(ip) = san.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(ip).map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => continue,
                };
                names.extend(ip.ok());
            }
        }
    }
    if names.is_empty() {
        for cn in cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        {
            names.push(String::from_utf8_lossy(cn.data().as_slice()).into_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn openssl_verify_results_become_one_reason() {
        let of = |c| Reason::of(c, "certificate is not yet valid");
        assert_eq!(of(62), Reason::NameMismatch);
        assert_eq!(of(64), Reason::NameMismatch);
        assert_eq!(of(10), Reason::Expired);
        for c in [2, 18, 19, 20, 21] {
            assert_eq!(of(c), Reason::UnknownCa, "{c}");
        }
        let Reason::Other(m) = of(9) else { panic!() };
        assert!(
            m.starts_with("certificate verify failed: certificate is not yet valid"),
            "{m}"
        );
    }
}
