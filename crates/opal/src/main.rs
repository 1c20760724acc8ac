//! The `opal` binary: parses the command line, installs tracing and hands over to a subcommand.

/// mimalloc rather than glibc's malloc: a publish makes about ninety small allocations, dozens of
/// them in one size class, more than glibc's per-thread cache keeps (seven per class), so glibc
/// serves many from its arenas (fast bins, consolidation). That cost a single-message publish
/// about an eighth of its instructions (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access_line;
mod admin_key;
mod cli;
mod key_file;
mod log_writer;
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

fn install_tracing(format: cli::LogFormat) -> log_writer::FlushGuard<std::io::Stderr> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr so that stdout carries only what a person or script should read
    // (the listening URLs and, once, the generated admin key), through a buffer written every
    // 50 ms by a thread of its own (`log_writer`), so that an access-log line costs the request
    // thread no system call and no wake-up.
    let (writer, guard) = log_writer::batched(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder
            .event_format(access_line::AccessLines::new(
                tracing_subscriber::fmt::format::Format::default(),
            ))
            .init(),
    }
    guard
}
