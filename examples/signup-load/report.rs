//! The numbers of one run: matching mails to sign-ups, the latency histograms, and the costs
//! per accepted sign-up, as a summary block or one JSON line.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{
    Args,
    accounting::PG_COUNTERS,
    load::{Sample, refusals},
    sink::{Clock, Mails},
};

/// What the window cost, per process and per database.
pub(crate) struct Costs<'a> {
    /// Process groups, in the order of `ticks` and (for the processes) `log_bytes`.
    pub(crate) names: &'a [&'a str],
    pub(crate) ticks: &'a [u64],
    /// Of PostgreSQL's ticks, those of the backends connected to the run's databases.
    pub(crate) backend_ticks: u64,
    pub(crate) machine_ticks: u64,
    pub(crate) clock_ticks: u64,
    pub(crate) window: Duration,
    pub(crate) log_bytes: &'a [u64],
    pub(crate) databases: &'a [String],
    pub(crate) pg_stats: &'a [[i64; 6]],
}

pub(crate) struct Report {
    json: Value,
    text: String,
    pub(crate) lost: usize,
}

/// p50, p90, p99 and max in milliseconds.
fn quantiles(histogram: &Histogram<u64>) -> [f64; 4] {
    let ms = |micros: u64| micros as f64 / 1000.0;
    [
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
    ]
}

fn quantiles_json(q: [f64; 4]) -> Value {
    json!({"p50_ms": q[0], "p90_ms": q[1], "p99_ms": q[2], "max_ms": q[3]})
}

fn quantiles_text(q: [f64; 4]) -> String {
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q[0], q[1], q[2], q[3]
    )
}

