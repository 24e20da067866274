//! Makes untrusted kernel strings (comm, paths) safe to print on a terminal.

use std::{borrow::Cow, fmt::Write as _};

/// `s` with control characters (C0, DEL, C1) and Unicode bidi and
/// formatting characters that could reorder or hide text written as
/// `\xNN` or `\u{NNNN}`; backslashes are doubled so the result is
/// unambiguous.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn plain_names_are_untouched() {
        assert!(matches!(
            printable("nginx: worker"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn terminal_escapes_and_newlines_cannot_reach_the_terminal() {
        assert_eq!(printable("ev\x1b[31mil\n"), "ev\\x1b[31mil\\x0a");
        assert_eq!(printable("a\u{7f}b\u{85}"), "a\\x7fb\\x85");
    }

    #[test]
    fn bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(printable("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_are_unambiguous() {
        assert_eq!(printable("a\\x1b\x01"), "a\\\\x1b\\x01");
    }
}
