//! What the bench reads from the system: a process's CPU time and peak memory from `/proc`,
//! the machine's cores and CPU model, the git revision, and the open-file limit.
//!
//! CPU time comes from the scheduler's nanosecond count of each thread
//! (`/proc/<pid>/task/*/sched`) where the kernel publishes it, else from `/proc/<pid>/stat`.
//! The split between user and kernel time exists only in `stat`, in clock ticks of 1/100 s
//! (Linux's fixed `USER_HZ`), so the kernel share is only as fine as 10 ms over the window.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde::Serialize;

use crate::{io_err, BenchError};

/// Clock ticks per second in `/proc/<pid>/stat` (Linux `USER_HZ`).
const USER_HZ: f64 = 100.0;

/// Raises the soft open-file limit to the hard limit, so one process can hold thousands of
/// guest sockets. Returns the limit now in force (`None`: unlimited or unknown).
pub fn raise_nofile_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// CPU time (user + system) used so far by process `pid`, in seconds, as precisely as the
/// kernel tells it.
pub fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    match exec_runtime_seconds(pid) {
        Some(seconds) => Ok(seconds),
        None => cpu_split_seconds(pid).map(|(user, system)| user + system),
    }
}

/// A reading of a process's CPU time, for the difference between two of them.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    total_s: f64,
    system_s: f64,
}

impl CpuSample {
    /// Reads process `pid`'s CPU time now.
    pub fn read(pid: u32) -> Result<CpuSample, BenchError> {
        let (_, system_s) = cpu_split_seconds(pid)?;
        Ok(CpuSample {
            total_s: cpu_seconds(pid)?,
            system_s,
        })
    }

    /// CPU seconds from `earlier` to `self`: (total, of which in the kernel).
    pub fn since(self, earlier: CpuSample) -> (f64, f64) {
        let total = (self.total_s - earlier.total_s).max(0.0);
        let system = (self.system_s - earlier.system_s).clamp(0.0, total);
        (total, system)
    }
}

/// CPU time used so far by process `pid`, in seconds: (user, system).
pub fn cpu_split_seconds(pid: u32) -> Result<(f64, f64), BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("read {path}")))?;
    parse_stat_cpu(&text)
        .map(|(user, system)| (user as f64 / USER_HZ, system as f64 / USER_HZ))
        .ok_or_else(|| BenchError::Child {
            process: "measured",
            problem: format!("has an unreadable {path}"),
        })
}

/// `(utime, stime)` from the text of `/proc/<pid>/stat`.
fn parse_stat_cpu(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain. utime and stime are fields 14 and 15, i.e. the 12th and 13th after the name.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// CPU time used so far by all live threads of `pid`, in seconds, with nanosecond precision
/// (`se.sum_exec_runtime` of `/proc/<pid>/task/*/sched`); `None` when the kernel does not
/// publish it. Threads that have exited are not counted.
pub fn exec_runtime_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total_ms = 0.0;
    for task in tasks.filter_map(Result::ok) {
        let text = std::fs::read_to_string(task.path().join("sched")).ok()?;
        total_ms += parse_sum_exec_ms(&text)?;
    }
    Some(total_ms / 1000.0)
}

fn parse_sum_exec_ms(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("se.sum_exec_runtime"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("read {path}")))?;
    parse_status_kib(&text, field)
        .map(|kib| kib as f64 / 1024.0)
        .ok_or_else(|| BenchError::Child {
            process: "measured",
            problem: format!("has no {field} in {path}"),
        })
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine a figure was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
}

impl Machine {
    /// Reads the machine's description; unknown parts are said to be so.
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine { cores, cpu_model }
    }
}

/// `git rev-parse --short HEAD` in `dir`, or `unknown`.
pub fn git_revision(dir: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A child process that is killed and reaped when dropped, so a failed bench leaves nothing
/// running.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Reaped {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether the child has exited already.
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }

    /// Asks the child to stop with SIGTERM and waits up to `grace` before killing it.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < grace {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_skips_a_command_name_with_spaces() {
        let text = "42 (a b) S 1 42 42 0 -1 4194304 100 0 0 0 250 31 0 0 20 0 1 0 5 1 1";
        assert_eq!(parse_stat_cpu(text), Some((250, 31)));
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn sched_runtime_is_read_in_ms() {
        let text = "se.exec_start   :  8551045.536322\nse.sum_exec_runtime   :   12.500000\n";
        assert_eq!(parse_sum_exec_ms(text), Some(12.5));
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(status_mib(pid, "VmHWM").unwrap() > 0.0);
    }
}
