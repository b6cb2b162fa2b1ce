//! What the command prints: data on stdout, prose on stderr, stored strings escaped.
//!
//! Names and tenants come from the database, where anyone with SQL access can put an escape
//! sequence or a line break in them: printed raw they would drive the terminal or forge rows.

use std::fmt;
use std::io::Write;

/// A line of data on stdout. A closed pipe (`| head -1`) ends the command quietly.
macro_rules! data {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}
pub(crate) use data;

pub(crate) fn write_stdout(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader has what it wanted; this is not a failure.
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Shows control and invisible format characters as `\u{..}` escapes (and `\` as `\\`), so
/// that text from the database prints as one inert line.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if c.is_control() || is_format(c) {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Unicode's invisible and direction-changing characters (category Cf, and the line and
/// paragraph separators), which make one string look like another.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB)
}

/// `text`, escaped.
pub(crate) fn esc(text: &str) -> String {
    Escaped(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn control_and_format_characters_are_escaped() {
        assert_eq!(esc("acme"), "acme");
        assert_eq!(
            esc("a\x1b[31mb\x07\r\nc"),
            "a\\u{1b}[31mb\\u{7}\\u{d}\\u{a}c"
        );
        assert_eq!(esc("x\u{202e}y\u{200b}"), "x\\u{202e}y\\u{200b}");
        assert_eq!(esc("a\\u{1b}"), "a\\\\u{1b}");
        assert_eq!(esc("café"), "café");
    }
}
