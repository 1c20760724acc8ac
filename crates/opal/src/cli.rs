//! Command-line arguments; every flag can also come from an `OPAL_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use opal_log::FsyncPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "opal",
    version,
    about = "Opal: durable topics, pull/push consumers and signed callbacks in one binary"
)]
pub(crate) struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, env = "OPAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the server on embedded storage.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Directory holding the logs and metadata.
    #[arg(long, env = "OPAL_DATA_DIR", default_value = "./opal-data")]
    pub(crate) data_dir: PathBuf,
    /// Address of the HTTP API and health endpoints (port 0 picks a free port).
    #[arg(
        long = "http",
        env = "OPAL_HTTP_ADDR",
        default_value = "127.0.0.1:7400"
    )]
    pub(crate) http_addr: SocketAddr,
    /// When appended data is synced to disk: `always` (before answering), `interval:<ms>` or `never`.
    #[arg(long, env = "OPAL_FSYNC", default_value = "always")]
    pub(crate) fsync: FsyncPolicy,
    /// Encrypt data at rest with the keys in this file: one `<key id> <base64 of 32 bytes>` per
    /// line, the highest id current. The file must be readable by its owner only.
    #[arg(long, env = "OPAL_ENCRYPTION_KEY_FILE", value_name = "PATH")]
    pub(crate) encryption_key_file: Option<PathBuf>,
    /// The bootstrap admin key. When absent, one is generated on first start and printed once.
    #[arg(long, env = "OPAL_ADMIN_KEY", hide_env_values = true)]
    pub(crate) admin_key: Option<String>,
    /// Largest HTTP request body accepted, in bytes.
    #[arg(long, env = "OPAL_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub(crate) max_body_bytes: usize,
    /// Size at which a partition's active log segment is rolled, in bytes.
    #[arg(long, env = "OPAL_SEGMENT_MAX_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub(crate) segment_max_bytes: u64,
    /// Longest time to wait for in-flight requests on shutdown, in seconds.
    #[arg(long, env = "OPAL_SHUTDOWN_GRACE_S", default_value_t = 25)]
    pub(crate) shutdown_grace_s: u64,
    /// A browser origin allowed to call the API (`https://app.example.com`), or `*` for any;
    /// repeat the flag, or list them comma-separated in the variable. None: no CORS headers.
    #[arg(
        long = "cors-origin",
        env = "OPAL_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub(crate) cors_origins: Vec<String>,
    /// Compress responses (gzip, zstd) for clients that accept it: `true` or `false`.
    #[arg(
        long,
        env = "OPAL_COMPRESSION",
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub(crate) compression: bool,
    /// Turn response compression off (wins over `--compression` and `OPAL_COMPRESSION`).
    #[arg(long)]
    pub(crate) no_compression: bool,
    /// Longest time a request body may take to arrive after its headers, in milliseconds; a
    /// slower client gets `408`. Long-poll waits are not counted.
    #[arg(
        long,
        env = "OPAL_REQUEST_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(crate) request_timeout_ms: u64,

    /// Failed authentications a client address may make per second before it is answered
    /// `429` for a while; 0 turns the limit off (e.g. behind a proxy that makes every client
    /// one address).
    #[arg(
        long,
        env = "OPAL_AUTH_FAILURES_PER_S",
        value_name = "N",
        default_value_t = 5
    )]
    pub(crate) auth_failures_per_s: u64,

    /// Longest time a client may take to send a request's line and headers, in milliseconds;
    /// also how long an idle keep-alive connection stays open. A slower client is disconnected.
    #[arg(
        long,
        env = "OPAL_HEADER_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(crate) header_timeout_ms: u64,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    #[command(flatten)]
    pub(crate) push: PushArgs,

    /// How long a task and its result are kept after the task's last change, in seconds.
    #[arg(
        long,
        env = "OPAL_TASK_RESULT_TTL_S",
        value_name = "S",
        default_value_t = 7 * 24 * 3600,
        value_parser = clap::value_parser!(u64).range(1..=365 * 24 * 3600)
    )]
    pub(crate) task_result_ttl_s: u64,
}

