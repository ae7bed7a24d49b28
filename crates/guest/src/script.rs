//! Running the health-check and event-notification scripts.
//!
//! A script runs in its own process group with stdin and stderr on `/dev/null`. Its stdout is
//! read as it comes: the first [`MAX_OUTPUT`] bytes are kept and the rest is read and thrown
//! away, so a chatty child never blocks on a full pipe and never costs memory. Once the child
//! exits, whatever it left in the pipe is collected for at most [`OUTPUT_GRACE`] (a background
//! grandchild may hold the pipe open for ever). Dropping a [`ScriptRun`] before it finishes
//! kills the whole process group with SIGKILL: that is how a stale health check or an aborted
//! vote is stopped.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

/// Bytes of stdout kept from one run.
pub const MAX_OUTPUT: usize = 256;
/// How long stdout is still read after the child has exited.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// How a script run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptOutcome {
    /// The exit status, or `None` when the script was killed by a signal or could not start.
    pub code: Option<i32>,
    /// The first [`MAX_OUTPUT`] bytes of stdout (invalid UTF-8 replaced), or why the script
    /// could not start.
    pub output: String,
    /// The script could not be started at all.
    pub failed_to_start: bool,
}

impl ScriptOutcome {
    /// The first line of the output, trimmed.
    pub fn first_line(&self) -> &str {
        self.output.lines().next().unwrap_or("").trim()
    }
}

/// A running script; resolves when it has exited. Dropping it kills the script.
pub type ScriptRun = Pin<Box<dyn Future<Output = ScriptOutcome> + Send>>;

/// How often a start refused with `ETXTBSY` is tried again, and how long apart.
const BUSY_RETRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(10);

/// Starts `program` with `args`. A script that was just written can be refused with
/// `ETXTBSY` while another thread of this process forks (the child holds the writer's
/// descriptor until it execs); such a start is tried again a few times, 10 ms apart.
pub fn spawn(program: &Path, args: &[&str]) -> ScriptRun {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    match start(program, &args) {
        Ok(child) => {
            let guard = GroupGuard::of(&child);
            Box::pin(collect(child, guard))
        }
        Err(e) if is_busy(&e) => {
            let program = program.to_path_buf();
            Box::pin(async move {
                let mut last = e;
                for _ in 0..BUSY_RETRIES {
                    tokio::time::sleep(BUSY_WAIT).await;
                    match start(&program, &args) {
                        Ok(child) => {
                            let guard = GroupGuard::of(&child);
                            return collect(child, guard).await;
                        }
                        Err(e) if is_busy(&e) => last = e,
                        Err(e) => return not_started(&program, &e),
                    }
                }
                not_started(&program, &last)
            })
        }
        Err(e) => Box::pin(std::future::ready(not_started(program, &e))),
    }
}

fn start(program: &Path, args: &[String]) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn is_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ExecutableFileBusy
}

fn not_started(program: &Path, e: &std::io::Error) -> ScriptOutcome {
    ScriptOutcome {
        code: None,
        output: format!("Cannot run {}: {e}", program.display()),
        failed_to_start: true,
    }
}

/// Kills the process group of a script that has not been waited for, when dropped.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn of(child: &Child) -> GroupGuard {
        GroupGuard(child.id().and_then(|id| Pid::from_raw(id as i32)))
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // The group may already be gone; there is nothing to do about an error here.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

async fn collect(mut child: Child, mut guard: GroupGuard) -> ScriptOutcome {
    let mut capture = Capture::new(child.stdout.take());
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = capture.step(), if !capture.done => {}
        }
    };
    guard.0 = None;
    // Cancelling a read loses nothing: the bytes stay in the pipe.
    let _ = tokio::time::timeout(OUTPUT_GRACE, capture.finish()).await;
    ScriptOutcome {
        code: status.ok().and_then(|s| s.code()),
        output: String::from_utf8_lossy(&capture.kept).into_owned(),
        failed_to_start: false,
    }
}

/// Reads a child's stdout, keeping the first [`MAX_OUTPUT`] bytes.
struct Capture {
    stdout: Option<ChildStdout>,
    kept: Vec<u8>,
    done: bool,
}

impl Capture {
    fn new(stdout: Option<ChildStdout>) -> Capture {
        Capture {
            done: stdout.is_none(),
            stdout,
            kept: Vec::new(),
        }
    }

    /// Reads once; marks the capture done at end of file or on an error.
    async fn step(&mut self) {
        let Some(stdout) = self.stdout.as_mut() else {
            self.done = true;
            return;
        };
        let mut chunk = [0u8; 512];
        match stdout.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.done = true;
                self.stdout = None;
            }
            Ok(n) => {
                let room = MAX_OUTPUT - self.kept.len();
                self.kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }

    async fn finish(&mut self) {
        while !self.done {
            self.step().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ScriptRun {
        spawn(Path::new("/bin/sh"), &["-c", script])
    }

    #[tokio::test]
    async fn exit_code_and_output_are_reported() {
        let out = sh("echo 'not well'; echo second; exit 1").await;
        assert_eq!(out.code, Some(1));
        assert_eq!(out.output, "not well\nsecond\n");
        assert_eq!(out.first_line(), "not well");
    }

    #[tokio::test]
    async fn arguments_are_passed_in_order() {
        let out = spawn(Path::new("/bin/echo"), &["revocable", "stop"]).await;
        assert_eq!(
            (out.code, out.output.as_str()),
            (Some(0), "revocable stop\n")
        );
    }

    #[tokio::test]
    async fn a_chatty_child_is_read_to_the_end_and_cut() {
        let out = sh("head -c 1000000 /dev/zero | tr '\\0' x; exit 3").await;
        assert_eq!(out.code, Some(3));
        assert_eq!(out.output, "x".repeat(MAX_OUTPUT));
    }

    #[tokio::test]
    async fn a_background_grandchild_holding_stdout_does_not_hold_the_result() {
        let started = std::time::Instant::now();
        let out = sh("echo done; sleep 30 & exit 0").await;
        assert_eq!((out.code, out.output.as_str()), (Some(0), "done\n"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_script_fails_to_start() {
        let out = spawn(Path::new("/nonexistent/script"), &[]).await;
        assert!(out.failed_to_start);
        assert_eq!(out.code, None);
        assert!(out.output.contains("/nonexistent/script"), "{}", out.output);
    }

    #[tokio::test]
    async fn dropping_a_run_kills_the_whole_group() {
        let dir = tether_testkit::temp_dir();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let run = sh(&script);
        tether_testkit::wait_for(
            "the script wrote its child's pid",
            Duration::from_secs(10),
            || std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')),
        )
        .await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(run);
        let proc = format!("/proc/{pid}/stat");
        tether_testkit::wait_for("the grandchild is killed", Duration::from_secs(10), || {
            std::fs::read_to_string(&proc).map_or(true, |s| s.contains(") Z "))
        })
        .await;
    }
}
