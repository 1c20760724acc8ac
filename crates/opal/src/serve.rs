//! `opal serve`: open embedded storage, bind the listener, serve until SIGTERM or SIGINT, drain;
//! SIGHUP reloads the TLS files.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opal_core::Broker;
use opal_core::tenancy::Directory;
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use opal_log::Keyring;
use opal_server::{ClientAuth, ServerConfig, ServerTls, TlsSettings};
use tokio_util::sync::CancellationToken;

use crate::admin_key::{self, AdminKey};
use crate::cli::{ServeArgs, TlsArgs, TlsClientAuth};
use crate::key_file;

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Checked before storage is opened: a typo in a flag (or a bad certificate) should not wait
    // for log recovery.
    let mut server_config = server_config(&args);
    server_config.validate().context("invalid HTTP settings")?;
    let mut push_policy =
        opal_dispatch::AddressPolicy::parse_allow_list(&args.push.push_allow_nets)
            .context("invalid --push-allow-nets")?;
    push_policy.only_allowed = args.push.push_only_allowed_nets;
    push_policy.no_dns = args.push.push_no_dns;
    server_config.push_policy = push_policy.clone();
    server_config.tls = tls_settings(&args.tls)
        .map(ServerTls::load)
        .transpose()
        .context("invalid TLS settings")?;
    // Installed before anything slow: from here on a SIGHUP (`systemctl reload`) must not kill
    // the process, TLS or not.
    tokio::spawn(reload_on_sighup(server_config.tls.clone()));

    let mut config = EmbeddedConfig::new(&args.data_dir);
    config.fsync = args.fsync;
    config.segment_max_bytes = args.segment_max_bytes;
    config.task_ttl_ms = args.task_result_ttl_s.saturating_mul(1_000);
    config.encryption = args
        .encryption_key_file
        .as_deref()
        .map(key_file::load)
        .transpose()?;
    let encryption = config.encryption.clone();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::open(config))
        .await?
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    let broker = Arc::new(broker);
    let directory: Arc<dyn Directory> = Arc::clone(&broker) as Arc<dyn Directory>;
    let broker: Arc<dyn Broker> = broker;

    let admin = admin_key::settle(args.admin_key.as_deref(), broker.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", args.http_addr))?;
    let local = listener.local_addr()?;

    announce(
        &local,
        &admin,
        &args,
        encryption.as_ref(),
        server_config.tls.as_ref(),
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    // Its own token: it stops after the HTTP server has drained (no new pushes are made while
    // requests still settle) and before storage closes.
    let dispatch_stop = CancellationToken::new();
    let dispatcher = opal_dispatch::spawn(
        Arc::clone(&broker),
        opal_core::Clock::system(),
        dispatcher_settings(&args, push_policy.clone())?,
        dispatch_stop.clone(),
    )
    .context("starting the push dispatcher")?;

    let server = tokio::spawn(opal_server::run(
        listener,
        ServerConfig {
            admin_key_hash: admin.hash(),
            ..server_config
        },
        Arc::clone(&broker),
        directory,
        shutdown.clone(),
    ));
    let mut server = std::pin::pin!(server);

    tokio::select! {
        result = &mut server => {
            // The server stopped by itself: that is an error unless a signal asked for it.
            result?.context("HTTP server failed")?;
        }
        () = shutdown.cancelled() => {
            tracing::info!(grace_s = args.shutdown_grace_s, "shutting down: draining in-flight requests");
            match tokio::time::timeout(Duration::from_secs(args.shutdown_grace_s), &mut server).await {
                Ok(result) => result?.context("HTTP server failed while draining")?,
                Err(_) => tracing::warn!("drain took longer than the grace period; closing anyway"),
            }
        }
    }
    dispatch_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(args.shutdown_grace_s), dispatcher)
        .await
        .is_err()
    {
        tracing::warn!("push attempts took longer than the grace period; closing anyway");
    }
    broker.close().await.context("closing storage")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The HTTP settings from the command line; the admin key hash is filled in once it is known.
fn server_config(args: &ServeArgs) -> ServerConfig {
    let mut config = ServerConfig::new([0; 32]);
    config.max_body_bytes = args.max_body_bytes;
    config.cors_origins = args.cors_origins.clone();
    config.compression = args.compression && !args.no_compression;
    config.request_timeout_ms = args.request_timeout_ms;
    config.auth_failures_per_s = args.auth_failures_per_s;
    config.header_timeout_ms = args.header_timeout_ms;
    config
}

/// The push dispatcher's settings from the command line.
fn dispatcher_settings(
    args: &ServeArgs,
    policy: opal_dispatch::AddressPolicy,
) -> anyhow::Result<opal_dispatch::DispatcherSettings> {
    let push = &args.push;
    let breaker = opal_dispatch::BreakerConfig {
        failure_threshold: push.push_breaker_failures,
        cool_down: Duration::from_millis(push.push_breaker_cool_down_ms),
        ..opal_dispatch::BreakerConfig::default()
    };
    breaker
        .validate()
        .context("invalid circuit breaker settings")?;
    Ok(opal_dispatch::DispatcherSettings {
        policy,
        origin: push.push_origin.clone(),
        max_retry_after: Duration::from_secs(push.push_max_retry_after_s),
        breaker,
        disable_after: Duration::from_secs(push.push_disable_after_s),
        ..opal_dispatch::DispatcherSettings::default()
    })
}

/// Where the TLS files are, if HTTPS is on (clap makes `--tls-cert` and `--tls-key` come
/// together).
fn tls_settings(args: &TlsArgs) -> Option<TlsSettings> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return None;
    };
    let mut settings = TlsSettings::new(cert, key);
    settings.client_ca = args.tls_client_ca.clone();
    settings.client_auth = match args.tls_client_auth {
        TlsClientAuth::Required => ClientAuth::Required,
        TlsClientAuth::Optional => ClientAuth::Optional,
    };
    settings.reload_check =
        (args.tls_reload_check_s > 0).then(|| Duration::from_secs(args.tls_reload_check_s));
    Some(settings)
}