/// Push subscriptions (outbound webhooks).
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Networks push endpoints may resolve to although they are loopback, private, link-local
    /// or otherwise internal, as comma-separated CIDRs (e.g. `10.1.0.0/16,::1/128`). Empty (the
    /// default): every such address is refused (the SSRF guard).
    #[arg(
        long,
        env = "OPAL_PUSH_ALLOW_NETS",
        value_name = "CIDRS",
        default_value = ""
    )]
    pub(crate) push_allow_nets: String,

    /// Refuse every push endpoint address outside `--push-allow-nets`, public ones too (for
    /// webhooks that may only reach known networks, and for test servers).
    #[arg(long, env = "OPAL_PUSH_ONLY_ALLOWED_NETS")]
    pub(crate) push_only_allowed_nets: bool,

    /// Look up no push endpoint host name but `localhost`: for servers where not even a DNS
    /// query may leave the host (air-gapped, or a test server fed random URLs).
    #[arg(long, env = "OPAL_PUSH_NO_DNS")]
    pub(crate) push_no_dns: bool,

    /// An endpoint whose every attempt failed for this long is disabled (and its owner told on
    /// the app's `opal.events` topic), in seconds. Default 5 days.
    #[arg(
        long,
        env = "OPAL_PUSH_DISABLE_AFTER_S",
        value_name = "S",
        default_value_t = 5 * 24 * 3600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(crate) push_disable_after_s: u64,

    /// Consecutive failed attempts that open an endpoint's circuit breaker.
    #[arg(
        long,
        env = "OPAL_PUSH_BREAKER_FAILURES",
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(crate) push_breaker_failures: u32,

    /// How long an open circuit breaker waits before its first probe, in milliseconds (doubling
    /// while probes fail, up to 10 minutes).
    #[arg(
        long,
        env = "OPAL_PUSH_BREAKER_COOL_DOWN_MS",
        value_name = "MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub(crate) push_breaker_cool_down_ms: u64,

    /// The longest `Retry-After` of an endpoint that is honoured, in seconds.
    #[arg(
        long,
        env = "OPAL_PUSH_MAX_RETRY_AFTER_S",
        value_name = "S",
        default_value_t = 3_600
    )]
    pub(crate) push_max_retry_after_s: u64,

    /// Sent as `WebHook-Request-Origin` in the CloudEvents validation handshake of endpoints
    /// that ask for it: the name receivers allow.
    #[arg(
        long,
        env = "OPAL_PUSH_ORIGIN",
        value_name = "NAME",
        default_value = "opal"
    )]
    pub(crate) push_origin: String,
}

/// HTTPS instead of plain HTTP, and client certificates.
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// PEM file with the server certificate, then any intermediates; turns HTTPS on (with
    /// `--tls-key`).
    #[arg(long, env = "OPAL_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "OPAL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM file with the CA certificates client certificates must chain to; turns on client
    /// certificate verification (mutual TLS).
    #[arg(
        long,
        env = "OPAL_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// With `--tls-client-ca`: whether a client must present a certificate (`required`) or may
    /// connect without one (`optional`; one it presents must still be valid).
    #[arg(
        long,
        env = "OPAL_TLS_CLIENT_AUTH",
        value_enum,
        default_value_t = TlsClientAuth::Required
    )]
    pub(crate) tls_client_auth: TlsClientAuth,
    /// How often the TLS files are checked for changes and reloaded, in seconds; `0` turns the
    /// check off (SIGHUP still reloads).
    #[arg(
        long,
        env = "OPAL_TLS_RELOAD_CHECK_S",
        value_name = "S",
        default_value_t = 10
    )]
    pub(crate) tls_reload_check_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsClientAuth {
    Required,
    Optional,
}
