//! Client-supplied text in log lines: [`Escaped`] shows a value's `Display` text with every
//! control character escaped (`\n` as `\\n`, NUL as `\\0`, ...), so a name or an error that
//! quotes one cannot start a forged log line. Plain strings can also be logged with tracing's
//! `?` (Debug: quoted and escaped); `Escaped` is for errors, whose Debug is not their message.
//! Not here: the refusal of control characters at registration (`wire::register`).

use std::fmt::{self, Display, Write};

/// `Display` of `T` with control characters escaped: `tracing::warn!(error = %Escaped(&e))`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Esc<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Esc<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for part in s.split_inclusive(char::is_control) {
                    let mut chars = part.chars();
                    match chars.next_back() {
                        Some(c) if c.is_control() => {
                            self.0.write_str(chars.as_str())?;
                            write!(self.0, "{}", c.escape_debug())?;
                        }
                        _ => self.0.write_str(part)?,
                    }
                }
                Ok(())
            }
        }
        write!(Esc(f), "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let s = Escaped("a\nFORGED\r\tb\0c\u{7f}d\u{85}é 感").to_string();
        assert_eq!(s, "a\\nFORGED\\r\\tb\\0c\\u{7f}d\\u{85}é 感");
        assert!(!s.chars().any(char::is_control));
        assert_eq!(Escaped("plain").to_string(), "plain");
    }
}
