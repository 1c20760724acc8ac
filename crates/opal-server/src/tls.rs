//! TLS for the HTTP listener: the certificate chain, private key and optional client CA, read from
//! PEM files into a rustls `ServerConfig` (aws-lc-rs provider), and replaced in place on reload.
//!
//! A reload builds a whole new `ServerConfig` and swaps it in atomically (axum-server's
//! `RustlsConfig` holds it in an `ArcSwap`): new handshakes use the new certificate, connections
//! already open keep the one they were set up with. A reload that fails (unreadable file, bad PEM,
//! a key that does not belong to the certificate, an unusable client CA) changes nothing and is
//! logged. Reloads run on [`ServerTls::reload`] (the binary calls it on SIGHUP) and, when
//! [`TlsSettings::reload_check`] is set, whenever the files' contents change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::ConfigError;
use crate::client_cert::ClientCertificate;

/// Whether clients must present a certificate once a client CA is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// A client without a certificate is refused in the handshake (the default: configuring a
    /// client CA is asking for mutual TLS).
    #[default]
    Required,
    /// A client may connect without a certificate (and then has no [`ClientCertificate`]); one
    /// that sends a certificate the CA does not vouch for is still refused.
    Optional,
}

/// Where the TLS material lives and how it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to. `None`: the
    /// server does not ask for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Applies only with `client_ca`.
    pub client_auth: ClientAuth,
    /// How often the files are read and compared with what was loaded, to reload them when they
    /// changed (at least 1 s). `None`: only [`ServerTls::reload`] reloads.
    pub reload_check: Option<Duration>,
}

impl TlsSettings {
    pub const DEFAULT_RELOAD_CHECK: Duration = Duration::from_secs(10);

    /// A certificate and key, no client certificates, files checked every 10 s.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsSettings {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::Required,
            reload_check: Some(Self::DEFAULT_RELOAD_CHECK),
        }
    }
}

/// The loaded TLS configuration of a server, shared by the listener and whoever reloads it;
/// clones share one configuration.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    rustls: RustlsConfig,
    /// The digest of the files' contents (or of why they could not be read) at the last attempt,
    /// successful or not, so that a broken file is reported once, not on every check. Held
    /// across a whole reload, so that two reloads never race to install older files last.
    attempted: tokio::sync::Mutex<[u8; 32]>,
    /// What is being served now.
    current: Mutex<LoadedCertificate>,
}

/// The server certificate being served, for logs and the start banner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadedCertificate {
    /// SHA-256 of the server certificate's DER, lowercase hex.
    pub sha256_hex: String,
    /// Its subject's common name, if any.
    pub subject_cn: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.inner.settings)
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

/// The bytes of the files at one moment.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// How one reload attempt went.
enum Reloaded {
    /// The files are as they were at the last attempt (only when not forced).
    Unchanged,
    Loaded(LoadedCertificate),
    Failed(ConfigError),
}

