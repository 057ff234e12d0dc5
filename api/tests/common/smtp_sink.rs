//! A wire-level SMTP sink: speaks enough plain SMTP for a client to deliver, and keeps what
//! it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ESMTP\r\n").await.ok();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("DATA") {
                            write.write_all(b"354 go on\r\n").await.ok();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                                data.push_str("\r\n");
                            }
                            store.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        } else if upper.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await.ok();
                            break;
                        } else {
                            b"250 ok\r\n"
                        };
                        write.write_all(reply).await.ok();
                    }
                });
            }
        });
        Self { port, received }
    }

    /// Waits for `n` messages (raw) or panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(std::time::Instant::now() < deadline, "the SMTP sink got {} of {n} messages", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
