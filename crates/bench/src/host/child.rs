//! The load processes seen from the controller: each spawned with its flags, its output
//! lines read by a thread into shared state, commands written to its standard input.
//!
//! A load process holds two descriptors per guest (the listening socket and the accepted
//! connection), so the guests are shared among as many processes as the open-file limit
//! requires ([`LoadGroup`]).

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

/// One load process's share of the guests.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    /// Guests it emulates.
    pub guests: usize,
    /// Of which go silent.
    pub fail: usize,
    /// Its seed (distinct per process, so are its uuids).
    pub seed: u64,
}

impl LoadChild {
    /// Starts `tether bench load` with its guests in `dir`.
    pub fn spawn(
        exe: &Path,
        dir: &Path,
        args: &HostBenchArgs,
        interval: u64,
        share: Share,
        fail_window_ms: u64,
    ) -> Result<LoadChild, BenchError> {
        let mut command = Command::new(exe);
        command
            .args(["bench", "load", "--dir"])
            .arg(dir)
            .arg("--guests")
            .arg(share.guests.to_string())
            .arg("--interval-ms")
            .arg(args.interval_ms.to_string())
            .arg("--expect-interval-ms")
            .arg(interval.to_string())
            .arg("--fail")
            .arg(share.fail.to_string())
            .arg("--fail-window-ms")
            .arg(fail_window_ms.to_string())
            .arg("--seed")
            .arg(share.seed.to_string())
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

    /// Ends the load process's input.
    fn close(&mut self) {
        drop(self.stdin.take());
    }

    /// Collects the result of a load process whose input was closed.
    fn finish(mut self) -> Result<LoadResult, BenchError> {
        self.close();
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

/// All the load processes of one phase, used as one.
pub struct LoadGroup {
    children: Vec<LoadChild>,
}

impl LoadGroup {
    /// Starts enough load processes for `args.guests` guests under the open-file limit
    /// `nofile`, sharing the `fail` silent guests among them.
    pub fn spawn(
        exe: &Path,
        dir: &Path,
        args: &HostBenchArgs,
        interval: u64,
        fail: usize,
        fail_window_ms: u64,
    ) -> Result<LoadGroup, BenchError> {
        let nofile = crate::sys::raise_nofile_limit().unwrap_or(u64::MAX);
        let per_process = (nofile.saturating_sub(64) / 2).max(1) as usize;
        let count = args.guests.div_ceil(per_process).max(1);
        let mut children = Vec::with_capacity(count);
        for i in 0..count {
            let share = Share {
                guests: args.guests / count + usize::from(i < args.guests % count),
                fail: fail / count + usize::from(i < fail % count),
                seed: args.seed.wrapping_add(1000 * i as u64),
            };
            let child = LoadChild::spawn(exe, dir, args, interval, share, fail_window_ms)?;
            children.push(child);
        }
        Ok(LoadGroup { children })
    }

    /// Waits until every process has bound its sockets.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), BenchError> {
        self.children
            .iter_mut()
            .try_for_each(|c| c.wait_ready(limit))
    }

    /// The summed progress.
    pub fn progress(&self) -> Progress {
        self.children.iter().fold(Progress::default(), |sum, c| {
            let p = c.progress();
            Progress {
                heartbeating: sum.heartbeating + p.heartbeating,
                answers: sum.answers + p.answers,
            }
        })
    }

    /// Sends a command line to every process.
    pub fn command(&mut self, line: &str) -> Result<(), BenchError> {
        self.children.iter_mut().try_for_each(|c| c.command(line))
    }

    /// Collects and merges the results. With several processes the merged delay median is
    /// the count-weighted mean of their medians and the p99 the largest of their p99s.
    pub fn finish(mut self) -> Result<LoadResult, BenchError> {
        self.children.iter_mut().for_each(LoadChild::close);
        let mut merged = LoadResult::default();
        let mut weighted_p50 = 0.0;
        for child in self.children {
            let r = child.finish()?;
            merged.challenges += r.challenges;
            merged.answers += r.answers;
            merged.failed.extend(r.failed);
            let d = &mut merged.delay_ms;
            weighted_p50 += r.delay_ms.p50 * r.delay_ms.count as f64;
            d.count += r.delay_ms.count;
            d.p99 = d.p99.max(r.delay_ms.p99);
            d.max = d.max.max(r.delay_ms.max);
        }
        merged.delay_ms.p50 = weighted_p50 / merged.delay_ms.count.max(1) as f64;
        Ok(merged)
    }
}
