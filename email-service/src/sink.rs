//! An in-process SMTP server for tests, benchmarks and local development.
//!
//! It speaks enough ESMTP for lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), records every
//! accepted mail (envelope and raw data) and can be switched at run time to answer 4xx, answer
//! 5xx, hang after the data, or drop every connection (down). Sockets use `TCP_NODELAY`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use email_service::{SinkBehaviour, SmtpSink};
//! let sink = SmtpSink::start().await?;          // 127.0.0.1, a free port
//! let smtp_url = sink.url();                    // give this to the email-service as SMTP_URL
//! sink.fail_next(2, SinkBehaviour::TempFail);       // the next two transactions get 451
//! let mails = sink.wait_for(1, std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// How the sink answers a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkBehaviour {
    /// `250` after the data: the mail is recorded.
    Accept,
    /// `451 4.3.0 <recipient>: …` to RCPT: a transient failure.
    TempFail,
    /// `550 5.1.1 <recipient>: …` to RCPT (unknown recipient): a permanent failure.
    PermFail,
    /// Accepts the data, then never answers.
    Hang,
    /// Closes every connection at once: the server is unreachable.
    Down,
}

/// One accepted mail.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The message as received (headers and body, dot-unstuffed, CRLF line ends).
    pub data: String,
    /// When the sink accepted it.
    pub received_at: Instant,
}

impl ReceivedMail {
    /// The first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }
}

#[derive(Debug)]
struct Shared {
    default: Mutex<SinkBehaviour>,
    scripted: Mutex<VecDeque<SinkBehaviour>>,
    mails: Mutex<Vec<ReceivedMail>>,
    count: watch::Sender<usize>,
    transactions: Mutex<Vec<Instant>>,
    latency: Mutex<Duration>,
}

impl Shared {
    fn current(&self) -> SinkBehaviour {
        *lock(&self.default)
    }

    /// The behaviour of a new transaction: a scripted one first, else the default.
    fn next_behaviour(&self) -> SinkBehaviour {
        lock(&self.transactions).push(Instant::now());
        lock(&self.scripted)
            .pop_front()
            .unwrap_or_else(|| self.current())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running sink; stops when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// `wait_for` gave up.
#[derive(Debug, thiserror::Error)]
#[error("expected {expected} mail(s) within {waited:?}, got {received}")]
pub struct WaitTimeout {
    /// Mails asked for.
    pub expected: usize,
    /// Mails received.
    pub received: usize,
    /// How long it waited.
    pub waited: Duration,
}

impl SmtpSink {
    /// Starts on `127.0.0.1` with a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            default: Mutex::new(SinkBehaviour::Accept),
            scripted: Mutex::new(VecDeque::new()),
            mails: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            transactions: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(Self { addr, shared, stop })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:<port>`, ready for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Sets how every following transaction is answered (after any scripted ones).
    pub fn set_behaviour(&self, behaviour: SinkBehaviour) {
        *lock(&self.shared.default) = behaviour;
    }

    /// The next `n` transactions get `behaviour`, then the default applies again.
    pub fn fail_next(&self, n: usize, behaviour: SinkBehaviour) {
        lock(&self.shared.scripted).extend(std::iter::repeat_n(behaviour, n));
    }

    /// Waits `latency` after receiving each mail before answering `250` (a slower server; the
    /// mail counts as received from the moment the data ended).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Every mail accepted so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.mails).clone()
    }

    /// How many mails were accepted.
    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Removes and returns the recorded mails (the count keeps growing).
    pub fn take(&self) -> Vec<ReceivedMail> {
        std::mem::take(&mut *lock(&self.shared.mails))
    }

    /// Transactions started (`MAIL FROM` commands), whatever their outcome.
    pub fn transactions(&self) -> usize {
        lock(&self.shared.transactions).len()
    }

    /// When each transaction started, in order (retry tests check the gaps).
    pub fn transaction_times(&self) -> Vec<Instant> {
        lock(&self.shared.transactions).clone()
    }

    /// Waits until at least `n` mails were accepted, at most `timeout`.
    ///
    /// # Errors
    /// [`WaitTimeout`] with the count reached.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ReceivedMail>, WaitTimeout> {
        let mut count = self.shared.count.subscribe();
        match tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await {
            Ok(Ok(_)) => Ok(self.received()),
            _ => Err(WaitTimeout {
                expected: n,
                received: self.count(),
                waited: timeout,
            }),
        }
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        if shared.current() == SinkBehaviour::Down {
            drop(stream);
            continue;
        }
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                result = session(stream, &shared) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "sink session ended");
                    }
                }
            }
        });
    }
}

/// One SMTP session.
async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let mut line = Vec::with_capacity(256);
    let mut from = String::new();
    let mut to = Vec::new();
    let mut behaviour = SinkBehaviour::Accept;
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if shared.current() == SinkBehaviour::Down {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n",
            "HELO" | "NOOP" => b"250 OK\r\n",
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                b"250 OK\r\n"
            }
            "MAIL" => {
                behaviour = shared.next_behaviour();
                if behaviour == SinkBehaviour::Down {
                    return Ok(());
                }
                from = address(command);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => match behaviour {
                // Quoting the recipient, as real servers do (Postfix, Exim).
                SinkBehaviour::TempFail | SinkBehaviour::PermFail => {
                    let (code, text) = if behaviour == SinkBehaviour::TempFail {
                        ("451 4.3.0", "Temporary failure, try again later")
                    } else {
                        ("550 5.1.1", "Recipient address rejected: unknown user")
                    };
                    let reply = format!("{code} <{}>: {text}\r\n", address(command));
                    write.write_all(reply.as_bytes()).await?;
                    continue;
                }
                _ => {
                    to.push(address(command));
                    b"250 OK\r\n"
                }
            },
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut read).await?;
                if behaviour == SinkBehaviour::Hang {
                    // Never answer; wait for the client to give up and close.
                    let mut sink = Vec::new();
                    read.read_to_end(&mut sink).await?;
                    return Ok(());
                }
                let mail = ReceivedMail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data: String::from_utf8_lossy(&data).into_owned(),
                    received_at: Instant::now(),
                };
                tracing::debug!(from = %mail.from, to = ?mail.to, "sink accepted a mail");
                lock(&shared.mails).push(mail);
                shared.count.send_modify(|c| *c += 1);
                let latency = *lock(&shared.latency);
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                b"250 2.0.0 OK queued\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Reads the DATA section up to the lone `.`, undoing dot-stuffing.
async fn read_data(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(4096);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let content = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(content);
    }
}

/// `MAIL FROM:<a@b> SIZE=…` → `a@b`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_unfolds_and_ignores_case() {
        let mail = ReceivedMail {
            from: String::new(),
            to: vec![],
            data: "Subject: a\r\n b\r\nmessage-id: <x@y>\r\n\r\nSubject: body".into(),
            received_at: Instant::now(),
        };
        assert_eq!(mail.header("subject").as_deref(), Some("a b"));
        assert_eq!(mail.header("Message-ID").as_deref(), Some("<x@y>"));
        assert_eq!(address("MAIL FROM:<a@b> SIZE=10"), "a@b");
    }
}