impl ServerTls {
    /// Reads and checks the files once; the error says which file is wrong and how.
    pub fn load(settings: TlsSettings) -> Result<ServerTls, ConfigError> {
        if settings
            .reload_check
            .is_some_and(|every| every < Duration::from_secs(1))
        {
            return Err(ConfigError::TlsReloadCheck);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (digest, files) = read_files(&settings);
        let (config, current) = build(&settings, &provider, &files?)?;
        Ok(ServerTls {
            inner: Arc::new(Inner {
                rustls: RustlsConfig::from_config(Arc::new(config)),
                settings,
                provider,
                attempted: tokio::sync::Mutex::new(digest),
                current: Mutex::new(current),
            }),
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }

    /// The certificate new connections get.
    pub fn current(&self) -> LoadedCertificate {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again and, if they make a working configuration, serves it to new
    /// connections; otherwise keeps the current one. Logs the outcome either way.
    pub async fn reload(&self) -> Result<LoadedCertificate, ConfigError> {
        match self.reload_if("reload requested", true).await {
            Reloaded::Loaded(loaded) => Ok(loaded),
            Reloaded::Failed(err) => Err(err),
            Reloaded::Unchanged => Ok(self.current()),
        }
    }

    /// Checks the files every `reload_check` until `stop`, reloading when their contents
    /// changed. Does nothing without `reload_check`.
    pub(crate) async fn watch(self, stop: CancellationToken) {
        let Some(every) = self.inner.settings.reload_check else {
            return;
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the files were just loaded
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // The outcome is logged; the check goes on either way.
            self.reload_if("files changed", false).await;
        }
    }

    pub(crate) fn rustls_config(&self) -> RustlsConfig {
        self.inner.rustls.clone()
    }

    /// Reloads if `forced` or if the files changed since the last attempt, and logs the outcome.
    async fn reload_if(&self, trigger: &'static str, forced: bool) -> Reloaded {
        let mut attempted = self.inner.attempted.lock().await;
        let since = *attempted;
        let inner = Arc::clone(&self.inner);
        let attempt = tokio::task::spawn_blocking(move || {
            let (digest, files) = read_files(&inner.settings);
            let built = (forced || digest != since)
                .then(|| files.and_then(|files| build(&inner.settings, &inner.provider, &files)));
            (digest, built)
        })
        .await;
        let (digest, built) = match attempt {
            Ok(attempt) => attempt,
            // Only a panic (a bug) or a runtime shutting down end the task early.
            Err(err) => (
                since,
                Some(Err(ConfigError::TlsReloadAborted(err.to_string()))),
            ),
        };
        *attempted = digest;
        match built {
            None => Reloaded::Unchanged,
            Some(Ok((config, loaded))) => {
                self.inner.rustls.reload_from_config(Arc::new(config));
                *self
                    .inner
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = loaded.clone();
                tracing::info!(
                    trigger,
                    cert_sha256 = %loaded.sha256_hex,
                    cert_cn = loaded.subject_cn.as_deref().unwrap_or(""),
                    "TLS certificate reloaded; new connections use it"
                );
                Reloaded::Loaded(loaded)
            }
            Some(Err(err)) => {
                tracing::error!(
                    trigger,
                    error = %err,
                    cert_sha256 = %self.current().sha256_hex,
                    "TLS reload failed; still serving the previous certificate"
                );
                Reloaded::Failed(err)
            }
        }
    }
}

/// The files' contents and their digest; when one cannot be read, the digest of the error, so
/// that an unchanged problem is not reported again.
fn read_files(settings: &TlsSettings) -> ([u8; 32], Result<Files, ConfigError>) {
    let files = read_all(settings);
    let digest = match &files {
        Ok(files) => files.digest(),
        Err(err) => Sha256::digest(err.to_string()).into(),
    };
    (digest, files)
}

fn read_all(settings: &TlsSettings) -> Result<Files, ConfigError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| ConfigError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    Ok(Files {
        cert: read("certificate", &settings.cert)?,
        key: read("private key", &settings.key)?,
        client_ca: settings
            .client_ca
            .as_deref()
            .map(|path| read("client CA", path))
            .transpose()?,
    })
}

impl Files {
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            match part {
                // Length-prefixed, so that moving bytes between files changes the digest.
                Some(bytes) => {
                    hash.update((bytes.len() as u64).to_le_bytes());
                    hash.update(bytes);
                }
                None => hash.update(u64::MAX.to_le_bytes()),
            }
        }
        hash.finalize().into()
    }
}

fn build(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    files: &Files,
) -> Result<(rustls::ServerConfig, LoadedCertificate), ConfigError> {
    let chain = certificates(&files.cert, "certificate", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|err| ConfigError::TlsPem {
        what: "private key",
        path: settings.key.clone(),
        reason: match err {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".to_owned()
            }
            other => other.to_string(),
        },
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::TlsKey {
            reason: err.to_string(),
        })?;
    let builder = match (&settings.client_ca, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, "client CA", path)? {
                roots.add(cert).map_err(|err| ConfigError::TlsPem {
                    what: "client CA",
                    path: path.clone(),
                    reason: err.to_string(),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|err| ConfigError::TlsPem {
                what: "client CA",
                path: path.clone(),
                reason: err.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let leaf = LoadedCertificate {
        sha256_hex: crate::client_cert::hex(&Sha256::digest(&chain[0])),
        subject_cn: ClientCertificate::from_der(&chain[0]).subject_cn,
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| ConfigError::TlsKey {
            reason: match err {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_owned()
                }
                other => other.to_string(),
            },
        })?;
    // HTTP/1.1 only, like plain HTTP: the header read timeout and the WebSocket upgrade are
    // HTTP/1 mechanisms.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, leaf))
}

/// Every `CERTIFICATE` block of a PEM file, at least one.
fn certificates(
    pem: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let unusable = |reason: String| ConfigError::TlsPem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unusable(err.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}
