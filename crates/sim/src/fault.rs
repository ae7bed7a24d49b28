//! What can be wrong with a simulated VM ([`Fault`]), what state it is in ([`VmStatus`]), and
//! what the channel relay must do about both ([`Flow`]).

use std::fmt;
use std::time::Duration;

/// A fault injected into a simulated VM. Settable at any time; a reset clears it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing wrong.
    #[default]
    None,
    /// The VM is frozen: nothing is relayed in either direction on the channel.
    Hang,
    /// The guest's health-check script reports unhealthy with this reason.
    Unhealthy(String),
    /// The guest daemon is gone; the channel stays connected but idle.
    Crash,
    /// Every guest → host byte is delayed by this much.
    Slow(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Hang => f.write_str("hang"),
            Fault::Unhealthy(reason) => write!(f, "unhealthy ({reason})"),
            Fault::Crash => f.write_str("crash"),
            Fault::Slow(delay) => write!(f, "slow ({} ms)", delay.as_millis()),
        }
    }
}

/// The run state of a simulated VM, as QMP `query-status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStatus {
    /// Running (`"running"`).
    Running,
    /// Paused by QMP `stop` (`"paused"`) until `cont`.
    Paused,
    /// Quit: sockets gone, nothing runs until it is started again.
    Stopped,
}

impl VmStatus {
    /// The word used in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Paused => "paused",
            VmStatus::Stopped => "stopped",
        }
    }
}

impl fmt::Display for VmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the relay and the guest's boot follow, derived from the status and the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flow {
    /// Paused by QMP `stop`: nothing relayed, and a booting guest waits.
    pub paused: bool,
    /// Hung: nothing relayed.
    pub hung: bool,
    /// Delay of guest → host bytes.
    pub slow: Duration,
    /// Counts boots (start, reset, crash): a guest connection from an earlier boot is dropped.
    pub boot: u64,
}

impl Flow {
    /// The flow for a VM in `status` with `fault`.
    pub fn of(status: VmStatus, fault: &Fault, boot: u64) -> Flow {
        Flow {
            boot,
            paused: status == VmStatus::Paused,
            hung: *fault == Fault::Hang,
            slow: match fault {
                Fault::Slow(delay) => *delay,
                _ => Duration::ZERO,
            },
        }
    }

    /// Whether nothing may be relayed now.
    pub fn frozen(self) -> bool {
        self.paused || self.hung
    }
}
