//! Writing records: one line each, flushed at once, so a reader sees every record as it happens
//! (and none is lost if the sandbox kills the probe right after).

use std::io::Write;

/// Prints `line` and a newline on stdout and flushes; output errors (a closed pipe) are ignored.
pub fn line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut j = String::with_capacity(s.len() + 2);
    j.push('"');
    for c in s.chars() {
        match c {
            '"' => j.push_str("\\\""),
            '\\' => j.push_str("\\\\"),
            '\n' => j.push_str("\\n"),
            '\r' => j.push_str("\\r"),
            '\t' => j.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                j.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => j.push(c),
        }
    }
    j.push('"');
    j
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }
}
