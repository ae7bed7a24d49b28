//! The guest bench (`tether bench guest`): the real `tether-guest` binary's memory, CPU per
//! heartbeat and static binary size.
//!
//! The bench plays the host: it listens on a UNIX socket, starts `tether-guest --device
//! <socket>`, acknowledges its `init` and challenges it. Two runs of the daemon are measured
//! from its registration to the end: one answering challenges back to back, and one answering
//! one challenge a second (its idle wake-ups included). CPU time is the threads'
//! `se.sum_exec_runtime` (nanoseconds) where the kernel publishes it, else `/proc/<pid>/stat`
//! (10 ms ticks: too coarse for the paced run, whose figure is then only an upper bound).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tether_proto::{encode, Decoder, Message};

use crate::report::{progress, Context};
use crate::sys::{cpu_seconds, status_mib, Reaped};
use crate::{io_err, BenchError};

/// Flags of `tether bench guest`.
#[derive(Debug, Clone, Args)]
pub struct GuestBenchArgs {
    /// The `tether-guest` binary to run [default: next to this `tether`].
    #[arg(long, value_name = "PATH")]
    pub guest_bin: Option<PathBuf>,
    /// The static stripped build whose size is reported [default: the one
    /// scripts/build-static-guest writes under the target directory].
    #[arg(long, value_name = "PATH")]
    pub static_bin: Option<PathBuf>,
    /// Heartbeats answered back to back.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub heartbeats: u64,
    /// Seconds of heartbeats at one a second.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub paced_secs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What the guest bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct GuestReport {
    /// Where, what and when.
    #[serde(flatten)]
    pub context: Context,
    /// The binary measured.
    pub binary: String,
    /// Resident memory while heartbeating at 1 s (`VmRSS`), MiB.
    pub rss_mib: f64,
    /// Peak resident memory (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    /// Heartbeats answered back to back.
    pub heartbeats: u64,
    /// CPU per 1,000 heartbeats back to back, ms.
    pub cpu_ms_per_1000: f64,
    /// Seconds of heartbeats at one a second.
    pub paced_s: f64,
    /// CPU per 1,000 heartbeats at 1 s (idle wake-ups included), ms.
    pub paced_cpu_ms_per_1000: f64,
    /// The static stripped binary, if found.
    pub static_binary: Option<String>,
    /// Its size, MiB.
    pub static_size_mib: Option<f64>,
}

/// Runs the guest bench; `exe` is the running `tether`, used to find the binaries.
pub fn run_guest_bench(
    exe: &Path,
    args: &GuestBenchArgs,
    context: Context,
) -> Result<GuestReport, BenchError> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let binary = args
        .guest_bin
        .clone()
        .unwrap_or_else(|| dir.join("tether-guest"));
    if !binary.exists() {
        return Err(BenchError::Missing {
            what: "the tether-guest binary (cargo build --release -p tether-guest)",
            path: binary,
        });
    }
    let fast = run_guest(&binary, Plan::BackToBack(args.heartbeats))?;
    let paced = run_guest(&binary, Plan::Paced(Duration::from_secs(args.paced_secs)))?;
    let static_bin = args.static_bin.clone().unwrap_or_else(|| {
        let target = dir.parent().unwrap_or(dir);
        target.join("x86_64-unknown-linux-gnu/guest/tether-guest")
    });
    let static_size = std::fs::metadata(&static_bin)
        .ok()
        .map(|m| m.len() as f64 / 1048576.0);
    Ok(GuestReport {
        context,
        binary: binary.display().to_string(),
        rss_mib: paced.rss_mib,
        peak_rss_mib: paced.peak_rss_mib,
        heartbeats: args.heartbeats,
        cpu_ms_per_1000: fast.cpu_s * 1e6 / args.heartbeats.max(1) as f64,
        paced_s: paced.length.as_secs_f64(),
        paced_cpu_ms_per_1000: paced.cpu_s * 1e6 / paced.length.as_secs_f64().max(1.0),
        static_binary: static_size.map(|_| static_bin.display().to_string()),
        static_size_mib: static_size,
    })
}

/// What one run of the daemon does after it registered.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Answer this many challenges, each sent as soon as the last was answered.
    BackToBack(u64),
    /// Answer one challenge a second for this long.
    Paced(Duration),
}

struct Run {
    cpu_s: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    length: Duration,
}

