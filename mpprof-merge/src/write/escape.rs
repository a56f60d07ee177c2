//! Names as each output can hold them. A callsite or thread name is
//! whatever the program gave (a span name from user data may hold a
//! newline, a tab, a `;` or a terminal escape sequence): every writer that
//! is not a structured format passes names through here.
//!
//! - Folded stacks: `;` separates frames and a newline ends the line, so
//!   `;` becomes `:` and control characters become visible escapes.
//! - SVG: drawn from the folded lines, so no control character (which XML
//!   forbids) reaches it; inferno escapes `<`, `>`, `&` and quotes.
//! - The terminal (`summary`, `check`): control characters, which could
//!   move the cursor or recolour the screen, become visible escapes.
//!
//! JSON and Perfetto hold any string as it is (serde_json escapes control
//! characters; protobuf strings are UTF-8).

use std::borrow::Cow;
use std::fmt::Write;

/// Appends the visible escape of control character `c` (C0, DEL or C1): `\n`, `\r`, `\t`,
/// `\e` (escape), else `\xNN` or `\u{NNNN}`.
fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// `name` with every character for which `bad` holds replaced by what
/// `fix` appends; borrowed when there is none.
fn replace(
    name: &str,
    bad: impl Fn(char) -> bool,
    fix: impl Fn(&mut String, char),
) -> Cow<'_, str> {
    let Some(first) = name.find(&bad) else {
        return Cow::Borrowed(name);
    };
    let mut out = String::with_capacity(name.len() + 8);
    out.push_str(&name[..first]);
    for c in name[first..].chars() {
        if bad(c) {
            fix(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A frame of a folded stack: `;` as `:`, control characters escaped.
pub fn folded(name: &str) -> Cow<'_, str> {
    replace(
        name,
        |c| c == ';' || c.is_control(),
        |out, c| {
            if c == ';' {
                out.push(':');
            } else {
                push_escape(out, c);
            }
        },
    )
}

/// A name for the terminal: control characters escaped.
pub fn terminal(name: &str) -> Cow<'_, str> {
    replace(name, char::is_control, push_escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_frames_hold_no_separator_and_no_control_character() {
        assert!(matches!(
            folded("plain name (with) spaces"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            folded("a;b\nc\td\re\u{1b}[31mf\u{7f}g\u{85}h\u{0}"),
            "a:b\\nc\\td\\re\\e[31mf\\x7fg\\x85h\\x00"
        );
        assert_eq!(folded("ünï;cödé"), "ünï:cödé");
    }

    #[test]
    fn terminal_names_show_their_control_characters() {
        assert_eq!(terminal("x;y"), "x;y");
        assert_eq!(terminal("\u{1b}]0;title\u{7}"), "\\e]0;title\\x07");
        assert_eq!(terminal("line\nnext"), "line\\nnext");
    }
}
