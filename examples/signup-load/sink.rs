//! The SMTP sink in a process of its own, and the harness's side of it: the sink prints one
//! line per accepted mail with its wall-clock arrival time, the harness collects the lines and
//! matches verification mails to sign-ups by recipient.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::{load::Sample, processes::Process};

/// Maps `Instant`s to wall-clock nanoseconds, which the sink process and this one share.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) instant: Instant,
    unix_nanos: u64,
}

impl Clock {
    pub(crate) fn now() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Self {
            instant: Instant::now(),
            unix_nanos: u64::try_from(since_epoch.as_nanos()).unwrap(),
        }
    }

    pub(crate) fn unix_nanos(self, at: Instant) -> u64 {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap();
        match at.checked_duration_since(self.instant) {
            Some(after) => self.unix_nanos + nanos(after),
            None => self.unix_nanos - nanos(self.instant - at),
        }
    }
}

/// The sink process: accepted mails as `mail <unix nanos> <verification|other> <recipient>`
/// lines; exits when its stdin closes (the harness is gone).
pub(crate) async fn run() -> anyhow::Result<()> {
    let sink = email_service::SmtpSink::start().await?;
    let clock = Clock::now();
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening {}\n", sink.url()).as_bytes())
        .await?;
    out.flush().await?;
    let mut stdin_closed = tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut tokio::io::sink()).await;
    });
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => return Ok(()),
            _ = poll.tick() => {}
        }
        let mut lines = String::new();
        for mail in sink.take() {
            let subject = mail.header("Subject").unwrap_or_default();
            let kind = if subject.starts_with("Confirm your email address") {
                "verification"
            } else {
                "other"
            };
            for to in &mail.to {
                let at = clock.unix_nanos(mail.received_at);
                lines.push_str(&format!("mail {at} {kind} {to}\n"));
            }
        }
        if !lines.is_empty() {
            out.write_all(lines.as_bytes()).await?;
            out.flush().await?;
        }
    }
}

/// Verification mails per recipient (wall-clock arrival times) and the count of other mails.
#[derive(Default)]
pub(crate) struct Mails {
    pub(crate) verification: HashMap<String, Vec<u64>>,
    pub(crate) other: usize,
}

/// Waits until every accepted sign-up of `samples` has its verification mail, at most
/// `timeout`; returns whether they all did.
pub(crate) async fn wait_for_mails(
    mails: &Mutex<Mails>,
    samples: &[Sample],
    timeout: Duration,
    processes: &mut [Process],
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut arrived = 0;
    let accepted: Vec<&str> = samples
        .iter()
        .filter(|s| s.accepted())
        .map(|s| s.email.as_str())
        .collect();
    loop {
        {
            let mails = mails.lock().unwrap();
            while arrived < accepted.len() && mails.verification.contains_key(accepted[arrived]) {
                arrived += 1;
            }
        }
        if arrived == accepted.len() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        for process in processes.iter_mut() {
            process.check()?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts the sink process (this executable with `--smtp-sink`) and a task that collects its
/// mail lines; returns the process, its `SMTP_URL` and the mails.
pub(crate) async fn start() -> anyhow::Result<(Process, String, Arc<Mutex<Mails>>)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--smtp-sink");
    let (sink, stdout) = Process::spawn("smtp-sink", command, true)?;
    let mut lines = BufReader::new(stdout.context("sink stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the SMTP sink did not start")??
        .context("the SMTP sink exited")?;
    let smtp_url = first
        .strip_prefix("listening ")
        .context("the sink's first line")?
        .to_owned();
    let mails = Arc::new(Mutex::new(Mails::default()));
    let reader = mails.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split(' ').skip(1);
            let (Some(at), Some(kind), Some(to)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let mut mails = reader.lock().unwrap();
            if kind == "verification" {
                let at = at.parse().unwrap_or(0);
                mails
                    .verification
                    .entry(to.to_owned())
                    .or_default()
                    .push(at);
            } else {
                mails.other += 1;
            }
        }
    });
    Ok((sink, smtp_url, mails))
}
