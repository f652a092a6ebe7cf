//! The SMTP sink: a stack's mail relay points here; every message is
//! accepted (250) and kept as an effect. The protocol is mailin's state
//! machine; this module only moves lines between it and the socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mailin::{Action, Handler, Response, SessionBuilder};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{exchange_of, Effect, EffectSource, STACKS};
use crate::capture::Body;

/// Longest line or message kept; a longer message is cut (its effect says so).
const MAX_MESSAGE: usize = 1 << 20;

/// A running SMTP sink for one stack.
pub struct SmtpSink {
    stack: usize,
    addr: SocketAddr,
    kept: Arc<Mutex<Kept>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Kept {
    effects: Vec<Effect>,
    last: Option<Instant>,
}

impl SmtpSink {
    /// Accepts `stack`'s mail on `listener`.
    pub fn start(stack: usize, listener: TcpListener) -> io::Result<SmtpSink> {
        let addr = listener.local_addr()?;
        let kept = Arc::new(Mutex::new(Kept::default()));
        let task = tokio::spawn({
            let kept = kept.clone();
            async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    tokio::spawn(converse(stream, peer.ip(), stack, kept.clone()));
                }
            }
        });
        Ok(SmtpSink {
            stack,
            addr,
            kept,
            task,
        })
    }

    /// Where it listens, as a stack's SMTP host and port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EffectSource for SmtpSink {
    fn describe(&self) -> String {
        format!("{} SMTP sink at {}", STACKS[self.stack], self.addr)
    }

    fn stack(&self) -> usize {
        self.stack
    }

    fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut self.kept.lock().expect("sink lock").effects)
    }

    fn last_at(&self) -> Option<Instant> {
        self.kept.lock().expect("sink lock").last
    }
}

/// One SMTP connection: lines in, mailin's responses out.
async fn converse(stream: TcpStream, peer: IpAddr, stack: usize, kept: Arc<Mutex<Kept>>) {
    // Replies are small and each waits for the client's next line: without
    // this a delayed ACK holds every message back 40 ms.
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let handler = Message {
        stack,
        kept,
        ..Message::default()
    };
    let mut session = SessionBuilder::new("tandem").build(peer, handler);
    if send(&mut write, &session.greeting()).await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Close => {
                let _ = send(&mut write, &response).await;
                return;
            }
            // No STARTTLS is offered; a client asking anyway is answered.
            Action::Reply | Action::UpgradeTls => {
                if send(&mut write, &response).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send(write: &mut tokio::net::tcp::OwnedWriteHalf, response: &Response) -> io::Result<()> {
    write.write_all(&response.buffer()?).await
}

/// The message of one SMTP transaction, kept as an effect when it ends.
#[derive(Default)]
struct Message {
    stack: usize,
    kept: Arc<Mutex<Kept>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Message {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        let room = MAX_MESSAGE.saturating_sub(self.data.len());
        self.data.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let effect = effect_of(self.stack, &self.from, &self.to, &self.data);
        let mut kept = self.kept.lock().expect("sink lock");
        kept.effects.push(effect);
        kept.last = Some(Instant::now());
        mailin::response::OK
    }
}

/// A message as an effect: its kind is `mail` and its subject with digit
/// runs as `{n}` (`mail Order {n} confirmed`), so that each stack's ids
/// do not split one kind in two; its body, for the differ, is JSON:
/// envelope, subject, the other headers but the ones every message has
/// its own of (Date, Message-ID), and the text.
fn effect_of(stack: usize, from: &str, to: &[String], data: &[u8]) -> Effect {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((&text, ""));
    let mut headers = Vec::new();
    for line in head.lines() {
        match line.chars().next() {
            // A folded header continues the one before.
            Some(' ' | '\t') => {
                if let Some((_, value)) = headers.last_mut() {
                    let value: &mut String = value;
                    value.push(' ');
                    value.push_str(line.trim());
                }
            }
            _ => {
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let subject = header("subject").unwrap_or_default();
    let exchange = header("traceparent").as_deref().and_then(exchange_of);
    let others: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "date" | "message-id" | "subject" | "traceparent"
            )
        })
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    let message = json!({
        "from": from, "to": to, "subject": subject, "headers": others,
        "text": body.trim_end(),
    });
    Effect {
        stack,
        kind: format!("mail {}", digits_as_n(&subject)),
        method: "MAIL".to_string(),
        target: "/smtp".to_string(),
        at_unix_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        exchange,
        headers: Vec::new(),
        body: Body(serde_json::to_vec(&message).unwrap_or_default().into()),
    }
}

/// `Order 1042 confirmed` as `Order {n} confirmed`.
fn digits_as_n(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("{n}");
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_an_effect_of_its_kind() {
        let data = b"From: shop@example.com\r\nSubject: Order 1042\r\n confirmed\r\nDate: now\r\n\r\nTotal 12.50 EUR\r\n";
        let effect = effect_of(1, "shop@example.com", &["c1@example.com".into()], data);
        assert_eq!(effect.kind, "mail Order {n} confirmed");
        let body: serde_json::Value = serde_json::from_slice(effect.body.bytes()).unwrap();
        assert_eq!(body["subject"], "Order 1042 confirmed");
        assert_eq!(body["text"], "Total 12.50 EUR");
        assert_eq!(body["to"][0], "c1@example.com");
        assert!(body["headers"].get("date").is_none());
    }
}
