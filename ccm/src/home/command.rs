//! Home commands: `on`, `off`, `dim` (30 %), `med` (60 %), `full` (100 %), `dim:N` (0-100);
//! an empty command means `on`. A plug is on for any brightness above 0.

use std::fmt;

use crate::model::shorten;

/// A parsed command, as a brightness in percent (0 = off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// 0 to 100.
    pub brightness: u8,
}

/// Why a command was refused; the text is the reply's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command `{0}`: use on, off, dim, med, full or dim:N (0-100)")]
    Unknown(String),
    #[error("`dim:{0}`: the brightness must be a whole number from 0 to 100")]
    Brightness(String),
}

impl Command {
    pub const ON: Command = Command { brightness: 100 };
    pub const OFF: Command = Command { brightness: 0 };

    /// Parses a command; surrounding spaces and letter case are ignored.
    pub fn parse(text: &str) -> Result<Command, CommandError> {
        let t = text.trim().to_ascii_lowercase();
        let brightness = match t.as_str() {
            "" | "on" | "full" => 100,
            "off" => 0,
            "dim" => 30,
            "med" => 60,
            _ => match t.strip_prefix("dim:") {
                Some(n) => n
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|v| *v <= 100)
                    .ok_or_else(|| CommandError::Brightness(shorten(n)))?,
                None => return Err(CommandError::Unknown(shorten(text))),
            },
        };
        Ok(Command { brightness })
    }

    /// Whether a plug (on/off only) is switched on by this command.
    pub fn is_on(self) -> bool {
        self.brightness > 0
    }
}

impl fmt::Display for Command {
    /// The canonical text: `off`, `on` (100 %), or `dim:N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.brightness {
            0 => f.write_str("off"),
            100 => f.write_str("on"),
            n => write!(f, "dim:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_brightness() {
        for (text, b) in [
            ("", 100),
            ("on", 100),
            (" ON ", 100),
            ("full", 100),
            ("off", 0),
            ("dim", 30),
            ("med", 60),
            ("dim:0", 0),
            ("dim:45", 45),
            ("dim:100", 100),
        ] {
            assert_eq!(
                Command::parse(text).map(|c| c.brightness),
                Ok(b),
                "{text:?}"
            );
        }
        assert!(Command::parse("dim:101").is_err());
        assert!(Command::parse("dim:-1").is_err());
        assert!(Command::parse("dim:x").is_err());
        assert!(matches!(
            Command::parse("explode"),
            Err(CommandError::Unknown(_))
        ));
        assert!(Command::parse("dim:1").unwrap().is_on());
        assert!(!Command::parse("off").unwrap().is_on());
        assert_eq!(Command::parse("dim:45").unwrap().to_string(), "dim:45");
        assert_eq!(Command::parse("full").unwrap().to_string(), "on");
    }
}
