//! The simulator's text commands, one per line (what `tether sim` reads on its stdin).
//!
//! ```text
//! hang <vm>              freeze the VM: nothing relayed either way
//! unhealthy <vm> <why>   the guest's health check fails with this reason
//! crash <vm>             the guest daemon dies; the channel stays connected
//! slow <vm> <ms>         delay every guest → host byte by <ms> milliseconds
//! heal <vm>              clear the fault
//! reset <vm>             reset the VM, as QMP system_reset does
//! quit <vm>              quit the VM, as QMP quit does
//! start <vm>             start a quit VM again (restart a running one)
//! list                   show every VM
//! ```
//!
//! `<vm>` is a name (`vm-3`) or a uuid. Parsing only parses: it returns a typed [`Command`]
//! or a [`CommandError`] that says what was expected, never panics, and changes nothing.
//! [`crate::Sim::apply`] carries a command out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest delay `slow` accepts, in milliseconds (one hour).
pub const MAX_SLOW_MS: u64 = 3_600_000;

/// The one-line summary of every command, for help texts and errors.
pub const USAGE: &str = "hang <vm> | unhealthy <vm> <reason> | crash <vm> | slow <vm> <ms> | \
                         heal <vm> | reset <vm> | quit <vm> | start <vm> | list";

/// One simulator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Freeze the VM ([`crate::Fault::Hang`]).
    Hang(String),
    /// Make the guest's health check fail ([`crate::Fault::Unhealthy`]).
    Unhealthy {
        /// VM name or uuid.
        vm: String,
        /// What the health check prints.
        reason: String,
    },
    /// Kill the guest daemon ([`crate::Fault::Crash`]).
    Crash(String),
    /// Delay guest → host bytes ([`crate::Fault::Slow`]).
    Slow {
        /// VM name or uuid.
        vm: String,
        /// The delay.
        delay: Duration,
    },
    /// Clear the VM's fault.
    Heal(String),
    /// Reset the VM (QMP `system_reset`).
    Reset(String),
    /// Quit the VM (QMP `quit`).
    Quit(String),
    /// Start the VM again.
    Start(String),
    /// List the VMs.
    List,
}

/// A line that is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing but whitespace.
    #[error("Empty command; expected one of: {USAGE}")]
    Empty,
    /// The first word is not a command.
    #[error("Unknown command {0:?}; expected one of: {USAGE}")]
    Unknown(String),
    /// The command needs a VM and none was given.
    #[error("`{0}` needs a VM name or uuid, e.g. `{0} vm-1`")]
    MissingVm(&'static str),
    /// `unhealthy` without a reason.
    #[error("`unhealthy` needs a reason after the VM, e.g. `unhealthy vm-1 disk full`")]
    MissingReason,
    /// `slow` without a usable delay.
    #[error("`slow` needs a delay of 0 to {MAX_SLOW_MS} milliseconds after the VM, e.g. `slow vm-1 500`; got {0:?}")]
    BadDelay(String),
    /// Words after a complete command.
    #[error("`{command}` takes no more words; unexpected {extra:?}")]
    Extra {
        /// The command.
        command: &'static str,
        /// What followed it.
        extra: String,
    },
}

impl Command {
    /// The VM the command is for (`None` for `list`).
    pub fn vm(&self) -> Option<&str> {
        match self {
            Command::Hang(vm)
            | Command::Crash(vm)
            | Command::Heal(vm)
            | Command::Reset(vm)
            | Command::Quit(vm)
            | Command::Start(vm)
            | Command::Unhealthy { vm, .. }
            | Command::Slow { vm, .. } => Some(vm),
            Command::List => None,
        }
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(line: &str) -> Result<Command, CommandError> {
        parse(line)
    }
}

/// Parses one command line (surrounding whitespace ignored, the command word in any case).
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let (word, rest) = split_word(line);
    if word.is_empty() {
        return Err(CommandError::Empty);
    }
    let verb = word.to_ascii_lowercase();
    let simple = |name: &'static str, make: fn(String) -> Command| {
        let vm = vm_only(name, rest)?;
        Ok(make(vm))
    };
    match verb.as_str() {
        "hang" => simple("hang", Command::Hang),
        "crash" => simple("crash", Command::Crash),
        "heal" => simple("heal", Command::Heal),
        "reset" => simple("reset", Command::Reset),
        "quit" => simple("quit", Command::Quit),
        "start" => simple("start", Command::Start),
        "unhealthy" => unhealthy(rest),
        "slow" => slow(rest),
        "list" => match rest.trim() {
            "" => Ok(Command::List),
            extra => Err(extra_words("list", extra)),
        },
        _ => Err(CommandError::Unknown(word.chars().take(40).collect())),
    }
}

/// The first whitespace-separated word and the rest of the line after it.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => (&text[..end], &text[end..]),
        None => (text, ""),
    }
}

fn extra_words(command: &'static str, extra: &str) -> CommandError {
    CommandError::Extra {
        command,
        extra: extra.trim().chars().take(40).collect(),
    }
}

fn required_vm<'a>(
    command: &'static str,
    rest: &'a str,
) -> Result<(&'a str, &'a str), CommandError> {
    match split_word(rest) {
        ("", _) => Err(CommandError::MissingVm(command)),
        found => Ok(found),
    }
}

fn vm_only(command: &'static str, rest: &str) -> Result<String, CommandError> {
    let (vm, rest) = required_vm(command, rest)?;
    match rest.trim() {
        "" => Ok(vm.to_owned()),
        extra => Err(extra_words(command, extra)),
    }
}

fn unhealthy(rest: &str) -> Result<Command, CommandError> {
    let (vm, reason) = required_vm("unhealthy", rest)?;
    match reason.trim() {
        "" => Err(CommandError::MissingReason),
        reason => Ok(Command::Unhealthy {
            vm: vm.to_owned(),
            reason: reason.to_owned(),
        }),
    }
}

fn slow(rest: &str) -> Result<Command, CommandError> {
    let (vm, rest) = required_vm("slow", rest)?;
    let (delay, extra) = split_word(rest);
    let digits = delay.strip_suffix("ms").unwrap_or(delay);
    let ms = match digits.parse::<u64>() {
        Ok(ms) if ms <= MAX_SLOW_MS && digits.bytes().all(|b| b.is_ascii_digit()) => ms,
        _ => return Err(CommandError::BadDelay(delay.chars().take(40).collect())),
    };
    match extra.trim() {
        "" => Ok(Command::Slow {
            vm: vm.to_owned(),
            delay: Duration::from_millis(ms),
        }),
        extra => Err(extra_words("slow", extra)),
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Hang(vm) => write!(f, "hang {vm}"),
            Command::Unhealthy { vm, reason } => write!(f, "unhealthy {vm} {reason}"),
            Command::Crash(vm) => write!(f, "crash {vm}"),
            Command::Slow { vm, delay } => write!(f, "slow {vm} {}", delay.as_millis()),
            Command::Heal(vm) => write!(f, "heal {vm}"),
            Command::Reset(vm) => write!(f, "reset {vm}"),
            Command::Quit(vm) => write!(f, "quit {vm}"),
            Command::Start(vm) => write!(f, "start {vm}"),
            Command::List => f.write_str("list"),
        }
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
