//! The host bench (`tether bench host`): the real agent against many emulated guests, and
//! the null agent against the same number, each measured from outside through `/proc`.
//!
//! Phase one starts a load process ([`crate::load`]) with N guests, then the agent as its own
//! process on their channel directory. Once every guest is answering, the measured window
//! opens: the agent's CPU time is read at both ends, K guests fall silent at random moments,
//! and the window's challenges and answers are counted guest-side. After the window the peak
//! RSS is read, the agent is stopped and its journal matched against the failures. Phase two
//! repeats the steady part with the null agent in place of the agent, for the baseline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tether_proto::MIN_INTERVAL_MS;

/// Shortest interval the bench runs: the agent grants down to 50 ms when told to
/// (`--min-interval-ms`), which the bench does for intervals below the default 400 ms floor.
const BENCH_MIN_INTERVAL_MS: u32 = 50;

use crate::journal;
use crate::load::LoadResult;
use crate::report::{progress, Context};
use crate::stats::Spread;
use crate::sys::{status_mib, CpuSample, Reaped};
use crate::{io_err, BenchError};

mod child;

use child::LoadGroup;

/// Flags of `tether bench host`.
#[derive(Debug, Clone, Args)]
pub struct HostBenchArgs {
    /// Emulated guests.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub guests: usize,
    /// Heartbeat interval the guests ask for (at least 50 ms; below 400 ms the agent is
    /// started with `--min-interval-ms` so that it grants it).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u32,
    /// Length of the measured window, in seconds, once every guest is heartbeating.
    #[arg(long, default_value_t = 20, value_name = "S")]
    pub duration: u64,
    /// Guests that go silent at random moments of the window.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub fail: usize,
    /// The agent's `--miss-threshold`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub miss_threshold: u32,
    /// Length of the baseline's measured window [default: half of --duration, at least 3].
    #[arg(long, value_name = "S")]
    pub baseline_duration: Option<u64>,
    /// Seconds allowed for every guest to start heartbeating.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub settle_timeout: u64,
    /// Seed for the choice and timing of the failures.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep the working directory (agent log, journal) and print its path, for a look after.
    #[arg(long)]
    pub keep: bool,
}

/// Everything the host bench measured; the JSON keys are pinned.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Where, what and when.
    #[serde(flatten)]
    pub context: Context,
    /// Emulated guests.
    pub guests: usize,
    /// Interval the guests asked for.
    pub interval_ms: u32,
    /// Interval the agent uses (raised to its minimum).
    pub effective_interval_ms: u64,
    /// Length of the measured window.
    pub duration_s: f64,
    /// The agent's miss threshold.
    pub miss_threshold: u32,
    /// Seconds until every guest was heartbeating.
    pub setup_s: f64,
    /// Agent CPU (user + sys) over the window, % of one core.
    pub agent_cpu_percent: f64,
    /// The part of `agent_cpu_percent` spent in the kernel.
    pub agent_sys_percent: f64,
    /// Agent CPU per answered challenge, µs.
    pub agent_cpu_us_per_heartbeat: f64,
    /// Agent peak resident memory (`VmHWM`), MiB.
    pub agent_rss_mib: f64,
    /// Challenge delay p50 (see docs/performance.md), ms.
    pub rtt_p50_ms: f64,
    /// Challenge delay p99, ms.
    pub rtt_p99_ms: f64,
    /// Challenge delay max, ms.
    pub rtt_max_ms: f64,
    /// Challenges that reached the guests in the window.
    pub challenges_sent: u64,
    /// Answers the guests sent in the window.
    pub challenges_answered: u64,
    /// Guests made silent.
    pub failed_injected: usize,
    /// Silent guests the agent declared lost.
    pub failed_detected: usize,
    /// Detection latency p50, ms.
    pub detect_p50_ms: f64,
    /// Detection latency p99, ms.
    pub detect_p99_ms: f64,
    /// Detection latency max, ms.
    pub detect_max_ms: f64,
    /// Target for detection p99: (miss_threshold + 1) × interval + 20 ms.
    pub detect_target_ms: f64,
    /// `heartbeat_lost` of guests that never fell silent.
    pub false_losses: u64,
    /// `heartbeat_missed` of guests that never fell silent.
    pub healthy_misses: u64,
    /// Null agent CPU over its window, % of one core.
    pub baseline_cpu_percent: f64,
    /// The part of `baseline_cpu_percent` spent in the kernel.
    pub baseline_sys_percent: f64,
    /// Null agent CPU per answered challenge, µs.
    pub baseline_cpu_us_per_heartbeat: f64,
    /// Null agent peak resident memory, MiB.
    pub baseline_rss_mib: f64,
    /// Length of the baseline's window.
    pub baseline_duration_s: f64,
    /// Agent CPU per heartbeat / null agent CPU per heartbeat; `null` when the baseline used
    /// no CPU that the kernel could measure.
    pub cpu_ratio: Option<f64>,
}

