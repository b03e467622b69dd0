//! How client commands print: a plain table for people, the API's JSON for scripts.

use comfy_table::{ContentArrangement, Table, presets};
use jiff::Timestamp;
use serde_json::Value;

/// A borderless table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// A JSON value as a table cell: strings bare (control characters escaped), nothing as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => printable(s),
        other => other.to_string(),
    }
}

/// Stored text as a terminal may show it: control characters (a terminal's escape sequences,
/// line breaks that would forge table rows) written as escapes (`\u{1b}`, `\n`), so text that
/// someone typed into a reason or a name cannot drive a reader's terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A timestamp to the second, in Vietnam's time (where the cases and the deadlines are).
pub fn time(v: &Value) -> String {
    match v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
        Some(t) => t
            .to_zoned(crate::calendar::vietnam_time())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => cell(v),
    }
}

/// A timestamp to the millisecond with its zone, in Vietnam's time: what a history needs to
/// show which of two parallel branches moved first.
pub fn precise_time(v: &Value) -> String {
    match v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
        Some(t) => t
            .to_zoned(crate::calendar::vietnam_time())
            .strftime("%Y-%m-%d %H:%M:%S%.3f %:z")
            .to_string(),
        None => cell(v),
    }
}

/// An HTTP status as an operator reads it: `503 Service Unavailable`.
pub fn http_status(v: &Value) -> String {
    let words = v
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .and_then(|n| reqwest::StatusCode::from_u16(n).ok())
        .and_then(|s| s.canonical_reason());
    match words {
        Some(words) => format!("{} {words}", cell(v)),
        None => cell(v),
    }
}

/// How long ago a timestamp was: `3d 4h`, `2h 5m`, `40s`.
pub fn age(v: &Value, now: Timestamp) -> String {
    let Some(t) = v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) else {
        return cell(v);
    };
    let secs = now.duration_since(t).as_secs().max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// At most `n` characters, with an ellipsis if cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let kept: String = s.chars().take(n.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Prints `value` as JSON (for `--json`) or runs `human`.
pub fn print(json: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        emit(&serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        emit(human(value).trim_end());
    }
}

/// Writes `text` and a line end to standard output. A reader that went away (`… | head`)
/// ends the command quietly, as a closed pipe ends any Unix tool, rather than with a panic.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(super::CLOSED_PIPE));
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        assert_eq!(age(&json!("2026-11-23T11:59:20Z"), now), "40s");
        assert_eq!(age(&json!("2026-11-23T09:55:00Z"), now), "2h 5m");
        assert_eq!(age(&json!("2026-11-20T08:00:00Z"), now), "3d 4h");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn a_history_shows_milliseconds_with_the_zone_and_statuses_in_words() {
        assert_eq!(
            precise_time(&json!("2026-11-30T03:00:00.123456Z")),
            "2026-11-30 10:00:00.123 +07:00"
        );
        assert_eq!(http_status(&json!(503)), "503 Service Unavailable");
        assert_eq!(http_status(&json!(299)), "299");
    }

    #[test]
    fn stored_text_cannot_drive_the_terminal() {
        let reason = json!("ok\u{1b}]0;owned\u{7}\u{1b}[2J\nFAKE ROW");
        let shown = cell(&reason);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "ok\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\nFAKE ROW");
        assert_eq!(cell(&json!("Trần Minh An")), "Trần Minh An");
    }
}
