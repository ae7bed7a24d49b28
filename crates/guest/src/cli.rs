//! The `tether-guest` command line: a small hand-written flag parser (the daemon's dependency
//! tree stays small), the defaults, and the usage text.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/tether/guest_heartbeat.conf";
/// The heartbeat port when `--device` is not given.
pub const DEFAULT_DEVICE: &str = "/dev/virtio-ports/cgcs.heartbeat";
/// Where applications register when `--api-socket` is not given.
pub const DEFAULT_API_SOCKET: &str = guest_heartbeat_api::DEFAULT_SOCKET;

/// The `--help` text.
pub const USAGE: &str = "\
tether-guest: the guest heartbeat daemon of tether (StarlingX Guest-Client compatible)

Usage: tether-guest [--config FILE] [--device PATH] [--api-socket PATH] [--name NAME] [--debug]
       tether-guest --help | --version

Options:
  --config FILE   settings (default /etc/tether/guest_heartbeat.conf; when that default
                  file is missing, built-in defaults are used)
  --device PATH   the heartbeat virtio-serial port, or a UNIX socket to connect to
                  (default /dev/virtio-ports/cgcs.heartbeat)
  --api-socket PATH
                  where applications register (default /var/run/.guest_heartbeat_api)
  --name NAME     instance name sent to the host (default: this host's name)
  --debug         log debug messages too
  -h, --help      print this text
  -V, --version   print the version

Logs go to stderr and to syslog (facility daemon, ident Guest-Client).
SIGTERM or SIGINT: tell the host we are leaving (exit message) and stop.

Exit status:
  0  clean shutdown
  1  other failure
  2  bad flags or configuration
  6  the device does not exist (heartbeat is not configured for this VM)
";

/// The flags of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// `--config`, if given.
    pub config: Option<PathBuf>,
    /// `--device`, or the default.
    pub device: PathBuf,
    /// `--api-socket`, or the default.
    pub api_socket: PathBuf,
    /// `--name`, if given.
    pub name: Option<String>,
    /// `--debug`.
    pub debug: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon.
    Run(Flags),
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

/// A command line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A flag that does not exist.
    #[error("unknown option {0}")]
    Unknown(String),
    /// A flag given without its value.
    #[error("option {0} needs a value")]
    MissingValue(&'static str),
    /// A flag given twice.
    #[error("option {0} given twice")]
    Repeated(&'static str),
    /// A value that is not valid UTF-8 where text is needed.
    #[error("the value of {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// An empty value.
    #[error("the value of {0} is empty")]
    Empty(&'static str),
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut config = None;
    let mut device = None;
    let mut api_socket = None;
    let mut name = None;
    let mut debug = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(OsString::from(v))),
            _ => (text.into_owned(), None),
        };
        let mut value = |key: &'static str| -> Result<OsString, UsageError> {
            let v = inline
                .clone()
                .or_else(|| args.next())
                .ok_or(UsageError::MissingValue(key))?;
            if v.is_empty() {
                return Err(UsageError::Empty(key));
            }
            Ok(v)
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--config" => set_once(&mut config, "--config", value("--config")?.into())?,
            "--device" => set_once(&mut device, "--device", value("--device")?.into())?,
            "--api-socket" => {
                set_once(
                    &mut api_socket,
                    "--api-socket",
                    value("--api-socket")?.into(),
                )?;
            }
            "--name" => {
                let v = value("--name")?
                    .into_string()
                    .map_err(|_| UsageError::NotUtf8("--name"))?;
                set_once(&mut name, "--name", v)?;
            }
            "--debug" if inline.is_none() => debug = true,
            _ => return Err(UsageError::Unknown(printable(&flag))),
        }
    }
    Ok(Command::Run(Flags {
        config,
        device: device.unwrap_or_else(|| PathBuf::from(DEFAULT_DEVICE)),
        api_socket: api_socket.unwrap_or_else(|| PathBuf::from(DEFAULT_API_SOCKET)),
        name,
        debug,
    }))
}

fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), UsageError> {
    if slot.replace(value).is_some() {
        return Err(UsageError::Repeated(key));
    }
    Ok(())
}

/// An argument cut short with control characters shown escaped, for a one-line message.
fn printable(arg: &str) -> String {
    let cut: String = arg.chars().take(40).collect();
    cut.escape_debug().to_string()
}

/// This host's name from `uname` (no name service lookups).
pub fn default_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name.into_owned()
    }
}

/// The version line for `--version`.
pub struct Version;

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tether-guest {} (heartbeat protocol v{})",
            env!("CARGO_PKG_VERSION"),
            tether_proto::VERSION
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults() {
        let expected = Flags {
            config: None,
            device: DEFAULT_DEVICE.into(),
            api_socket: DEFAULT_API_SOCKET.into(),
            name: None,
            debug: false,
        };
        assert_eq!(run(&[]), Ok(Command::Run(expected)));
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let expected = Command::Run(Flags {
            config: Some("/c".into()),
            device: "/d".into(),
            api_socket: "/a".into(),
            name: Some("vm 7".into()),
            debug: true,
        });
        let spaced = [
            "--config",
            "/c",
            "--device",
            "/d",
            "--api-socket",
            "/a",
            "--name",
            "vm 7",
            "--debug",
        ];
        assert_eq!(run(&spaced), Ok(expected.clone()));
        assert_eq!(
            run(&[
                "--config=/c",
                "--device=/d",
                "--api-socket=/a",
                "--name=vm 7",
                "--debug"
            ]),
            Ok(expected)
        );
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(run(&["--device", "/d", "--help"]), Ok(Command::Help));
        assert_eq!(run(&["-h"]), Ok(Command::Help));
        assert_eq!(run(&["--version"]), Ok(Command::Version));
        assert_eq!(run(&["-V"]), Ok(Command::Version));
        assert!(Version.to_string().starts_with("tether-guest "));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            run(&["--bogus"]),
            Err(UsageError::Unknown("--bogus".into()))
        );
        assert_eq!(run(&["stray"]), Err(UsageError::Unknown("stray".into())));
        assert_eq!(
            run(&["--config"]),
            Err(UsageError::MissingValue("--config"))
        );
        assert_eq!(run(&["--name="]), Err(UsageError::Empty("--name")));
        assert_eq!(
            run(&["--debug=yes"]),
            Err(UsageError::Unknown("--debug".into()))
        );
        assert_eq!(
            run(&["--device", "/a", "--device", "/b"]),
            Err(UsageError::Repeated("--device"))
        );
        let message = run(&["--x\n\u{1b}"]).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn the_default_name_is_the_host_name() {
        assert!(!default_name().is_empty());
    }
}
