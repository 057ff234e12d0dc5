//! Reading the `.eml` files of the file mail transport.

use base64::Engine;
use std::path::Path;
use std::time::Duration;

/// A received message: its headers and decoded text part.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// Parses a raw RFC 5322 message with a text/plain part (quoted-printable, base64 or 7bit).
pub fn parse(raw: &str) -> Mail {
    let header = |name: &str| {
        raw.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default().trim().to_owned()
    };
    let start = raw.find("Content-Type: text/plain").expect("a text part");
    let part = &raw[start..];
    let (head, body) = part.split_once("\r\n\r\n").or_else(|| part.split_once("\n\n")).expect("part body");
    let body = body.split("\r\n--").next().unwrap_or(body);
    let text = if head.contains("base64") {
        let clean: String = body.split_whitespace().collect();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(clean).unwrap()).unwrap()
    } else if head.contains("quoted-printable") {
        decode_qp(body)
    } else {
        body.to_owned()
    };
    Mail { raw: raw.to_owned(), to: header("To"), subject: header("Subject"), text }
}

fn decode_qp(s: &str) -> String {
    let joined = s.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = joined.get(i + 1..i + 3).filter(|_| bytes[i] == b'=');
        if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `dir` holds `n` messages; returns them oldest first.
pub async fn wait_for(dir: &Path, n: usize) -> Vec<Mail> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= n {
            files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap());
            return files.iter().map(|p| parse(&std::fs::read_to_string(p).unwrap())).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} emails in {}, found {}",
            dir.display(),
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `token=` value of the first link in `text`.
pub fn token(text: &str) -> String {
    let start = text.find("token=").expect("a link with a token") + "token=".len();
    text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}
