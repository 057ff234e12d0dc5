//! A wire-level SMTP sink: speaks enough plain SMTP (greeting, EHLO/HELO, MAIL, RCPT, DATA
//! with dot-unstuffing, RSET, NOOP, QUIT) for a real client to deliver, and keeps what it
//! received with its envelope.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One delivered message. It reads as its raw data (`&mail` is a `&str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM:<...>`), without the brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO:<...>`), without the brackets.
    pub to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, CRLF line ends, without the final `.`.
    pub data: String,
}

impl ReceivedMail {
    /// The value of the top-level header `name` (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        header_in(head, name)
    }

    /// The decoded body of the first MIME part whose type starts with `mime` (`text/html`).
    pub fn part(&self, mime: &str) -> Option<String> {
        let body_start = self.data.find("\r\n\r\n")? + 4;
        self.data[body_start..].split("\r\n--").find_map(|chunk| {
            let (head, body) = chunk.split_once("\r\n\r\n")?;
            let content_type = header_in(head, "Content-Type")?;
            if !content_type.to_ascii_lowercase().starts_with(mime) {
                return None;
            }
            let encoding = header_in(head, "Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
            Some(match encoding.as_str() {
                "base64" => {
                    use base64::Engine;
                    let clean: String = body.split_whitespace().collect();
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(clean).ok()?).ok()?
                }
                "quoted-printable" => quoted_printable(body),
                _ => body.to_owned(),
            })
        })
    }
}

fn header_in(head: &str, name: &str) -> Option<String> {
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = joined.get(i + 1..i + 3).filter(|_| bytes[i] == b'=');
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::ops::Deref for ReceivedMail {
    type Target = str;

    fn deref(&self) -> &str {
        &self.data
    }
}

/// Listens on `127.0.0.1:<port>` until dropped.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
    accept: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<ReceivedMail>>> = Arc::default();
        let store = received.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, store.clone()));
            }
        });
        Self { port, received, accept }
    }

    /// What arrived so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.received.lock().unwrap().clone()
    }

    /// Polls until `n` messages arrived and returns them (oldest first); panics at `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "the SMTP sink got {} of {n} messages", got.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The address inside `<...>` after `prefix` (`MAIL FROM:`), if the command starts with it.
fn address(line: &str, prefix: &str) -> Option<String> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim();
    let inner = rest.strip_prefix('<')?.split('>').next()?;
    Some(inner.to_owned())
}

/// One client connection: replies to each command, stores each completed DATA.
async fn session(socket: TcpStream, store: Arc<Mutex<Vec<ReceivedMail>>>) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    if write.write_all(b"220 sink ESMTP ready\r\n").await.is_err() {
        return;
    }
    loop {
        let Some(line) = read_line(&mut reader).await else { return };
        let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
            "HELO" => b"250 sink\r\n",
            "MAIL" => match address(&line, "MAIL FROM:") {
                Some(sender) => {
                    (from, to) = (Some(sender), Vec::new());
                    b"250 sender ok\r\n"
                }
                None => b"501 syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" => match (&from, address(&line, "RCPT TO:")) {
                (None, _) => b"503 MAIL first\r\n",
                (Some(_), Some(recipient)) => {
                    to.push(recipient);
                    b"250 recipient ok\r\n"
                }
                (Some(_), None) => b"501 syntax: RCPT TO:<address>\r\n",
            },
            "DATA" if to.is_empty() => b"503 RCPT first\r\n",
            "DATA" => {
                if write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await.is_err() {
                    return;
                }
                let mut data = String::new();
                loop {
                    let Some(l) = read_line(&mut reader).await else { return };
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    data.push_str("\r\n");
                }
                let mail = ReceivedMail { from: from.take().unwrap_or_default(), to: std::mem::take(&mut to), data };
                store.lock().unwrap().push(mail);
                b"250 queued\r\n"
            }
            "RSET" => {
                (from, to) = (None, Vec::new());
                b"250 reset\r\n"
            }
            "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"502 command not implemented\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// The next line without its line end; `None` at end of stream.
async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut buf = Vec::new();
    match reader.read_until(b'\n', &mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let line = String::from_utf8_lossy(&buf);
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        }
    }
}