fn run_guest(binary: &Path, plan: Plan) -> Result<Run, BenchError> {
    let temp = tempfile::tempdir().map_err(io_err("create a temporary directory"))?;
    let socket = temp.path().join("channel.sock");
    let listener = UnixListener::bind(&socket).map_err(io_err("listen on the channel socket"))?;
    let mut command = Command::new(binary);
    command
        .arg("--device")
        .arg(&socket)
        .args(["--name", "bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guest = Reaped(command.spawn().map_err(io_err("start tether-guest"))?);
    let mut host = Host::accept(&listener, &mut guest)?;
    let pid = guest.pid();
    let cpu0 = cpu_seconds(pid)?;
    let start = Instant::now();
    drive(&mut host, plan, start)?;
    let length = start.elapsed();
    let run = Run {
        cpu_s: cpu_seconds(pid)? - cpu0,
        rss_mib: status_mib(pid, "VmRSS")?,
        peak_rss_mib: status_mib(pid, "VmHWM")?,
        length,
    };
    guest.terminate(Duration::from_secs(5));
    Ok(run)
}

/// Challenges the daemon as the plan says.
fn drive(host: &mut Host, plan: Plan, start: Instant) -> Result<(), BenchError> {
    match plan {
        Plan::BackToBack(n) => {
            for i in 0..n {
                host.challenge(i as u32)?;
                if i % 1000 == 0 {
                    progress(&format!("tether-guest: {i} of {n} heartbeats"));
                }
            }
        }
        Plan::Paced(length) => {
            let mut i = 0;
            while start.elapsed() < length {
                host.challenge(i)?;
                i += 1;
                let left = length.saturating_sub(start.elapsed());
                progress(&format!(
                    "tether-guest: heartbeat at 1 s, {:.0} s left",
                    left.as_secs_f64()
                ));
                std::thread::sleep(Duration::from_secs(1).min(left));
            }
        }
    }
    Ok(())
}

/// The bench's side of the channel.
struct Host {
    stream: UnixStream,
    decoder: Decoder,
    sequence: u32,
}

impl Host {
    /// Waits for the daemon to connect and register, and acknowledges it.
    fn accept(listener: &UnixListener, guest: &mut Reaped) -> Result<Host, BenchError> {
        listener
            .set_nonblocking(true)
            .map_err(io_err("poll the channel socket"))?;
        let start = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err("accept tether-guest")(e)),
            }
            if guest.exited() || start.elapsed() > Duration::from_secs(10) {
                return Err(BenchError::Child {
                    process: "tether-guest",
                    problem: "did not connect to the channel socket".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stream
            .set_nonblocking(false)
            .map_err(io_err("configure the channel"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err("configure the channel"))?;
        let mut host = Host {
            stream,
            decoder: Decoder::new(),
            sequence: 0,
        };
        let Message::Init(init) = host.next(|m| matches!(m, Message::Init(_)))? else {
            return Err(unexpected());
        };
        host.send(&Message::InitAck {
            invocation_id: init.invocation_id,
        })?;
        Ok(host)
    }

    fn send(&mut self, message: &Message) -> Result<(), BenchError> {
        self.sequence += 1;
        self.stream
            .write_all(&encode(self.sequence, message))
            .map_err(io_err("write to tether-guest"))
    }

    /// Sends one challenge and waits for its answer.
    fn challenge(&mut self, value: u32) -> Result<(), BenchError> {
        let value = value & tether_proto::MAX_INT;
        self.send(&Message::Challenge {
            heartbeat_challenge: value,
        })?;
        self.next(|m| matches!(m, Message::ChallengeResponse(r) if r.heartbeat_response == value))?;
        Ok(())
    }

    /// Reads until a message `wanted` accepts arrives.
    fn next(&mut self, wanted: impl Fn(&Message) -> bool) -> Result<Message, BenchError> {
        let mut buf = [0u8; 2048];
        let mut found = None;
        while found.is_none() {
            let n = self
                .stream
                .read(&mut buf)
                .map_err(io_err("read from tether-guest"))?;
            if n == 0 {
                return Err(unexpected());
            }
            self.decoder.feed(&buf[..n], |frame| {
                if let Ok(m) = frame {
                    if found.is_none() && wanted(&m) {
                        found = Some(m);
                    }
                }
            });
        }
        found.ok_or_else(unexpected)
    }
}

fn unexpected() -> BenchError {
    BenchError::Child {
        process: "tether-guest",
        problem: "closed the channel or answered out of protocol".into(),
    }
}