impl Report {
    pub(crate) fn new(
        args: &Args,
        samples: &[Sample],
        mails: &Mails,
        clock: Clock,
        costs: Costs<'_>,
    ) -> anyhow::Result<Self> {
        let mut http = Histogram::<u64>::new(3)?;
        let mut to_mail = Histogram::<u64>::new(3)?;
        let (mut lost, mut duplicated) = (0, 0);
        let first_due = samples.iter().map(|s| clock.unix_nanos(s.due)).min();
        let mut last_mail = None;
        for sample in samples {
            http.record(micros(sample.latency.as_nanos()))?;
            if !sample.accepted() {
                continue;
            }
            let Some(arrivals) = mails.verification.get(&sample.email) else {
                lost += 1;
                continue;
            };
            duplicated += arrivals.len() - 1;
            let first = arrivals.iter().copied().min().unwrap_or_default();
            last_mail = last_mail.max(Some(first));
            let due = clock.unix_nanos(sample.due);
            to_mail.record(micros(u128::from(first.saturating_sub(due))))?;
        }
        let accepted = samples.iter().filter(|s| s.accepted()).count();
        let refused = refusals(samples);
        let measured = match (first_due, last_mail) {
            (Some(first), Some(last)) => Duration::from_nanos(last.saturating_sub(first)),
            _ => Duration::ZERO,
        };
        let per_second = accepted as f64 / measured.as_secs_f64().max(1e-9);
        let per_signup = accepted.max(1) as f64;
        let cpu_ms = |ticks: u64| ticks as f64 * 1000.0 / costs.clock_ticks as f64 / per_signup;
        let is_load = |name: &str| name == "harness" || name == "smtp-sink";
        let pipeline: u64 = (costs.names.iter().zip(costs.ticks))
            .filter(|(name, _)| !is_load(name))
            .map(|(_, t)| t)
            .sum();
        let total: u64 = costs.ticks.iter().sum();
        let mode = match args.rate {
            Some(rate) => format!("open loop, {rate}/s"),
            None => format!("closed loop, concurrency {}", args.concurrency),
        };
        let argon2 = format!(
            "m={} KiB, t={}, p=1",
            args.argon2_memory_kib, args.argon2_iterations
        );
        let http_q = quantiles(&http);
        let mail_q = quantiles(&to_mail);

        let mut json = json!({
            "mode": mode,
            "argon2": argon2,
            "warmup": args.warmup,
            "sent": samples.len(),
            "accepted": accepted,
            "refused": refused,
            "window_s": measured.as_secs_f64(),
            "signups_per_s": per_second,
            "http_latency": quantiles_json(http_q),
            "register_to_verification_mail": quantiles_json(mail_q),
            "lost_mails": lost,
            "duplicated_mails": duplicated,
            "other_mails": mails.other,
            "clock_ticks_per_s": costs.clock_ticks,
            "cpu_window_s": costs.window.as_secs_f64(),
        });
        let mut text = String::new();
        let out = &mut text;
        writeln!(
            out,
            "signup-load: {mode}, {} sign-ups after {} warm-up, argon2id {argon2}",
            samples.len(),
            args.warmup
        )?;
        writeln!(
            out,
            "accepted:            {accepted} of {} in {:.2} s (first send → last verification mail) = {per_second:.1} sign-ups/s",
            samples.len(),
            measured.as_secs_f64()
        )?;
        let refused_text: Vec<String> = refused.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let refused_text = match refused_text.is_empty() {
            true => "none".to_owned(),
            false => refused_text.join(", "),
        };
        writeln!(out, "non-201 answers:     {refused_text}")?;
        writeln!(out, "HTTP latency:        {}", quantiles_text(http_q))?;
        writeln!(out, "register → mail:     {}", quantiles_text(mail_q))?;
        writeln!(
            out,
            "mails:               lost {lost}, duplicated {duplicated}, other mails {}",
            mails.other
        )?;
        writeln!(
            out,
            "CPU per sign-up (kernel accounting, CLK_TCK {}, window {:.2} s):",
            costs.clock_ticks,
            costs.window.as_secs_f64()
        )?;
        let mut cpu = BTreeMap::new();
        for (name, ticks) in costs.names.iter().zip(costs.ticks) {
            let note = match *name {
                "user-service" => format!(" (argon2id {argon2} included)"),
                "postgres" => format!(
                    " (every postgres process; backends of this run's databases {:.3})",
                    cpu_ms(costs.backend_ticks)
                ),
                "rabbitmq" => " (the whole broker: beam.smp and helpers)".to_owned(),
                _ => String::new(),
            };
            writeln!(out, "  {name:<16} {:>8.3} ms{note}", cpu_ms(*ticks))?;
            cpu.insert(name.to_string(), cpu_ms(*ticks));
        }
        writeln!(
            out,
            "  {:<16} {:>8.3} ms (services, PostgreSQL, RabbitMQ)",
            "pipeline",
            cpu_ms(pipeline)
        )?;
        writeln!(
            out,
            "  {:<16} {:>8.3} ms (plus the harness and the sink)",
            "total",
            cpu_ms(total)
        )?;
        writeln!(
            out,
            "  {:<16} {:>8.3} ms (all CPUs busy, /proc/stat: includes other work on the machine)",
            "machine",
            cpu_ms(costs.machine_ticks)
        )?;
        cpu.insert("postgres_run_backends".into(), cpu_ms(costs.backend_ticks));
        cpu.insert("pipeline".into(), cpu_ms(pipeline));
        cpu.insert("total".into(), cpu_ms(total));
        cpu.insert("machine".into(), cpu_ms(costs.machine_ticks));
        json["cpu_ms_per_signup"] = json!(cpu);

        let mut logs = BTreeMap::new();
        write!(out, "log bytes per sign-up:")?;
        for (name, bytes) in costs.names.iter().zip(costs.log_bytes) {
            if is_load(name) {
                continue;
            }
            let per = *bytes as f64 / per_signup;
            write!(out, " {name} {per:.0}")?;
            logs.insert(name.to_string(), per);
        }
        writeln!(out, " (LOG_FORMAT={})", args.log_format)?;
        json["log_bytes_per_signup"] = json!(logs);

        writeln!(
            out,
            "PostgreSQL per sign-up (pg_stat_database deltas, read {:?} after each end; flushed asynchronously, so approximate):",
            args.stats_settle
        )?;
        let mut pg = BTreeMap::new();
        for (database, counters) in costs.databases.iter().zip(costs.pg_stats) {
            let per: BTreeMap<&str, f64> = PG_COUNTERS
                .iter()
                .zip(counters)
                .map(|(name, value)| (*name, *value as f64 / per_signup))
                .collect();
            let line: Vec<String> = per.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            writeln!(out, "  {database}: {}", line.join(", "))?;
            pg.insert(database.clone(), per);
        }
        json["pg_per_signup"] = json!(pg);
        Ok(Self { json, text, lost })
    }

    pub(crate) fn json(&self) -> String {
        self.json.to_string()
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

fn micros(nanos: u128) -> u64 {
    u64::try_from(nanos / 1000).unwrap_or(u64::MAX).max(1)
}
