//! Bytes from a telnet or netcat client to lines of text: CRLF, LF or a bare CR
//! ends a line; telnet negotiation (IAC sequences, subnegotiation) is dropped;
//! backspace and DEL erase the previous character; invalid UTF-8 becomes U+FFFD;
//! control characters (ANSI escapes, bidi overrides) never reach other users'
//! terminals; a line longer than the limit is reported, not buffered.

/// Telnet "interpret as command".
const IAC: u8 = 255;
/// Telnet subnegotiation begin / end.
const SB: u8 = 250;
const SE: u8 = 240;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// IAC inside a subnegotiation.
    SubIac,
    /// After CR: a following LF or NUL belongs to it.
    Cr,
}

/// What one finished line was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A line of text, cleaned (see [`clean`]).
    Line(String),
    /// A line over the limit; its bytes were dropped.
    TooLong,
}

/// Turns a byte stream into [`Decoded`] lines, holding at most `max` bytes.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max: usize,
    state: State,
    overflow: bool,
}

impl LineDecoder {
    /// A decoder for lines of at most `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(max.clamp(1, 256)),
            max: max.max(1),
            state: State::Data,
            overflow: false,
        }
    }

    /// Feeds `bytes`, appending every line they finish to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        for &b in bytes {
            self.state = match self.state {
                State::Iac => match b {
                    251..=254 => State::Option,
                    SB => State::Sub,
                    _ => State::Data,
                },
                State::Option => State::Data,
                State::Sub => {
                    if b == IAC {
                        State::SubIac
                    } else {
                        State::Sub
                    }
                }
                State::SubIac => {
                    if b == SE {
                        State::Data
                    } else {
                        State::Sub
                    }
                }
                State::Cr if b == b'\n' || b == 0 => State::Data,
                State::Cr | State::Data => self.data(b, out),
            };
        }
    }

    /// Whether a partial line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.overflow
    }

    fn data(&mut self, b: u8, out: &mut Vec<Decoded>) -> State {
        match b {
            IAC => return State::Iac,
            b'\n' => self.finish(out),
            b'\r' => {
                self.finish(out);
                return State::Cr;
            }
            0x08 | 0x7f => {
                // Erase one character: its continuation bytes, then its first byte.
                while self.buf.last().is_some_and(|c| (0x80..0xc0).contains(c)) {
                    self.buf.pop();
                }
                self.buf.pop();
            }
            _ if self.buf.len() < self.max => self.buf.push(b),
            _ => self.overflow = true,
        }
        State::Data
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) {
        if std::mem::take(&mut self.overflow) {
            out.push(Decoded::TooLong);
        } else {
            out.push(Decoded::Line(clean(&String::from_utf8_lossy(&self.buf))));
        }
        self.buf.clear();
    }
}

/// `text` safe to show on someone else's terminal: tabs become spaces; control
/// characters (C0, DEL, C1: an ANSI escape loses its ESC) and bidirectional
/// overrides are removed; surrounding whitespace is trimmed.
pub fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => None,
            c => Some(c),
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<Decoded> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        out
    }

    fn line(s: &str) -> Decoded {
        Decoded::Line(s.to_owned())
    }

    #[test]
    fn line_endings() {
        assert_eq!(
            lines(100, &[b"a\r\nb\nc\rd\r\0e\n"]),
            vec![line("a"), line("b"), line("c"), line("d"), line("e")]
        );
        // CR and LF split across reads.
        assert_eq!(lines(100, &[b"a\r", b"\nb\n"]), vec![line("a"), line("b")]);
        assert_eq!(lines(100, &[b"no end"]), vec![]);
    }

    #[test]
    fn telnet_negotiation_is_dropped() {
        // IAC DO ECHO, IAC WILL SGA, IAC NOP, IAC SB NAWS ... IAC SE.
        let mut input = vec![IAC, 253, 1, b'h', IAC, 251, 3, b'i', IAC, 241];
        input.extend([IAC, SB, 31, 0, 80, IAC, IAC, 0, 24, IAC, SE]);
        input.extend(b"!\r\n");
        assert_eq!(lines(100, &[&input]), vec![line("hi!")]);
        // Split in every place.
        let mut d = LineDecoder::new(100);
        let mut out = Vec::new();
        for b in &input {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, vec![line("hi!")]);
    }

    #[test]
    fn backspace_erases_whole_characters() {
        assert_eq!(lines(100, &["héé\x08\x7fx\n".as_bytes()]), vec![line("hx")]);
        assert_eq!(lines(100, &[b"\x08\x08ok\n"]), vec![line("ok")]);
    }

    #[test]
    fn invalid_utf8_and_controls() {
        assert_eq!(
            lines(100, &[b"a\x80\xfeb\n"]),
            vec![line("a\u{fffd}\u{fffd}b")]
        );
        assert_eq!(
            lines(100, &[b"\x1b[31mred\x1b[0m\tx\x07\n"]),
            vec![line("[31mred[0m x")]
        );
        assert_eq!(clean("a\u{202e}b\u{0085}c"), "abc");
    }

    #[test]
    fn long_lines_are_reported_and_dropped() {
        let big = vec![b'x'; 5000];
        assert_eq!(
            lines(10, &[&big, b"\nshort\n"]),
            vec![Decoded::TooLong, line("short")]
        );
        assert_eq!(lines(3, &[b"abc\n"]), vec![line("abc")]);
        assert_eq!(lines(3, &[b"abcd\n"]), vec![Decoded::TooLong]);
    }

    proptest! {
        #[test]
        fn never_holds_more_than_the_limit(input in proptest::collection::vec(any::<u8>(), 0..2000), max in 1usize..64) {
            let mut d = LineDecoder::new(max);
            let mut out = Vec::new();
            d.feed(&input, &mut out);
            prop_assert!(d.buf.len() <= max);
            for l in out {
                if let Decoded::Line(l) = l {
                    // U+FFFD takes 3 bytes for each replaced byte.
                    prop_assert!(l.len() <= max * 3);
                    prop_assert!(!l.chars().any(char::is_control));
                }
            }
        }
    }
}
