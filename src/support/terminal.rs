//! Worker text made safe for the operator's terminal.
//!
//! Whatever a worker wrote (its stderr, a tool's error string, a denial's
//! detail) is escaped before the runner prints it, so a worker cannot move the
//! cursor, clear or retitle the screen, set the clipboard (OSC 52) or print a
//! line that reads as the runner's own `error:`:
//!
//! - C0 controls but line feed and tab, DEL and the C1 controls (U+0080 to
//!   U+009F) are written as `\xNN` / `\uNNNN` (`\r` as `\r`). Every ANSI CSI,
//!   OSC, DCS or APC sequence starts with ESC or a C1 control, so none reaches
//!   the terminal: what is left of it is plain text;
//! - bytes that are not UTF-8 are written `\xNN` (a terminal in a legacy
//!   charset would read 0x9b as CSI);
//! - the Unicode controls that reorder or break lines on screen (bidi
//!   embeddings, overrides and isolates, U+2028, U+2029) as `\uNNNN`;
//! - line feeds are kept (so a traceback stays readable) or, for one-line
//!   contexts, written `\n`; a worker's line that would begin a terminal
//!   line with the runner's own prefix (`error:`, `warning:`, `ext-runner:`)
//!   is marked `(worker) `.
//!
//! Backslashes are left alone: the output holds no control, so escaping it
//! again changes nothing.

/// What the runner starts its own lines with; a worker's line may not.
const RUNNER_PREFIXES: [&str; 3] = ["error:", "warning:", "ext-runner:"];
/// Put before a worker's line that starts with one of `RUNNER_PREFIXES`.
pub(crate) const WORKER_MARK: &str = "(worker) ";

/// Worker text to print on a terminal, line breaks kept. Its first line is
/// taken to follow other text on the same terminal line (it is quoted in a
/// message); each later line is guarded against looking like the runner's.
pub(crate) fn escape(text: &str) -> String {
    escape_bytes(text.as_bytes())
}

/// `escape` for bytes that may not be UTF-8.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    let mut e = Escaper::continuing();
    let mut out = e.push(bytes);
    out.push_str(&e.finish());
    out
}

/// Worker text for a one-line context (a line feed is written `\n`).
pub(crate) fn escape_line(text: &str) -> String {
    let mut e = Escaper {
        one_line: true,
        ..Escaper::continuing()
    };
    let mut out = e.push(text.as_bytes());
    out.push_str(&e.finish());
    out
}

/// Escapes a stream (a worker's stderr) chunk by chunk: a UTF-8 character or a
/// line prefix split between chunks is held until it is complete.
#[derive(Debug)]
pub(crate) struct Escaper {
    /// The start of a UTF-8 character the last chunk ended in.
    partial: Vec<u8>,
    /// The start of a line, held while it may still become a runner prefix.
    held: String,
    /// Whether the next character starts a terminal line.
    line_start: bool,
    one_line: bool,
}

impl Default for Escaper {
    fn default() -> Self {
        Escaper::new()
    }
}

impl Escaper {
    /// For a stream printed from the start of a terminal line.
    pub(crate) fn new() -> Escaper {
        Escaper {
            line_start: true,
            ..Escaper::continuing()
        }
    }

    /// For text that follows other text on its first line.
    fn continuing() -> Escaper {
        Escaper {
            partial: Vec::new(),
            held: String::new(),
            line_start: false,
            one_line: false,
        }
    }

    /// Says that the terminal may be at the start of a line now (output was
    /// lost): the next line is guarded as if it began one.
    pub(crate) fn at_line_start(&mut self) {
        if self.held.is_empty() {
            self.line_start = true;
        }
    }

    /// Ends the current line (what is held, and a line feed unless the last
    /// output ended one), so that the runner's own next line starts one.
    pub(crate) fn break_line(&mut self) -> String {
        let mut out = self.finish();
        if !self.line_start || !out.is_empty() {
            out.push('\n');
        }
        self.line_start = true;
        out
    }

