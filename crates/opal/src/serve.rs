//! `opal serve`: open embedded storage, bind the listener, serve until SIGTERM or SIGINT, drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opal_core::Broker;
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use opal_server::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::admin_key::{self, AdminKey};
use crate::cli::ServeArgs;

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = EmbeddedConfig::new(&args.data_dir);
    config.fsync = args.fsync;
    config.segment_max_bytes = args.segment_max_bytes;
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::open(config))
        .await?
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    let broker: Arc<dyn Broker> = Arc::new(broker);

    let admin = admin_key::settle(args.admin_key.as_deref(), broker.as_ref()).await?;
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", args.http_addr))?;
    let local = listener.local_addr()?;

    announce(&local, &admin, &args);

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let mut server_config = ServerConfig::new(admin.hash());
    server_config.max_body_bytes = args.max_body_bytes;
    let server = tokio::spawn(opal_server::run(
        listener,
        server_config,
        Arc::clone(&broker),
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
    broker.close().await.context("closing storage")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[allow(clippy::print_stdout)] // stdout is for the operator: where to connect, and the key once.
fn announce(local: &std::net::SocketAddr, admin: &AdminKey, args: &ServeArgs) {
    println!("opal {} serving", env!("CARGO_PKG_VERSION"));
    println!("  http:     http://{local}/v1");
    println!("  health:   http://{local}/healthz");
    println!("  data dir: {}", args.data_dir.display());
    println!("  fsync:    {}", args.fsync);
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
