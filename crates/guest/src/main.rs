//! `tether-guest`: the guest heartbeat daemon binary.
//!
//! Reads the flags and `guest_heartbeat.conf`, installs the log subscriber (stderr and
//! syslog), and runs one [`Daemon`] on a single-threaded runtime until SIGTERM or SIGINT.
//! Exit statuses are listed in `--help` and in the library's documentation.

use std::path::Path;
use std::process::ExitCode;

use tether_guest::cli::{self, Command, Flags, Version, DEFAULT_CONFIG, USAGE};
use tether_guest::logging::{Logger, SYSLOG_SOCKET};
use tether_guest::{error_chain as chain, ConfigError, Daemon, GuestConfig, Options};
use tokio::signal::unix::{signal, SignalKind};

const BAD_USAGE: u8 = 2;
const FAILURE: u8 = 1;

fn main() -> ExitCode {
    let flags = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(flags)) => flags,
        Ok(Command::Help) => return print(USAGE),
        Ok(Command::Version) => return print(&format!("{Version}\n")),
        Err(e) => return fail(BAD_USAGE, &format!("{e} (see --help)")),
    };
    install_logger(&flags);
    let config = match load_config(flags.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(BAD_USAGE, &e),
    };
    let options = Options {
        device: flags.device,
        name: flags.name.unwrap_or_else(cli::default_name),
        config,
        api_socket: Some(flags.api_socket),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(FAILURE, &format!("Cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let shutdown =
            shutdown_signal().map_err(|e| (FAILURE, format!("Cannot handle signals: {e}")))?;
        Daemon::new(options)
            .run(shutdown)
            .await
            .map_err(|e| (e.exit_code(), chain(&e)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => fail(code, &message),
    }
}

fn print(text: &str) -> ExitCode {
    print!("{text}");
    ExitCode::SUCCESS
}

/// Prints one line to stderr and returns the exit status.
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("tether-guest: {message}");
    ExitCode::from(code)
}

/// Logs to stderr and syslog; under systemd, where both reach the journal, to syslog only.
fn install_logger(flags: &Flags) {
    let level = if flags.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let logger = Logger::new(level, true, Path::new(SYSLOG_SOCKET));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let stderr = !(journal && logger.has_syslog());
    // Nothing was installed before; failing here would only mean no logs.
    let _ = tracing::subscriber::set_global_default(logger.with_stderr(stderr));
}

/// The explicit `--config` file must exist; the default one may be missing.
fn load_config(explicit: Option<&Path>) -> Result<GuestConfig, String> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG));
    match GuestConfig::load(path) {
        Ok(config) => Ok(config),
        Err(ConfigError::Missing(_)) if explicit.is_none() => {
            tracing::info!(path = %path.display(), "no configuration file; using built-in defaults");
            Ok(GuestConfig::default())
        }
        Err(e @ ConfigError::Invalid { .. }) => Err(format!("{}: {e}", path.display())),
        Err(e) => Err(chain(&e)),
    }
}

/// Resolves at the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping on signal");
    })
}
