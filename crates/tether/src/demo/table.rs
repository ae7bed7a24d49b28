//! The demo's live table: one row per guest, as the host agent sees it, beside the fault the
//! simulator is injecting. Rendering is a pure function of the rows so it can be tested.

use std::fmt::Write;

use tether_host::InstanceStatus;

/// One guest's row: the agent's view plus what the simulator does to it.
pub struct Row<'a> {
    /// The agent's view of the guest, if the agent knows it yet.
    pub status: Option<&'a InstanceStatus>,
    /// The VM's name in the simulator.
    pub vm: &'a str,
    /// The VM's uuid.
    pub uuid: &'a str,
    /// The injected fault, as text (`-` for none).
    pub fault: String,
}

const HEADER: [&str; 10] = [
    "VM",
    "UUID",
    "STATE",
    "INTERVAL",
    "RTT",
    "MISSES",
    "HEALTH",
    "ACTION",
    "RECOVERIES",
    "FAULT",
];

/// Renders the table as lines of aligned columns, header first.
pub fn render(rows: &[Row<'_>]) -> String {
    let cells: Vec<[String; 10]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    line(&mut out, &HEADER.map(String::from), &widths);
    for row in &cells {
        line(&mut out, row, &widths);
    }
    out
}

fn line(out: &mut String, cells: &[String; 10], widths: &[usize; 10]) {
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let sep = if i + 1 == cells.len() { "" } else { "  " };
        let _ = write!(out, "{cell:<width$}{sep}");
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
}

fn cells(row: &Row<'_>) -> [String; 10] {
    let uuid = row.uuid.get(..8).unwrap_or(row.uuid).to_owned();
    let Some(s) = row.status else {
        let mut empty = [const { String::new() }; 10];
        empty[0] = row.vm.to_owned();
        empty[1] = uuid;
        empty[2] = "discovering".into();
        empty[9] = row.fault.clone();
        return empty;
    };
    [
        row.vm.to_owned(),
        uuid,
        s.state.to_string(),
        s.interval_ms
            .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
        s.last_rtt_us.map_or_else(|| "-".into(), format_rtt),
        format!("{}", s.misses_total),
        s.health.clone().unwrap_or_else(|| "-".into()),
        s.corrective_action.clone().unwrap_or_else(|| "-".into()),
        format!("{}", s.recoveries),
        row.fault.clone(),
    ]
}

fn format_rtt(us: u64) -> String {
    if us >= 10_000 {
        format!("{} ms", us / 1000)
    } else {
        format!("{}.{:02} ms", us / 1000, (us % 1000) / 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_times_read_naturally() {
        assert_eq!(format_rtt(312), "0.31 ms");
        assert_eq!(format_rtt(4_560), "4.56 ms");
        assert_eq!(format_rtt(25_400), "25 ms");
    }

    #[test]
    fn an_unknown_guest_is_shown_as_discovering() {
        let rows = [Row {
            status: None,
            vm: "vm-1",
            uuid: "0123456789abcdef",
            fault: "-".into(),
        }];
        let text = render(&rows);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("VM    UUID      STATE"));
        assert!(lines[1].starts_with("vm-1  01234567  discovering"));
        assert!(lines[1].ends_with('-'));
    }
}
