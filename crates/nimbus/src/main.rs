//! The `nimbus` binary: the server (`nimbus up`) and the CLI that talks to it. Wiring only;
//! the work happens in the library crates.

/// `println!` for what the CLI prints: a reader that went away (`nimbus ls | head`) ends the
/// command quietly, as it ends other Unix tools, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

mod api_cmd;
mod bench;
mod cli;
mod commands;
mod examples;
mod metrics_view;
mod queue_cmd;
mod table;
mod up;

use clap::Parser;

/// The argument that makes this binary act as the sandbox helper (see nimbus-sandbox).
pub const SANDBOX_HELPER_ARG: &str = "__sandbox-init";
/// The argument that makes this binary the sandbox launcher, the fork server of helpers.
pub const SANDBOX_LAUNCHER_ARG: &str = "__sandbox-launcher";

fn main() {
    // The sandbox helper and launcher must run before anything else starts threads.
    match std::env::args_os().nth(1) {
        Some(a) if a == SANDBOX_HELPER_ARG => nimbus_sandbox::helper_main(),
        Some(a) if a == SANDBOX_LAUNCHER_ARG => nimbus_sandbox::launcher_main(),
        _ => {}
    }
    let args = cli::Cli::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", sentence(&e));
            1
        }
    };
    std::process::exit(code);
}

/// An error chain as one line.
fn sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}

fn run(args: cli::Cli) -> anyhow::Result<()> {
    // The server's configuration is read first: it says how many workers the runtime gets.
    let server = match &args.command {
        cli::Command::Up(up) => Some(up::Config::build(up, &args.global)?),
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(cfg) = &server {
        builder.worker_threads(cfg.workers);
        if !cfg.idle_spin.is_zero() {
            let budget = cfg.idle_spin;
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            builder.on_thread_park(move || nimbus_sandbox::idle::spin_until_ready(budget, cpus));
        }
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(async move {
        if let Some(cfg) = server {
            return up::run(cfg).await;
        }
        match args.command {
            cli::Command::Doctor(d) => commands::doctor(d),
            cli::Command::Bench(b) => bench::run(b).await,
            other => commands::run(args.global, other).await,
        }
    })
}
