//! The crate's one error type, and the coarse kinds a failed delivery attempt is logged under.

use std::fmt;
use std::net::IpAddr;

use crate::address_policy::Refusal;

/// Everything that can go wrong in this crate, named after what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// A signing secret is not `whsec_` followed by base64 of 24 to 64 bytes.
    #[error("invalid signing secret: {0}")]
    InvalidSecret(&'static str),

    /// A received webhook did not verify (see [`crate::signing::verify`]).
    #[error("webhook signature rejected: {0}")]
    SignatureRejected(&'static str),

    /// An entry of the push allow list is not an IP network or address.
    #[error("invalid allow-list entry {entry:?}: expected an IP network such as 127.0.0.0/8")]
    InvalidAllowList {
        /// The entry as written.
        entry: String,
    },

    /// A callback URL cannot be used at all (scheme, credentials, no host).
    #[error("refused callback URL: {reason}")]
    UrlRefused {
        /// Why, in a few words.
        reason: String,
    },

    /// A callback host is, or resolves to, an address the SSRF guard refuses.
    #[error("refused {host}: {addr} is in the {refusal} range")]
    AddressRefused {
        /// The host from the URL (a name or the literal address).
        host: String,
        /// The first refused address.
        addr: IpAddr,
        /// The range it lies in.
        refusal: Refusal,
    },

    /// A callback host name could not be resolved.
    #[error("could not resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        reason: String,
    },

    /// A request failed before a response status arrived.
    #[error("request failed ({kind}): {detail}")]
    Transport {
        /// The coarse class, for logs and metrics.
        kind: ErrorKind,
        /// The underlying error chain, for the attempts log.
        detail: String,
    },

    /// A setting given to one of this crate's types is out of its documented bounds.
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The endpoint did not agree to the CloudEvents webhook validation handshake.
    #[error("endpoint validation failed: {reason}")]
    ValidationRefused {
        /// What the endpoint answered instead.
        reason: String,
    },
}

impl DispatchError {
    /// The coarse class of this error, as an attempt outcome would record it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DispatchError::UrlRefused { .. } | DispatchError::AddressRefused { .. } => {
                ErrorKind::RefusedByPolicy
            }
            DispatchError::Resolve { .. } => ErrorKind::Dns,
            DispatchError::Transport { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }

    pub(crate) fn config(what: &'static str, reason: impl Into<String>) -> Self {
        DispatchError::InvalidConfig {
            what,
            reason: reason.into(),
        }
    }
}

/// Why an attempt produced no HTTP status, coarse enough to count and to show to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Connecting, or waiting for the answer, took longer than allowed.
    Timeout,
    /// The host actively refused the TCP connection (nothing listens on the port).
    ConnectionRefused,
    /// Any other failure to connect (unreachable network, reset during connect).
    Connect,
    /// The TLS handshake failed (bad certificate, not TLS at all, protocol mismatch).
    Tls,
    /// The host name did not resolve.
    Dns,
    /// The SSRF guard refused the URL or one of its addresses; no connection was made.
    RefusedByPolicy,
    /// Anything else (the connection closed mid-request, a malformed response).
    Other,
}

impl ErrorKind {
    /// A stable lower-case label, usable as a metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Dns => "dns",
            ErrorKind::RefusedByPolicy => "refused_by_policy",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
