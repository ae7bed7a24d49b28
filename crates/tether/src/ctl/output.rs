//! How `tether ctl` prints: the controller's JSON with `--json`, else a table of the columns
//! that matter for each kind of record.

use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    pub(super) json: bool,
}

impl Output {
    pub(super) fn show(self, value: &Value, columns: &[&str]) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
            return;
        }
        let rows: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        print!("{}", table(columns, &rows));
    }
}

pub(super) const HOST_COLUMNS: [&str; 5] = [
    "name",
    "reporting_enabled",
    "api_url",
    "last_seen",
    "acked_seq",
];
pub(super) const INSTANCE_COLUMNS: [&str; 7] = [
    "uuid",
    "name",
    "host",
    "state",
    "health",
    "corrective_action",
    "reporting_enabled",
];
pub(super) const EVENT_COLUMNS: [&str; 5] = ["ts", "host", "name", "event", "details"];
pub(super) const WEBHOOK_COLUMNS: [&str; 6] = [
    "id",
    "url",
    "created_at",
    "pending",
    "failing",
    "last_error",
];
pub(super) const RECOVERY_COLUMNS: [&str; 5] =
    ["decided_at", "decision", "action", "cause", "detail"];
pub(super) const AUDIT_COLUMNS: [&str; 4] = ["kind", "host", "instance", "detail"];
pub(super) const VIM_COLUMNS: [&str; 5] = [
    "url",
    "last_event_id",
    "behind",
    "last_error",
    "last_error_at",
];

/// A value as a table cell: strings bare, objects as `k=v` pairs, null as `-`.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// An aligned table with a header line.
pub(super) fn table(columns: &[&str], rows: &[&Value]) -> String {
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in &body {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(&header).chain(&body) {
        out.push_str(&aligned(line, &widths));
    }
    out
}

/// Rows without a header (for followed events), each column at least its header's width.
pub(super) fn table_rows(columns: &[&str], rows: &[&Value]) -> String {
    let widths: Vec<usize> = columns.iter().map(|c| c.len().max(12)).collect();
    rows.iter()
        .map(|row| {
            aligned(
                &columns.iter().map(|c| cell(&row[*c])).collect::<Vec<_>>(),
                &widths,
            )
        })
        .collect()
}

fn aligned(cells: &[String], widths: &[usize]) -> String {
    let mut line = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect::<Vec<_>>()
        .join("  ");
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_show_missing_values() {
        let rows = [
            json!({"name": "compute-0", "acked_seq": 12}),
            json!({"name": "c1"}),
        ];
        let refs: Vec<&Value> = rows.iter().collect();
        assert_eq!(
            table(&["name", "acked_seq"], &refs),
            "NAME       ACKED_SEQ\ncompute-0  12\nc1         -\n"
        );
    }
}