/// What one steady window measured.
struct Window {
    setup: Duration,
    length: Duration,
    cpu_s: f64,
    sys_s: f64,
    rss_mib: f64,
    load: LoadResult,
}

/// Runs both phases; `exe` is the `tether` binary (for `host`, `bench load`, `bench
/// null-agent`).
pub fn run_host_bench(
    exe: &Path,
    args: &HostBenchArgs,
    context: Context,
) -> Result<HostReport, BenchError> {
    check(args)?;
    let interval = u64::from(args.interval_ms.max(BENCH_MIN_INTERVAL_MS));
    let mut temp = tempfile::tempdir().map_err(io_err("create a temporary directory"))?;
    if args.keep {
        temp.disable_cleanup(true);
        eprintln!("tether bench: working directory {}", temp.path().display());
    }
    let journal_path = temp.path().join("journal.jsonl");
    let agent = agent_phase(exe, args, interval, temp.path(), &journal_path)?;
    let events = journal::read(&journal_path)?;
    let detection = journal::detect(&events, &agent.load.failed);
    let baseline = baseline_phase(exe, args, interval, temp.path())?;
    Ok(report(
        args, interval, context, &agent, &baseline, &detection,
    ))
}

/// Puts the two windows and the detection together.
fn report(
    args: &HostBenchArgs,
    interval: u64,
    context: Context,
    agent: &Window,
    baseline: &Window,
    detection: &journal::Detection,
) -> HostReport {
    let per_hb = |w: &Window| w.cpu_s * 1e6 / w.load.answers.max(1) as f64;
    let percent = |w: &Window| w.cpu_s * 100.0 / w.length.as_secs_f64();
    let detect = Spread::of(&mut detection.latencies_ms.clone());
    let delay = agent.load.delay_ms;
    HostReport {
        context,
        guests: args.guests,
        interval_ms: args.interval_ms,
        effective_interval_ms: interval,
        duration_s: agent.length.as_secs_f64(),
        miss_threshold: args.miss_threshold,
        setup_s: agent.setup.as_secs_f64(),
        agent_cpu_percent: percent(agent),
        agent_sys_percent: agent.sys_s * 100.0 / agent.length.as_secs_f64(),
        agent_cpu_us_per_heartbeat: per_hb(agent),
        agent_rss_mib: agent.rss_mib,
        rtt_p50_ms: delay.p50,
        rtt_p99_ms: delay.p99,
        rtt_max_ms: delay.max,
        challenges_sent: agent.load.challenges,
        challenges_answered: agent.load.answers,
        failed_injected: agent.load.failed.len(),
        failed_detected: detection.latencies_ms.len(),
        detect_p50_ms: detect.p50,
        detect_p99_ms: detect.p99,
        detect_max_ms: detect.max,
        detect_target_ms: (f64::from(args.miss_threshold) + 1.0) * interval as f64 + 20.0,
        false_losses: detection.false_losses,
        healthy_misses: detection.healthy_misses,
        baseline_cpu_percent: percent(baseline),
        baseline_sys_percent: baseline.sys_s * 100.0 / baseline.length.as_secs_f64(),
        baseline_cpu_us_per_heartbeat: per_hb(baseline),
        baseline_rss_mib: baseline.rss_mib,
        baseline_duration_s: baseline.length.as_secs_f64(),
        cpu_ratio: (per_hb(baseline) > 0.0).then(|| per_hb(agent) / per_hb(baseline)),
    }
}

fn check(args: &HostBenchArgs) -> Result<(), BenchError> {
    if args.guests == 0 || args.duration == 0 {
        return Err(BenchError::Settings(
            "--guests and --duration must be at least 1".into(),
        ));
    }
    if args.fail > args.guests {
        return Err(BenchError::Settings("--fail cannot exceed --guests".into()));
    }
    if args.fail > 0 && fail_window_ms(args) < 500 {
        return Err(BenchError::Settings(format!(
            "--duration {} s leaves no room to inject failures and see them detected at \
             --interval-ms {} with --miss-threshold {}",
            args.duration, args.interval_ms, args.miss_threshold
        )));
    }
    Ok(())
}

/// The part of the window in which failures start: late enough ones could not be detected
/// before the window closes (one interval to the next unanswered challenge, `miss_threshold
/// + 1` more to the loss, one more and 500 ms of slack).
fn fail_window_ms(args: &HostBenchArgs) -> u64 {
    let interval = u64::from(args.interval_ms.max(BENCH_MIN_INTERVAL_MS));
    let needed = (u64::from(args.miss_threshold) + 3) * interval + 500;
    (args.duration * 1000).saturating_sub(needed)
}