#[allow(clippy::print_stdout)] // stdout is for the operator: where to connect, and the key once.
fn announce(
    local: &std::net::SocketAddr,
    admin: &AdminKey,
    args: &ServeArgs,
    encryption: Option<&Keyring>,
    tls: Option<&ServerTls>,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("opal {} serving", env!("CARGO_PKG_VERSION"));
    println!("  http:     {scheme}://{local}/v1");
    println!("  health:   {scheme}://{local}/healthz");
    if let Some(tls) = tls {
        let cert = tls.current();
        println!(
            "  tls:      certificate {} (CN {}), reloaded on SIGHUP{}",
            cert.sha256_hex,
            cert.subject_cn.as_deref().unwrap_or("none"),
            match tls.settings().reload_check {
                Some(every) => format!(" and file changes (checked every {} s)", every.as_secs()),
                None => String::new(),
            }
        );
        if let Some(ca) = &tls.settings().client_ca {
            let need = match tls.settings().client_auth {
                ClientAuth::Required => "required",
                ClientAuth::Optional => "optional",
            };
            println!("  clients:  certificates from {} {need}", ca.display());
        }
    }
    println!("  data dir: {}", args.data_dir.display());
    println!("  fsync:    {}", args.fsync);
    match encryption {
        Some(keys) => println!(
            "  encryption at rest: on, key ids {:?}, current {}",
            keys.key_ids(),
            keys.current_id()
        ),
        None => println!("  encryption at rest: off"),
    }
    match admin {
        AdminKey::Generated { secret, .. } => {
            println!("  admin key (shown once, store it now): {secret}");
        }
        AdminKey::Configured(_) => println!("  admin key: from OPAL_ADMIN_KEY"),
        AdminKey::Stored(_) => {
            println!("  admin key: the one printed on first start (only its hash is stored)");
        }
    }
}

/// Reloads the TLS files on every SIGHUP (the outcome is logged by `ServerTls::reload`).
async fn reload_on_sighup(tls: Option<ServerTls>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match &tls {
            Some(tls) => {
                tracing::info!("SIGHUP received: reloading the TLS files");
                // Success and failure are both logged inside.
                let _ = tls.reload().await;
            }
            None => tracing::info!("SIGHUP received: nothing to reload (TLS is off)"),
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        let cli = Cli::try_parse_from(["opal", "serve"].iter().chain(args))?;
        let Command::Serve(args) = cli.command;
        Ok(server_config(&args))
    }

    #[test]
    fn http_convention_flags_reach_the_server_config() {
        let defaults = parse(&[]).unwrap();
        assert!(defaults.cors_origins.is_empty());
        assert!(defaults.compression);
        assert_eq!(
            defaults.request_timeout_ms,
            ServerConfig::DEFAULT_REQUEST_TIMEOUT_MS
        );

        let config = parse(&[
            "--cors-origin",
            "https://a.example.com",
            "--cors-origin",
            "https://b.example.com,*",
            "--request-timeout-ms",
            "45000",
            "--no-compression",
        ])
        .unwrap();
        assert_eq!(
            config.cors_origins,
            ["https://a.example.com", "https://b.example.com", "*"]
        );
        assert!(!config.compression);
        assert_eq!(config.request_timeout_ms, 45_000);

        for off in ["false", "no", "0", "off"] {
            assert!(
                !parse(&["--compression", off]).unwrap().compression,
                "{off}"
            );
        }
        assert!(parse(&["--compression", "true"]).unwrap().compression);
        // `--no-compression` wins over an explicit (or environment) `true`.
        assert!(
            !parse(&["--compression", "true", "--no-compression"])
                .unwrap()
                .compression
        );
        assert!(parse(&["--request-timeout-ms", "0"]).is_err());
        assert_eq!(
            defaults.header_timeout_ms,
            ServerConfig::DEFAULT_HEADER_TIMEOUT_MS
        );
        assert_eq!(
            parse(&["--header-timeout-ms", "2500"])
                .unwrap()
                .header_timeout_ms,
            2500
        );
        assert!(parse(&["--header-timeout-ms", "0"]).is_err());
    }

    fn parse_tls(args: &[&str]) -> Result<Option<TlsSettings>, clap::Error> {
        let cli = Cli::try_parse_from(["opal", "serve"].iter().chain(args))?;
        let Command::Serve(args) = cli.command;
        Ok(tls_settings(&args.tls))
    }

    #[test]
    fn tls_flags_reach_the_tls_settings() {
        assert_eq!(parse_tls(&[]).unwrap(), None);
        let plain = parse_tls(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .unwrap()
            .unwrap();
        assert_eq!(plain, TlsSettings::new("c.pem", "k.pem"));
        assert_eq!(plain.reload_check, Some(Duration::from_secs(10)));

        let mutual = parse_tls(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--tls-client-auth",
            "optional",
            "--tls-reload-check-s",
            "0",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            mutual.client_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(mutual.client_auth, ClientAuth::Optional);
        assert_eq!(mutual.reload_check, None);

        // A certificate without its key (or the reverse, or a client CA alone) is refused.
        assert!(parse_tls(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse_tls(&["--tls-key", "k.pem"]).is_err());
        assert!(parse_tls(&["--tls-client-ca", "ca.pem"]).is_err());
        assert!(
            parse_tls(&[
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-client-auth",
                "maybe"
            ])
            .is_err()
        );
    }
}
