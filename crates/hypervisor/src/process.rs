//! Running an external command for a backend: argv only, bounded in time and in output.
//!
//! The program is started directly (never through a shell) in a process group of its own, with
//! stdin and stdout closed and stderr captured up to [`STDERR_LIMIT`] bytes. If it has not
//! finished (and closed its stderr) within the timeout, the whole group is killed, so a stuck
//! script and anything it started cannot pile up over repeated recoveries.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::HypervisorError;

/// Most bytes of a command's stderr kept for the error message and the log.
pub const STDERR_LIMIT: usize = 4096;

/// How a finished command ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// The start of its stderr, lossily decoded and trimmed.
    pub stderr: String,
}

/// Runs `argv` (program first) and waits at most `timeout` for it to exit.
///
/// `display` names the command in errors. Spawn failures are [`HypervisorError::Io`]; a
/// timeout kills the process group and gives [`HypervisorError::Timeout`].
pub async fn run(
    argv: &[String],
    display: &str,
    timeout: Duration,
) -> Result<Finished, HypervisorError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(HypervisorError::Protocol("empty command".to_owned()));
    };
    let mut child = spawn(program, args)
        .await
        .map_err(|source| HypervisorError::Io {
            target: display.to_owned(),
            source,
        })?;
    let stderr = child.stderr.take();
    let waited = tokio::time::timeout(timeout, async {
        let (text, status) = tokio::join!(read_bounded(stderr), child.wait());
        status.map(|status| (status, text))
    })
    .await;
    match waited {
        Ok(Ok((status, stderr))) => Ok(Finished { status, stderr }),
        Ok(Err(source)) => Err(HypervisorError::Io {
            target: display.to_owned(),
            source,
        }),
        Err(_) => {
            kill_group(child.id());
            let _ = child.start_kill();
            // Reap it so that no zombie is left; SIGKILL makes this quick.
            let _ = child.wait().await;
            Err(HypervisorError::Timeout {
                command: display.to_owned(),
            })
        }
    }
}

/// How often a start refused with `ETXTBSY` is tried again, and how long apart.
const BUSY_RETRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(10);

/// Starts the program. A script that was just written (a recovery command the operator
/// replaced a moment ago) can be refused with `ETXTBSY` while another process still holds it
/// open for writing, e.g. a child forked before it could exec; such a start is tried again a
/// few times, 10 ms apart.
async fn spawn(program: &str, args: &[String]) -> std::io::Result<tokio::process::Child> {
    let start = || {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    };
    let mut result = start();
    for _ in 0..BUSY_RETRIES {
        match &result {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                tokio::time::sleep(BUSY_WAIT).await;
                result = start();
            }
            _ => break,
        }
    }
    result
}

/// Reads stderr to its end, keeping the first [`STDERR_LIMIT`] bytes and discarding the rest
/// (still draining it, so that the child never blocks on a full pipe).
async fn read_bounded(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDERR_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// Sends SIGKILL to the process group led by `pid` (the child was made a group leader).
fn kill_group(pid: Option<u32>) {
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
            tracing::debug!(error = %e, "killing a timed-out command's process group failed");
        }
    }
}

/// A printable form of an argv for errors and logs: words joined by spaces, control
/// characters escaped so that a guest-chosen name cannot forge log lines.
pub fn display_argv(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|w| {
            let escaped: String = w.escape_debug().collect();
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("\"{escaped}\"")
            } else {
                escaped
            }
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_and_quotes() {
        let argv = ["/bin/x", "a b", "", "l\ninjected"].map(String::from);
        assert_eq!(display_argv(&argv), r#"/bin/x "a b" "" "l\ninjected""#);
    }
}
