//! Server-sent events read off a streaming response, each stamped with the time its last
//! bytes arrived.

use axum::body::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::VecDeque;
use std::time::Instant;

/// One event: its `event:` name (`message` if none), its `data:` lines joined, and when the
/// bytes that completed it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub at: Instant,
}

/// Splits a byte stream into events, however the bytes were chunked.
pub struct EventReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: Parser,
}

impl EventReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self { body: response.bytes_stream().boxed(), parser: Parser::default() }
    }

    /// The next event, or `None` once the body ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.parser.ready.pop_front() {
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(chunk) => self.parser.push(&chunk?, Instant::now()),
                None => return Ok(None),
            }
        }
    }
}

/// The framing: lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; `:` lines are
/// comments; `id:` and `retry:` are ignored.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    /// The last byte seen was a `\r` (a following `\n` belongs to it).
    after_cr: bool,
    ready: VecDeque<SseEvent>,
}

impl Parser {
    fn push(&mut self, bytes: &[u8], at: Instant) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                    self.line(&line, at);
                }
                _ => self.buf.push(b),
            }
        }
    }

    fn line(&mut self, line: &str, at: Instant) {
        if line.is_empty() {
            if !self.data.is_empty() || !self.event.is_empty() {
                let event = std::mem::take(&mut self.event);
                let event = if event.is_empty() { "message".to_owned() } else { event };
                let data = std::mem::take(&mut self.data).join("\n");
                self.ready.push_back(SseEvent { event, data, at });
            }
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_chunking_and_line_ending() {
        let text = b": keep-alive\r\n\r\nid: 1\r\nevent: delta\r\ndata: {\"text\":\"a\"}\r\n\r\nevent: done\rdata: x\rdata: y\r\rdata: z\n\n";
        let at = Instant::now();
        for split in 0..text.len() {
            let mut parser = Parser::default();
            parser.push(&text[..split], at);
            parser.push(&text[split..], at);
            let got: Vec<(String, String)> = parser.ready.into_iter().map(|e| (e.event, e.data)).collect();
            let want = [("delta", "{\"text\":\"a\"}"), ("done", "x\ny"), ("message", "z")];
            let want: Vec<(String, String)> = want.iter().map(|(e, d)| (e.to_string(), d.to_string())).collect();
            assert_eq!(got, want, "split at {split}");
        }
    }
}
