//! Writing results: a table on stdout, coloured only on a terminal and never with `NO_COLOR`, or
//! JSON with `--json`; errors on stderr, and also as `{"error": "..."}` on stdout with `--json`.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use serde::Serialize;
use serde_json::json;

use crate::report::{Outcome, RunReport};
use crate::rotation::Rotation;

/// How results are printed.
pub struct Output {
    json: bool,
    colour: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let colour = !json
            && wants_colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            );
        Output { json, colour }
    }

    /// A plan's or a sync's result.
    pub fn run(&self, run: &RunReport) {
        if self.json {
            return print_json(run);
        }
        let mut text = run.render_table(self.colour);
        let planned = run
            .accounts
            .iter()
            .flat_map(|r| &r.entries)
            .any(|e| e.outcome == Outcome::Planned);
        if run.dry_run && planned {
            text.push_str(
                "\n\nNothing was written. `keysync sync` with the same flags makes these changes.",
            );
        }
        print(&text);
    }

    /// A rotation's result.
    pub fn rotation(&self, rotation: &Rotation) {
        match self.json {
            true => print_json(rotation),
            false => print(&rotation.render_table(self.colour)),
        }
    }

    /// Why a command that ran to the end exits 1, on one line of stderr (the result itself is
    /// on stdout, so `--json` adds nothing there).
    pub fn reason(&self, message: &str) {
        eprintln!("error: {message}");
    }

    /// An error that ended the command.
    pub fn error(&self, message: &str) {
        eprintln!("error: {message}");
        if self.json {
            print_json(&json!({ "error": message }));
        }
    }
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything but the empty string.
fn wants_colour(is_terminal: bool, no_color: Option<OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => print(&text),
        Err(e) => eprintln!("error: could not write the JSON: {e}"),
    }
}

/// One block of text and a newline; a closed pipe (`| head`) is not an error worth a panic.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsString::new())));
        assert!(!wants_colour(true, Some("1".into())));
        assert!(!wants_colour(false, None));
    }
}