fn agent_phase(
    exe: &Path,
    args: &HostBenchArgs,
    interval: u64,
    temp: &Path,
    journal: &Path,
) -> Result<Window, BenchError> {
    let dir = child::make_dir(&temp.join("channels"))?;
    let mut load = LoadGroup::spawn(exe, &dir, args, interval, args.fail, fail_window_ms(args))?;
    load.wait_ready(Duration::from_secs(args.settle_timeout))?;
    let log = std::fs::File::create(temp.join("agent.log")).map_err(io_err("create agent.log"))?;
    let mut command = Command::new(exe);
    command
        .arg("host")
        .arg("--channel-dir")
        .arg(&dir)
        .args(["--hypervisor", "log", "--rescan-secs", "3600"])
        .arg("--miss-threshold")
        .arg(args.miss_threshold.to_string())
        .arg("--min-interval-ms")
        .arg(interval.min(u64::from(MIN_INTERVAL_MS)).to_string())
        .arg("--journal")
        .arg(journal)
        .arg("--api-socket")
        .arg(temp.join("api.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let agent = Reaped(command.spawn().map_err(io_err("start the host agent"))?);
    let mut window = measure(
        &mut load,
        agent,
        "agent",
        args,
        Duration::from_secs(args.duration),
    )?;
    window.load = load.finish()?;
    Ok(window)
}

fn baseline_phase(
    exe: &Path,
    args: &HostBenchArgs,
    interval: u64,
    temp: &Path,
) -> Result<Window, BenchError> {
    let dir = child::make_dir(&temp.join("baseline-channels"))?;
    let mut load = LoadGroup::spawn(exe, &dir, args, interval, 0, 0)?;
    load.wait_ready(Duration::from_secs(args.settle_timeout))?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "null-agent", "--dir"])
        .arg(&dir)
        .arg("--interval-ms")
        .arg(interval.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let null = Reaped(command.spawn().map_err(io_err("start the null agent"))?);
    let length = args.baseline_duration.unwrap_or((args.duration / 2).max(3));
    let mut window = measure(
        &mut load,
        null,
        "baseline",
        args,
        Duration::from_secs(length),
    )?;
    window.load = load.finish()?;
    Ok(window)
}

/// Waits until every guest answers, then measures `process` over a window of `length`.
fn measure(
    load: &mut LoadGroup,
    mut process: Reaped,
    phase: &str,
    args: &HostBenchArgs,
    length: Duration,
) -> Result<Window, BenchError> {
    let name = if phase == "agent" {
        "host agent"
    } else {
        "null agent"
    };
    let begun = Instant::now();
    wait_heartbeating(load, &mut process, name, phase, args)?;
    let setup = begun.elapsed();
    load.command("start")?;
    let start = Instant::now();
    let cpu0 = CpuSample::read(process.pid())?;
    while start.elapsed() < length {
        if process.exited() {
            return Err(child::died(name));
        }
        let p = load.progress();
        let left = length.saturating_sub(start.elapsed());
        progress(&format!(
            "{phase}: {}/{} heartbeating, {} answers, {:.1} s left",
            p.heartbeating,
            args.guests,
            p.answers,
            left.as_secs_f64()
        ));
        std::thread::sleep(Duration::from_millis(250).min(left));
    }
    let (cpu_s, sys_s) = CpuSample::read(process.pid())?.since(cpu0);
    let window_length = start.elapsed();
    load.command("stop")?;
    let rss_mib = status_mib(process.pid(), "VmHWM")?;
    process.terminate(Duration::from_secs(10));
    Ok(Window {
        setup,
        length: window_length,
        cpu_s,
        sys_s,
        rss_mib,
        load: LoadResult::default(),
    })
}

/// Waits until every guest answers challenges, or fails after `--settle-timeout`.
fn wait_heartbeating(
    load: &LoadGroup,
    process: &mut Reaped,
    name: &'static str,
    phase: &str,
    args: &HostBenchArgs,
) -> Result<(), BenchError> {
    let begun = Instant::now();
    let limit = Duration::from_secs(args.settle_timeout);
    loop {
        let heartbeating = load.progress().heartbeating;
        if heartbeating >= args.guests {
            return Ok(());
        }
        if process.exited() {
            return Err(child::died(name));
        }
        if begun.elapsed() > limit {
            return Err(BenchError::Child {
                process: name,
                problem: format!(
                    "had only {heartbeating} of {} guests heartbeating after {} s",
                    args.guests, args.settle_timeout
                ),
            });
        }
        progress(&format!(
            "{phase}: {heartbeating} of {} guests heartbeating",
            args.guests
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
}
