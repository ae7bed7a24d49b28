//! The load process seen from the controller: spawned with its flags, its output lines read
//! by a thread into shared state, commands written to its standard input.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::load::LoadResult;
use crate::sys::Reaped;
use crate::{io_err, BenchError};

use super::HostBenchArgs;

/// The latest `progress` line of the load process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Guests answering challenges now.
    pub heartbeating: usize,
    /// Answers sent since the start.
    pub answers: u64,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    progress: Progress,
    result: Option<LoadResult>,
    ended: bool,
}

/// A running load process.
pub struct LoadChild {
    child: Reaped,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<State>>,
}

/// Creates a fresh directory for channel sockets.
pub fn make_dir(path: &Path) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("create {}", path.display())))?;
    Ok(path.to_owned())
}

/// The error for a child that exited during the bench.
pub fn died(process: &'static str) -> BenchError {
    BenchError::Child {
        process,
        problem: "exited before the bench was over".into(),
    }
}

impl LoadChild {
    /// Starts `tether bench load` with its guests in `dir`.
    pub fn spawn(
        exe: &Path,
        dir: &Path,
        args: &HostBenchArgs,
        interval: u64,
        fail: usize,
        fail_window_ms: u64,
    ) -> Result<LoadChild, BenchError> {
        let mut command = Command::new(exe);
        command
            .args(["bench", "load", "--dir"])
            .arg(dir)
            .arg("--guests")
            .arg(args.guests.to_string())
            .arg("--interval-ms")
            .arg(args.interval_ms.to_string())
            .arg("--expect-interval-ms")
            .arg(interval.to_string())
            .arg("--fail")
            .arg(fail.to_string())
            .arg("--fail-window-ms")
            .arg(fail_window_ms.to_string())
            .arg("--seed")
            .arg(args.seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command.spawn().map_err(io_err("start the load process"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let state = Arc::new(Mutex::new(State::default()));
        if let Some(stdout) = stdout {
            let state = state.clone();
            std::thread::spawn(move || read_lines(BufReader::new(stdout), &state));
        }
        Ok(LoadChild {
            child: Reaped(child),
            stdin,
            state,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until every socket is bound.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), BenchError> {
        self.wait_for("bind its sockets", limit, |s| s.ready)
    }

    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&State) -> bool,
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        while !self.with(&done) {
            if self.with(|s| s.ended) || self.child.exited() {
                // The last line may have landed between the two looks.
                return if self.with(&done) {
                    Ok(())
                } else {
                    Err(died("load"))
                };
            }
            if start.elapsed() > limit {
                return Err(BenchError::Child {
                    process: "load",
                    problem: format!("did not {what} within {} s", limit.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The latest progress.
    pub fn progress(&self) -> Progress {
        self.with(|s| s.progress)
    }

    /// Sends one command line (`start`, `stop`).
    pub fn command(&mut self, line: &str) -> Result<(), BenchError> {
        let stdin = self.stdin.as_mut().ok_or_else(|| died("load"))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(io_err("command the load process"))
    }

    /// Ends the load process's input and collects its result.
    pub fn finish(mut self) -> Result<LoadResult, BenchError> {
        drop(self.stdin.take());
        self.wait_for("report its result", Duration::from_secs(30), |s| {
            s.result.is_some()
        })?;
        let result = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .result
            .take();
        let _ = self.child.0.wait();
        result.ok_or_else(|| died("load"))
    }
}

fn read_lines(reader: impl BufRead, state: &Mutex<State>) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let (word, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match word {
            "ready" => state.ready = true,
            "progress" => {
                let mut numbers = rest.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                let heartbeating = numbers.next().unwrap_or(0) as usize;
                let answers = numbers.nth(1).unwrap_or(0);
                state.progress = Progress {
                    heartbeating,
                    answers,
                };
            }
            "result" => state.result = serde_json::from_str(rest).ok(),
            _ => {}
        }
    }
    state.lock().unwrap_or_else(PoisonError::into_inner).ended = true;
}
