//! The services as child processes: spawned with their environment, their stdout and stderr
//! counted through pipes (the last lines kept for a post-mortem), polled until ready, watched
//! for an early exit, and killed when dropped.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

/// Lines of a process's output kept for when it dies.
const TAIL_LINES: usize = 20;
/// How long a service may take to answer `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Byte count and last lines of one process's stdout and stderr.
#[derive(Default)]
pub(crate) struct Tap {
    bytes: AtomicU64,
    tail: Mutex<VecDeque<String>>,
}

impl Tap {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap();
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Reads `pipe` to its end, counting every byte.
    fn drain(self: &Arc<Self>, pipe: impl AsyncRead + Unpin + Send + 'static) {
        let tap = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::with_capacity(64 * 1024, pipe);
            let mut line = Vec::with_capacity(1024);
            while lines
                .read_until(b'\n', &mut line)
                .await
                .is_ok_and(|n| n > 0)
            {
                tap.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
                let mut tail = tap.tail.lock().unwrap();
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
                drop(tail);
                line.clear();
            }
        });
    }
}

/// A running child process.
pub(crate) struct Process {
    pub(crate) name: &'static str,
    pub(crate) pid: u32,
    pub(crate) tap: Arc<Tap>,
    child: Child,
}

impl Process {
    /// Spawns `command` with piped stderr (and stdout unless `keep_stdout`, which leaves the
    /// caller to take `child.stdout`); killed on drop.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        keep_stdout: bool,
    ) -> anyhow::Result<(Self, Option<tokio::process::ChildStdout>)> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let tap = Arc::new(Tap::default());
        tap.drain(child.stderr.take().context("stderr")?);
        let stdout = child.stdout.take().context("stdout")?;
        let stdout = if keep_stdout {
            Some(stdout)
        } else {
            tap.drain(stdout);
            None
        };
        let pid = child.id().context("pid of a process just started")?;
        let process = Self {
            name,
            pid,
            tap,
            child,
        };
        Ok((process, stdout))
    }

    /// An error with the process's last lines once it has exited.
    pub(crate) fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); its last lines:\n{}",
                self.name,
                self.tap.tail()
            );
        }
        Ok(())
    }

    /// Polls `url` until it answers 2xx, at most [`READY_TIMEOUT`].
    pub(crate) async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        url: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.check()?;
            let answer = client.get(url).timeout(Duration::from_secs(2)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} not ready at {url} within {READY_TIMEOUT:?}; its last lines:\n{}",
                    self.name,
                    self.tap.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks every process every 200 ms; returns the first one's death as an error.
pub(crate) async fn watch(processes: &mut [Process]) -> anyhow::Error {
    loop {
        for process in processes.iter_mut() {
            if let Err(error) = process.check() {
                return error;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The folder of the service binaries: `--bin-dir`, else `target/<profile>` of this example
/// (`target/<profile>/examples/signup-load`).
pub(crate) fn binary_dir(bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = bin_dir {
        return Ok(dir.to_owned());
    }
    let exe = std::env::current_exe().context("own path")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .context("the example lives in target/<profile>/examples")
}

/// `dir/name`, which must exist.
pub(crate) fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries with the same profile (`cargo build --release \
         --workspace --bins --example signup-load`) or pass --bin-dir",
        path.display()
    );
    Ok(path)
}