    /// The escaped text of `chunk`, less what is held for the next one.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> String {
        let mut out = String::with_capacity(chunk.len() + 8);
        let joined;
        let mut rest: &[u8] = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.partial);
            &joined
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.text(text, &mut out);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just above.
                    self.text(std::str::from_utf8(good).unwrap_or_default(), &mut out);
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                self.raw_byte(*b, &mut out);
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            // An incomplete character at the end: wait for the rest.
                            self.partial = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// What is still held (the end of the stream).
    pub(crate) fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        for b in std::mem::take(&mut self.partial) {
            self.raw_byte(b, &mut out);
        }
        out
    }

    fn text(&mut self, text: &str, out: &mut String) {
        for c in text.chars() {
            self.char(c, out);
        }
    }

    /// A byte that is not part of a UTF-8 character.
    fn raw_byte(&mut self, b: u8, out: &mut String) {
        self.release(out);
        self.line_start = false;
        out.push_str(&format!("\\x{b:02x}"));
    }

    /// Writes the held line start as it is.
    fn release(&mut self, out: &mut String) {
        out.push_str(&self.held);
        self.held.clear();
    }

    fn char(&mut self, c: char, out: &mut String) {
        if self.line_start || !self.held.is_empty() {
            if c != '\n' {
                self.held.push(c);
                self.line_start = false;
                if RUNNER_PREFIXES.contains(&self.held.as_str()) {
                    out.push_str(WORKER_MARK);
                    self.release(out);
                } else if !RUNNER_PREFIXES.iter().any(|p| p.starts_with(&self.held)) {
                    // Not a prefix: escape what was held (printable but for its last char).
                    let held = std::mem::take(&mut self.held);
                    let mut chars = held.chars();
                    let last = chars.next_back();
                    out.push_str(chars.as_str());
                    if let Some(last) = last {
                        push_escaped(last, out);
                    }
                }
                return;
            }
            self.release(out);
        }
        if c == '\n' {
            if self.one_line {
                out.push_str("\\n");
            } else {
                out.push('\n');
                self.line_start = true;
            }
            return;
        }
        push_escaped(c, out);
    }
}

/// One character other than a line feed, escaped if it must be.
fn push_escaped(c: char, out: &mut String) {
    match c {
        '\t' => out.push('\t'),
        '\r' => out.push_str("\\r"),
        '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
        '\u{80}'..='\u{9f}'
        | '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => out.push_str(&format!("\\u{:04x}", c as u32)),
        _ => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_sequences_are_inert() {
        let attacks = [
            ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
            ("\x1b]52;c;aGk=\x07", "\\x1b]52;c;aGk=\\x07"),
            ("\u{9b}31m", "\\u009b31m"),
            ("a\rerror: x", "a\\rerror: x"),
            ("\x7f\0\x08", "\\x7f\\x00\\x08"),
            ("a\u{202e}b", "a\\u202eb"),
        ];
        for (input, want) in attacks {
            assert_eq!(escape(input), want, "{input:?}");
        }
        assert_eq!(escape_bytes(b"\x9b2J\xff"), "\\x9b2J\\xff");
        assert_eq!(
            escape("Zoë\ttab \\x1b"),
            "Zoë\ttab \\x1b",
            "the rest is kept"
        );
    }

    #[test]
    fn lines_are_kept_or_written_on_one() {
        assert_eq!(escape("a\nb\n"), "a\nb\n");
        assert_eq!(escape_line("a\nb"), "a\\nb");
        assert_eq!(
            escape("Traceback:\nerror: fake (SandboxError)\n  error: indented"),
            "Traceback:\n(worker) error: fake (SandboxError)\n  error: indented"
        );
        assert_eq!(
            escape("error: first line follows text"),
            "error: first line follows text"
        );
        assert_eq!(
            escape("x\nerrors\nwarning:\next-runner: y"),
            "x\nerrors\n(worker) warning:\n(worker) ext-runner: y"
        );
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let nasty = "a\x1b[1m\r\nerror: b\u{9b}\u{202e}\\x1b\n";
        let once = escape(nasty);
        assert_eq!(escape(&once), once);
        assert!(
            !once.chars().any(|c| c.is_control() && c != '\n'),
            "{once:?}"
        );
    }

    #[test]
    fn a_stream_split_anywhere_escapes_as_a_whole() {
        let stream = "ok\nerror: fake\nZoë \x1b[2J\u{9b}\nwarn\n".as_bytes();
        let mut whole = Escaper::new();
        let want = whole.push(stream) + &whole.finish();
        assert_eq!(
            want,
            "ok\n(worker) error: fake\nZoë \\x1b[2J\\u009b\nwarn\n"
        );
        for split in 0..stream.len() {
            let mut e = Escaper::new();
            let got = e.push(&stream[..split]) + &e.push(&stream[split..]) + &e.finish();
            assert_eq!(got, want, "split at {split}");
        }
        let mut e = Escaper::new();
        assert_eq!(
            e.push(b"error: at the very start"),
            "(worker) error: at the very start"
        );
        let mut e = Escaper::new();
        assert_eq!(e.push(b"err") + &e.finish(), "err", "held until the end");
        let mut e = Escaper::new();
        assert_eq!(
            e.push(b"\xc3") + &e.finish(),
            "\\xc3",
            "a cut character at the end"
        );
    }
}
