//! TLS to PostgreSQL, shared by the replication and the catalog connection: the connector
//! for an `sslmode`, and a one-line reason when a handshake fails.
//!
//! OpenSSL's own text repeats itself (`error:0A000086:SSL routines:…:certificate verify
//! failed:…(hostname mismatch)` twice, ~430 characters); an operator needs the reason, and
//! for a name mismatch the names the certificate does hold. Those come from a second
//! handshake that checks the chain but not the name, made only after the first one failed.
//!
//! The error's kind and code come from its type (native-tls's error in the source chain:
//! permanent, `postgres.tls`). native-tls exposes no verify result, so [`Reason::of`] reads
//! OpenSSL's fixed X.509 reason strings only to word the message; a wording it does not
//! know keeps the first line of the library's text.

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
        .map_err(|e| Error::permanent(Code::PostgresTls, format!("TLS setup: {e}")))
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
        })?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
            Error::permanent(
                Code::PostgresTls,
                format!(
                    "postgres.sslrootcert {}: not a PEM certificate: {e}",
                    path.display()
                ),
            )
        })?;
        b.add_root_certificate(cert).disable_built_in_roots(true);
    }
    Ok(b)
}

/// The permanent error for a failed handshake with `server` (`host:port`); `text` is the TLS
/// library's message with its causes.
pub async fn handshake_failed(cfg: &PostgresConfig, server: &str, text: &str) -> Error {
    let reason = match Reason::of(text) {
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
    /// The first line of the library's text, cut at 200 characters.
    Other(String),
}

impl Reason {
    fn of(text: &str) -> Reason {
        let t = text.to_lowercase();
        if t.contains("hostname mismatch") || t.contains("ip address mismatch") {
            Reason::NameMismatch
        } else if t.contains("certificate has expired") {
            Reason::Expired
        } else if t.contains("self-signed certificate")
            || t.contains("self signed certificate")
            || t.contains("unable to get local issuer certificate")
            || t.contains("certificate verify failed")
        {
            Reason::UnknownCa
        } else {
            Reason::Other(
                text.lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            )
        }
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
    fn openssl_text_becomes_one_reason() {
        let openssl = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (hostname mismatch) error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (hostname mismatch)";
        assert_eq!(Reason::of(openssl), Reason::NameMismatch);
        assert_eq!(
            Reason::of("certificate verify failed: (self-signed certificate in certificate chain)"),
            Reason::UnknownCa
        );
        assert_eq!(Reason::of("certificate has expired"), Reason::Expired);
        assert_eq!(
            Reason::of("connection reset\nmore"),
            Reason::Other("connection reset".into())
        );
    }
}
