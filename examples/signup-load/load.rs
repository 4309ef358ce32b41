//! The load: unique sign-ups over HTTP, in a closed loop (a fixed number of clients) or an
//! open loop (arrivals on a fixed schedule, latencies counted from the scheduled time).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// One sign-up's answer.
pub(crate) struct Sample {
    pub(crate) email: String,
    /// When it was due: the send time (closed loop) or the scheduled time (open loop).
    pub(crate) due: Instant,
    pub(crate) latency: Duration,
    /// The HTTP status, `None` for a transport error or timeout.
    pub(crate) status: Option<u16>,
}

impl Sample {
    pub(crate) fn accepted(&self) -> bool {
        self.status == Some(201)
    }
}

/// Sends one sign-up due at `due` and reads the whole answer.
async fn register(client: reqwest::Client, url: Arc<str>, email: String, due: Instant) -> Sample {
    let body = serde_json::json!({"email": email, "password": "load test password 15"});
    let answer = client.post(&*url).json(&body).send().await;
    let status = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            response.bytes().await.ok().map(|_| status)
        }
        Err(_) => None,
    };
    Sample {
        email,
        due,
        latency: due.elapsed(),
        status,
    }
}

fn email(run: &str, i: usize) -> String {
    format!("load-{run}-{i}@example.com")
}

/// Closed loop: `concurrency` clients, each sending the next sign-up when its answer came, for
/// indices `first..first + count` or until `duration` has passed.
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    url: &Arc<str>,
    run: &Arc<str>,
    first: usize,
    count: Option<usize>,
    concurrency: usize,
    duration: Option<Duration>,
) -> Vec<Sample> {
    let next = Arc::new(AtomicUsize::new(first));
    let end = count.map_or(usize::MAX, |count| first + count);
    let deadline = duration.map(|d| Instant::now() + d);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, url, run, next) = (client.clone(), url.clone(), run.clone(), next.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return samples;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return samples;
                    }
                    let sample =
                        register(client.clone(), url.clone(), email(&run, i), Instant::now());
                    samples.push(sample.await);
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.expect("a load worker panicked"));
    }
    samples
}

/// Open loop: sign-up `k` is due at `k / rate` seconds and sent then by a task of its own.
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    url: &Arc<str>,
    run: &str,
    first: usize,
    count: usize,
    rate: f64,
) -> Vec<Sample> {
    let start = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(count);
    for k in 0..count {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let email = email(run, first + k);
        tasks.push(tokio::spawn(register(
            client.clone(),
            url.clone(),
            email,
            due,
        )));
    }
    let mut samples = Vec::with_capacity(count);
    for task in tasks {
        samples.push(task.await.expect("a sign-up task panicked"));
    }
    samples
}

/// Statuses other than 201, by status (`error` for a transport error or timeout).
pub(crate) fn refusals(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut refusals = BTreeMap::new();
    for sample in samples.iter().filter(|s| !s.accepted()) {
        let key = sample
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        *refusals.entry(key).or_default() += 1;
    }
    refusals
}
