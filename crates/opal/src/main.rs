//! The `opal` binary: parses the command line, installs tracing and hands over to a subcommand.

mod admin_key;
mod cli;
mod key_file;
mod serve;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // Held until `main` returns: dropping it flushes the log lines still queued.
    let _log_writer = install_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("opal")
        .build()?;
    match cli.command {
        cli::Command::Serve(args) => runtime.block_on(serve::serve(args)),
    }
}

fn install_tracing(format: cli::LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr so that stdout carries only what a person or script should read
    // (the listening URLs and, once, the generated admin key). A writer thread takes the lines
    // from the request threads and writes whatever has queued up in one `write` (the buffer is
    // flushed whenever the queue runs empty), so an access-log line costs no system call on the
    // request path. When the queue is full, logging waits rather than dropping lines.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("opal-log-output")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder.init(),
    }
    guard
}
