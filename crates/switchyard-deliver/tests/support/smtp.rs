//! A small but real SMTP server for tests, on a loopback port: it speaks RFC 5321 over TCP
//! (greeting, `EHLO`/`HELO`, `AUTH PLAIN`/`LOGIN`, `MAIL FROM`, `RCPT TO`, `DATA` with dot
//! unstuffing, `RSET`, `NOOP`, `QUIT`), records every accepted message with its envelope,
//! and answers a chosen reply to `MAIL`, `RCPT`, the end of `DATA` or `AUTH` when told to.
//! It offers no `STARTTLS` (asked for it, it says 502). Used by `switchyard-deliver`'s SMTP
//! tests and, through `#[path]`, by `switchyard-server`'s end-to-end ones.

#![allow(dead_code)]

use base64::Engine as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The `MAIL FROM` address, without the brackets.
    pub mail_from: String,
    /// The `RCPT TO` addresses, in order, without the brackets.
    pub rcpt_to: Vec<String>,
    /// The message as sent after `DATA` (dot-unstuffed, CRLF line ends, without the final
    /// `.`).
    pub data: String,
    /// The `AUTH` login and password of the session, if it authenticated.
    pub auth: Option<(String, String)>,
}

impl Received {
    /// The header section, unfolded: (name, value) in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut out: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                out.push((k.to_string(), v.trim().to_string()));
            }
        }
        out
    }

    /// The first header of this name (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Everything after the header section.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// The commands whose reply a test can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Auth,
    Mail,
    Rcpt,
    /// The reply to the message itself, after the final `.`.
    Data,
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    answers: Vec<(Command, u16, String)>,
    /// Every command line received, in order (AUTH secrets included: it is a test).
    commands: Vec<String>,
    connections: usize,
    /// Accept connections but never greet (a server that hangs).
    stall: bool,
    /// Offer no `AUTH` in the `EHLO` answer.
    no_auth: bool,
}

/// The server; stops when dropped (its task ends with the listener's).
pub struct SmtpServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, s).await;
                });
            }
        });
        SmtpServer { port, state, task }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// From now on, answer `code text` to `command` (instead of accepting it).
    pub fn answer(&self, command: Command, code: u16, text: &str) {
        let mut s = self.state.lock().unwrap();
        s.answers.retain(|(c, _, _)| *c != command);
        s.answers.push((command, code, text.to_string()));
    }

    /// Accept everything again.
    pub fn recover(&self) {
        let mut s = self.state.lock().unwrap();
        s.answers.clear();
        s.stall = false;
    }

    /// New connections get no greeting at all.
    pub fn stall(&self) {
        self.state.lock().unwrap().stall = true;
    }

    /// From now on, `EHLO` offers no `AUTH` mechanism.
    pub fn without_auth(&self) {
        self.state.lock().unwrap().no_auth = true;
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Waits until `n` messages were accepted; panics after 30 s.
    pub async fn wait_messages(&self, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP server got {} of {n} messages; commands: {:?}",
                got.len(),
                self.commands()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` commands starting with `prefix` (case-insensitive) were received.
    pub async fn wait_commands(&self, prefix: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let count = self
                .commands()
                .iter()
                .filter(|c| {
                    c.to_ascii_uppercase()
                        .starts_with(&prefix.to_ascii_uppercase())
                })
                .count();
            if count >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP server got {count} of {n} {prefix} commands: {:?}",
                self.commands()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The address inside `<…>` after `FROM:` / `TO:`.
fn path_of(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].to_string())
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let stall = {
        let mut s = state.lock().unwrap();
        s.connections += 1;
        s.stall
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost ESMTP switchyard-test\r\n")
        .await?;
    let chosen = |c: Command| {
        state
            .lock()
            .unwrap()
            .answers
            .iter()
            .find(|(k, _, _)| *k == c)
            .map(|(_, code, text)| format!("{code} {text}\r\n"))
    };
    let mut greeted = false;
    let mut auth: Option<(String, String)> = None;
    let mut from: Option<String> = None;
    let mut rcpt: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        state.lock().unwrap().commands.push(cmd.clone());
        let (verb, arg) = match cmd.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
            None => (cmd.to_ascii_uppercase(), String::new()),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => {
                greeted = true;
                from = None;
                rcpt.clear();
                let auth = if state.lock().unwrap().no_auth {
                    ""
                } else {
                    "250-AUTH PLAIN LOGIN\r\n"
                };
                format!(
                    "250-localhost greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{auth}250 ENHANCEDSTATUSCODES\r\n"
                )
            }
            "HELO" => {
                greeted = true;
                "250 localhost\r\n".into()
            }
            "AUTH" if !greeted => "503 5.5.1 EHLO first\r\n".into(),
            "AUTH" => {
                let mut parts = arg.splitn(2, ' ');
                let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
                let initial = parts.next().map(str::to_string);
                let decode = |s: &str| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                };
                let credentials = match mechanism.as_str() {
                    "PLAIN" => {
                        let token = match initial {
                            Some(t) => t,
                            None => {
                                write.write_all(b"334 \r\n").await?;
                                line.clear();
                                lines.read_line(&mut line).await?;
                                line.trim_end().to_string()
                            }
                        };
                        let plain = decode(&token);
                        let mut f = plain.split('\0').skip(1);
                        Some((
                            f.next().unwrap_or_default().to_string(),
                            f.next().unwrap_or_default().to_string(),
                        ))
                    }
                    "LOGIN" => {
                        write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        line.clear();
                        lines.read_line(&mut line).await?;
                        let user = decode(&line);
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        line.clear();
                        lines.read_line(&mut line).await?;
                        Some((user, decode(&line)))
                    }
                    _ => None,
                };
                match (credentials, chosen(Command::Auth)) {
                    (None, _) => "504 5.5.4 mechanism not supported\r\n".into(),
                    (Some(_), Some(r)) => r,
                    (Some(c), None) => {
                        auth = Some(c);
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                }
            }
            "MAIL" if !greeted => "503 5.5.1 EHLO first\r\n".into(),
            "MAIL" => match path_of(&arg) {
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
                Some(a) => match chosen(Command::Mail) {
                    Some(r) => r,
                    None => {
                        from = Some(a);
                        rcpt.clear();
                        "250 2.1.0 Ok\r\n".into()
                    }
                },
            },
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => match path_of(&arg) {
                None => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
                Some(a) => match chosen(Command::Rcpt) {
                    Some(r) => r,
                    None => {
                        rcpt.push(a);
                        "250 2.1.5 Ok\r\n".into()
                    }
                },
            },
            "DATA" if rcpt.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let l = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(l);
                }
                let data = data
                    .strip_suffix("\r\n")
                    .map(str::to_string)
                    .unwrap_or(data);
                let reply = match chosen(Command::Data) {
                    Some(r) => r,
                    None => {
                        let mut s = state.lock().unwrap();
                        s.messages.push(Received {
                            mail_from: from.clone().unwrap_or_default(),
                            rcpt_to: rcpt.clone(),
                            data,
                            auth: auth.clone(),
                        });
                        format!("250 2.0.0 Ok: queued as Q{}\r\n", s.messages.len())
                    }
                };
                from = None;
                rcpt.clear();
                reply
            }
            "RSET" => {
                from = None;
                rcpt.clear();
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 command not recognised\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}
