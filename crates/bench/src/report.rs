//! How results are shown: the run's context, a live progress line on stderr, and the
//! Markdown tables that put every figure beside its target or baseline.

use std::fmt::Write as _;
use std::io::Write as _;

use serde::Serialize;

use crate::guest::GuestReport;
use crate::host::HostReport;
use crate::sys::Machine;

/// Where, with what and on which revision a bench ran.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// The machine.
    pub machine: Machine,
    /// The command line as given.
    pub command: String,
    /// `git rev-parse --short HEAD`, or `unknown`.
    pub git_revision: String,
}

/// Rewrites the progress line on stderr.
pub fn progress(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
}

/// Clears the progress line.
pub fn progress_done() {
    progress("");
}

fn header(out: &mut String, title: &str, context: &Context) {
    let m = &context.machine;
    let _ = writeln!(out, "## {title}\n");
    let _ = writeln!(out, "- machine: {} cores, {}", m.cores, m.cpu_model);
    let _ = writeln!(out, "- command: `{}`", context.command);
    let _ = writeln!(out, "- revision: {}\n", context.git_revision);
    let _ = writeln!(out, "| figure | measured | target / baseline |");
    let _ = writeln!(out, "| --- | ---: | --- |");
}

fn row(out: &mut String, figure: &str, measured: String, against: String) {
    let _ = writeln!(out, "| {figure} | {measured} | {against} |");
}

/// The host bench as a Markdown table.
pub fn host_markdown(r: &HostReport) -> String {
    let mut out = String::new();
    header(&mut out, "tether bench host", &r.context);
    let cpu_target = if r.effective_interval_ms >= 1000 {
        5.0
    } else {
        50.0
    };
    row(&mut out, "guests", r.guests.to_string(), "10,000".into());
    row(
        &mut out,
        "interval (asked → used)",
        format!("{} → {} ms", r.interval_ms, r.effective_interval_ms),
        "—".into(),
    );
    row(
        &mut out,
        "window",
        format!("{:.1} s (setup {:.1} s)", r.duration_s, r.setup_s),
        "—".into(),
    );
    row(
        &mut out,
        "agent CPU",
        format!(
            "{:.2} % of a core ({:.2} % kernel)",
            r.agent_cpu_percent, r.agent_sys_percent
        ),
        format!(
            "≤ {cpu_target} % at 10,000 guests; baseline {:.2} % ({:.2} % kernel)",
            r.baseline_cpu_percent, r.baseline_sys_percent
        ),
    );
    row(
        &mut out,
        "agent CPU per heartbeat",
        format!("{:.2} µs", r.agent_cpu_us_per_heartbeat),
        format!("≤ 5 µs; baseline {:.2} µs", r.baseline_cpu_us_per_heartbeat),
    );
    row(
        &mut out,
        "CPU per heartbeat, agent / baseline",
        r.cpu_ratio.map_or_else(
            || "n/a: the baseline used no measurable CPU".to_owned(),
            |ratio| format!("{ratio:.2}×"),
        ),
        "≤ 3×".into(),
    );
    row(
        &mut out,
        "agent peak RSS",
        format!("{:.1} MiB", r.agent_rss_mib),
        format!("≤ 64 MiB; baseline {:.1} MiB", r.baseline_rss_mib),
    );
    row(
        &mut out,
        "challenge delay p50 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} ms",
            r.rtt_p50_ms, r.rtt_p99_ms, r.rtt_max_ms
        ),
        "—".into(),
    );
    row(
        &mut out,
        "challenges answered / sent",
        format!("{} / {}", r.challenges_answered, r.challenges_sent),
        "all but the silent guests'".into(),
    );
    row(
        &mut out,
        "failures detected / injected",
        format!("{} / {}", r.failed_detected, r.failed_injected),
        "all".into(),
    );
    row(
        &mut out,
        "detection p50 / p99 / max",
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            r.detect_p50_ms, r.detect_p99_ms, r.detect_max_ms
        ),
        format!("p99 ≤ {:.0} ms", r.detect_target_ms),
    );
    row(
        &mut out,
        "false losses (misses) of healthy guests",
        format!("{} ({})", r.false_losses, r.healthy_misses),
        "0".into(),
    );
    out
}

/// The guest bench as a Markdown table.
pub fn guest_markdown(r: &GuestReport) -> String {
    let mut out = String::new();
    header(&mut out, "tether bench guest", &r.context);
    row(&mut out, "binary", r.binary.clone(), "—".into());
    row(
        &mut out,
        "resident memory (peak)",
        format!("{:.2} MiB ({:.2} MiB)", r.rss_mib, r.peak_rss_mib),
        "≤ 2 MiB (C Guest-Client: 1.96 MiB)".into(),
    );
    row(
        &mut out,
        "CPU per 1,000 heartbeats, back to back",
        format!("{:.1} ms ({} heartbeats)", r.cpu_ms_per_1000, r.heartbeats),
        "—".into(),
    );
    row(
        &mut out,
        "CPU per 1,000 heartbeats at 1 s",
        format!(
            "{:.1} ms (over {:.0} s)",
            r.paced_cpu_ms_per_1000, r.paced_s
        ),
        "≤ 30 ms (C Guest-Client: 304 ms)".into(),
    );
    let size = match (&r.static_binary, r.static_size_mib) {
        (Some(path), Some(mib)) => format!("{mib:.2} MiB ({path})"),
        _ => "missing: run scripts/build-static-guest".into(),
    };
    row(&mut out, "static stripped binary", size, "≤ 3 MiB".into());
    out
}
