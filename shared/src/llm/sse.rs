//! Server-sent events framing shared by the providers: bytes → lines → `data:` payloads →
//! [`StreamItem`]s, with a stall timeout on every read.
//!
//! Framing is by line rather than by blank-line-separated event: every provider here puts
//! one complete JSON document on each `data:` line, and some compatible servers forget the
//! blank line between events.

use super::{LlmError, StreamItem};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

/// A line longer than this without a newline is not SSE from a chat API.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Turns one provider's `data:` payloads into stream items.
pub(crate) trait EventParser: Send + 'static {
    /// Handles one payload, pushing what it yields onto `out`.
    fn on_data(&mut self, data: &str, out: &mut Vec<StreamItem>) -> Result<Flow, LlmError>;

    /// The body ended without the provider's end marker: fine if the completion had finished.
    fn on_eof(&self) -> Result<(), LlmError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The provider's end marker: stop reading.
    Done,
}

/// Splits bytes into lines (`\n`, `\r\n` or `\r`), however the bytes were chunked.
#[derive(Debug, Default)]
pub(crate) struct LineDecoder {
    buf: Vec<u8>,
}

impl LineDecoder {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if any. Empty lines are returned too (callers skip them); a
    /// `\r\n` split across two reads yields one extra empty line, which is harmless.
    pub(crate) fn next_line(&mut self) -> Result<Option<String>, LlmError> {
        let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
            if self.buf.len() > MAX_LINE_BYTES {
                return Err(LlmError::Protocol(format!("a line longer than {MAX_LINE_BYTES} bytes")));
            }
            return Ok(None);
        };
        let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') { 2 } else { 1 };
        let line: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
        String::from_utf8(line).map(Some).map_err(|_| LlmError::Protocol("a line is not valid UTF-8".into()))
    }

    /// What is left after the body ended: a last line without a newline.
    pub(crate) fn finish(&mut self) -> Result<Option<String>, LlmError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.buf.push(b'\n');
        self.next_line()
    }
}

/// The payload of a `data:` line; `None` for comments (`:`), `event:`, `id:`, `retry:` and
/// empty lines.
pub(crate) fn data_payload(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("data:")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Streams the items `parser` makes of `body`. Ends after the end marker, the first error, or
/// `stall` without a byte (then with [`LlmError::Stalled`]).
pub(crate) fn drive<S, B, E, P>(body: S, stall: Duration, parser: P) -> BoxStream<'static, Result<StreamItem, LlmError>>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]>,
    E: std::error::Error,
    P: EventParser,
{
    let driver = Driver {
        body: Box::pin(body),
        stall,
        parser,
        lines: LineDecoder::default(),
        pending: VecDeque::new(),
        ended: false,
    };
    stream::unfold(driver, |mut d| async move { d.next_item().await.map(|item| (item, d)) }).boxed()
}

struct Driver<S, P> {
    body: Pin<Box<S>>,
    stall: Duration,
    parser: P,
    lines: LineDecoder,
    pending: VecDeque<Result<StreamItem, LlmError>>,
    ended: bool,
}

impl<S, B, E, P> Driver<S, P>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::error::Error,
    P: EventParser,
{
    async fn next_item(&mut self) -> Option<Result<StreamItem, LlmError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(self.stall, self.body.next()).await {
                Err(_) => self.fail(LlmError::Stalled(self.stall)),
                Ok(Some(Err(err))) => {
                    self.fail(LlmError::Connection(format!("reading the stream: {}", error_chain(&err))))
                }
                Ok(Some(Ok(bytes))) => {
                    self.lines.push(bytes.as_ref());
                    while !self.ended {
                        match self.lines.next_line() {
                            Ok(Some(line)) => self.handle_line(&line),
                            Ok(None) => break,
                            Err(err) => self.fail(err),
                        }
                    }
                }
                Ok(None) => {
                    match self.lines.finish() {
                        Ok(Some(line)) => self.handle_line(&line),
                        Ok(None) => {}
                        Err(err) => self.fail(err),
                    }
                    if !self.ended {
                        self.ended = true;
                        if let Err(err) = self.parser.on_eof() {
                            self.pending.push_back(Err(err));
                        }
                    }
                }
            }
        }
    }

    fn handle_line(&mut self, line: &str) {
        let Some(data) = data_payload(line) else { return };
        let mut items = Vec::new();
        let result = self.parser.on_data(data, &mut items);
        self.pending.extend(items.into_iter().map(Ok));
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => self.ended = true,
            Err(err) => self.fail(err),
        }
    }

    fn fail(&mut self, err: LlmError) {
        self.pending.push_back(Err(err));
        self.ended = true;
    }
}

/// An error and its sources, `: `-separated (reqwest's own text hides the cause).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut decoder = LineDecoder::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(line) = decoder.next_line().unwrap() {
                lines.push(line);
            }
        }
        lines.extend(decoder.finish().unwrap());
        lines.into_iter().filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn lines_are_reassembled_across_arbitrary_splits() {
        let body = "data: {\"a\":\"héllo\"}\r\n\r\n: keep-alive\r\nevent: ping\ndata: [DONE]\n\n".as_bytes();
        let expected = lines_of(&[body]);
        assert_eq!(expected, ["data: {\"a\":\"héllo\"}", ": keep-alive", "event: ping", "data: [DONE]"]);
        // Every split point, including inside the two-byte "é" and between \r and \n.
        for at in 0..=body.len() {
            assert_eq!(lines_of(&[&body[..at], &body[at..]]), expected, "split at {at}");
        }
        let singles: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(lines_of(&singles), expected);
        let odd: Vec<&[u8]> = body.chunks(7).collect();
        assert_eq!(lines_of(&odd), expected);
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        assert_eq!(lines_of(&[b"data: 1\ndata: [DO", b"NE]"]), ["data: 1", "data: [DONE]"]);
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        let mut decoder = LineDecoder::default();
        decoder.push(b"data: \xff\xfe\n");
        assert!(matches!(decoder.next_line(), Err(LlmError::Protocol(_))));
    }

    #[test]
    fn only_data_lines_carry_payloads() {
        assert_eq!(data_payload("data: {\"x\":1}"), Some("{\"x\":1}"));
        assert_eq!(data_payload("data:[DONE]"), Some("[DONE]"));
        assert_eq!(data_payload("data:  two spaces"), Some(" two spaces"));
        assert_eq!(data_payload(": comment"), None);
        assert_eq!(data_payload("event: message_start"), None);
        assert_eq!(data_payload("id: 3"), None);
        assert_eq!(data_payload(""), None);
    }
}
