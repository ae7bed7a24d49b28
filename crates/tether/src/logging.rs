//! Log output of the `tether` binary: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`, or `warn` where a subcommand owns the terminal, as the demo does).

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber with `default` as the filter when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
