//! The identity of a verified TLS client certificate, and the acceptor that hands it to every
//! request of its connection as a [`ClientCertificate`] request extension.
//!
//! The certificate was already verified against the configured client CA during the handshake
//! (rustls `WebPkiClientVerifier`); this module only reads who it names.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls::TlsService;
use axum_server::tls_rustls::RustlsAcceptor;
use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tower::Service;

/// Who a TLS client proved to be with its certificate. Present as a request extension
/// (`Extension<ClientCertificate>`) on every request of a connection whose client sent a
/// certificate that the client CA vouches for; absent otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// SHA-256 of the certificate's DER encoding: the fingerprint `openssl x509 -fingerprint
    /// -sha256` prints, and the stable key to map a client to an identity.
    pub sha256: [u8; 32],
    /// The first common name (CN) of the certificate's subject, if it has one in a string type
    /// this server reads (UTF8String, PrintableString, IA5String, BMPString).
    pub subject_cn: Option<String>,
}

impl ClientCertificate {
    /// Reads the identity of a certificate that rustls has verified; a certificate whose subject
    /// cannot be read still has its fingerprint.
    pub fn from_der(der: &CertificateDer<'_>) -> ClientCertificate {
        ClientCertificate {
            sha256: Sha256::digest(der.as_ref()).into(),
            subject_cn: subject_common_name(der),
        }
    }

    /// The fingerprint as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The first `CN` attribute of the subject, decoded; `None` when there is none or its string
/// type is not one this server reads.
fn subject_common_name(der: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    // `subject()` is the content of the subject's `RDNSequence`: a series of
    // `SET OF AttributeTypeAndValue` (RFC 5280 §4.1.2.4).
    let mut rdns = cert.subject();
    while !rdns.is_empty() {
        let (set, rest) = der_element(rdns, TAG_SET)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, rest) = der_element(attributes, TAG_SEQUENCE)?;
            attributes = rest;
            let (oid, value) = der_element(attribute, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, content, _) = der_any(value)?;
                return decode_directory_string(tag, content);
            }
        }
    }
    None
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3, as DER content bytes.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One DER element with the expected tag: its content and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = der_any(input)?;
    (found == tag).then_some((content, rest))
}

/// One DER element of any (single-byte) tag: the tag, its content and what follows it.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: the low bits say how many length bytes follow. Certificates never need
        // more than four.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0_usize, |len, &b| (len << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| {
        let (content, rest) = input.split_at(len);
        (tag, content, rest)
    })
}

/// A `DirectoryString` (RFC 5280 §4.1.2.4) in one of the types CAs issue.
fn decode_directory_string(tag: u8, content: &[u8]) -> Option<String> {
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    const BMP_STRING: u8 = 0x1e;
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => {
            std::str::from_utf8(content).ok().map(str::to_owned)
        }
        BMP_STRING if content.len().is_multiple_of(2) => {
            let units = content
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// The TLS acceptor of [`crate::run`]: `TCP_NODELAY`, the rustls handshake (axum-server's
/// [`RustlsAcceptor`], bounded by its handshake timeout), then the client certificate's identity
/// attached to the connection's service.
#[derive(Debug, Clone)]
pub(crate) struct ClientCertAcceptor {
    tls: RustlsAcceptor<NoDelayAcceptor>,
}

impl ClientCertAcceptor {
    pub(crate) fn new(tls: RustlsAcceptor<NoDelayAcceptor>) -> Self {
        ClientCertAcceptor { tls }
    }
}

type AcceptFuture<S> = Pin<
    Box<
        dyn Future<Output = io::Result<(TlsStream<TcpStream>, ClientCertService<TlsService<S>>)>>
            + Send,
    >,
>;

impl<S> Accept<TcpStream, S> for ClientCertAcceptor
where
    S: Send + 'static,
{
    type Stream = TlsStream<TcpStream>;
    type Service = ClientCertService<TlsService<S>>;
    type Future = AcceptFuture<S>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let handshake = self.tls.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            // With a client CA configured, rustls only completes the handshake when the chain is
            // valid; without one it never asks for a certificate, so whatever is here is verified.
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[CertificateDer<'_>]>::first)
                .map(ClientCertificate::from_der);
            Ok((
                stream,
                ClientCertService {
                    inner: service,
                    identity,
                },
            ))
        })
    }
}

/// Adds the connection's [`ClientCertificate`] (if any) to each request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct ClientCertService<S> {
    inner: S,
    identity: Option<ClientCertificate>,
}

impl<S, B> Service<Request<B>> for ClientCertService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(identity) = &self.identity {
            request.extensions_mut().insert(identity.clone());
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, string::BmpString};

    use super::*;

    fn cert_with(dn: DistinguishedName) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_der_and_the_cn_is_read() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "Example");
        dn.push(DnType::CommonName, "billing-service");
        let der = cert_with(dn);
        let identity = ClientCertificate::from_der(&der);
        assert_eq!(identity.sha256, <[u8; 32]>::from(Sha256::digest(&der)));
        assert_eq!(identity.sha256_hex().len(), 64);
        assert_eq!(identity.subject_cn.as_deref(), Some("billing-service"));
    }

    #[test]
    fn common_names_in_other_string_types_and_none_at_all() {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            rcgen::DnValue::PrintableString("worker 7".try_into().unwrap()),
        );
        let der = cert_with(dn);
        assert_eq!(
            ClientCertificate::from_der(&der).subject_cn.as_deref(),
            Some("worker 7")
        );

        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            rcgen::DnValue::BmpString(
                BmpString::from_utf16be(
                    "Zoë ☃".encode_utf16().flat_map(u16::to_be_bytes).collect(),
                )
                .unwrap(),
            ),
        );
        assert_eq!(
            ClientCertificate::from_der(&cert_with(dn))
                .subject_cn
                .as_deref(),
            Some("Zoë ☃")
        );

        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "no common name here");
        assert_eq!(ClientCertificate::from_der(&cert_with(dn)).subject_cn, None);
        assert_eq!(
            ClientCertificate::from_der(&cert_with(DistinguishedName::new())).subject_cn,
            None
        );
    }

    #[test]
    fn long_common_names_use_long_form_lengths() {
        let long = "x".repeat(300);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, long.as_str());
        assert_eq!(
            ClientCertificate::from_der(&cert_with(dn))
                .subject_cn
                .as_deref(),
            Some(long.as_str())
        );
    }

    #[test]
    fn truncated_der_is_not_read_past_its_end() {
        assert_eq!(der_any(&[0x30]), None);
        assert_eq!(der_any(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(der_any(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_any(&[0x30, 0x80]), None);
        assert_eq!(
            der_any(&[0x30, 0x81, 0x02, 7, 8, 9]),
            Some((0x30, &[7_u8, 8][..], &[9_u8][..]))
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert_eq!(ClientCertificate::from_der(&garbage).subject_cn, None);
    }
}
