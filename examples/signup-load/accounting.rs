//! What the window cost, from the kernel's and PostgreSQL's own accounting: CPU ticks of each
//! process from `/proc/<pid>/stat`, the machine's busy ticks from `/proc/stat`, and the
//! transaction and tuple counters of `pg_stat_database`.

use std::collections::HashMap;

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

/// A process group's CPU: named processes by pid, or every process with one of these `comm`s.
pub(crate) enum Group {
    Pid(u32),
    Comm(&'static [&'static str]),
}

/// PostgreSQL's processes: the postmaster absorbs the CPU of backends that exited in its
/// `cutime`/`cstime`, so the sum over the processes alive at the end minus the sum at the start
/// counts every backend of the window once.
pub(crate) const POSTGRES: &[&str] = &["postgres"];
/// RabbitMQ's processes (the Erlang VM and its helpers).
pub(crate) const RABBITMQ: &[&str] = &["beam.smp", "erl_child_setup", "epmd", "inet_gethost"];

/// One process's accounting.
#[derive(Clone, Copy)]
struct ProcessTicks {
    /// utime + stime + cutime + cstime.
    ticks: u64,
    /// Start time since boot: tells a reused pid apart.
    started: u64,
}

/// CPU ticks per group at one instant, plus the backends of the run's databases.
pub(crate) struct CpuSnapshot {
    groups: Vec<u64>,
    backends: HashMap<(u32, u64), u64>,
    machine_busy: u64,
}

/// `comm` and ticks of `pid`, `None` when it exited.
fn process(pid: u32) -> Option<(String, ProcessTicks)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: the comm may hold spaces and parentheses, so split at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14–17 and 22 of proc(5); `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    Some((
        comm,
        ProcessTicks {
            ticks,
            started: field(22)?,
        },
    ))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Busy ticks of every CPU since boot (everything but idle and iowait).
fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

impl CpuSnapshot {
    /// Reads every group, and the PostgreSQL backends whose title names one of `databases`.
    pub(crate) fn take(groups: &[Group], databases: &[String]) -> Self {
        let mut totals = vec![0; groups.len()];
        let mut backends = HashMap::new();
        for pid in all_pids() {
            let Some((comm, ticks)) = process(pid) else {
                continue;
            };
            for (total, group) in totals.iter_mut().zip(groups) {
                let member = match group {
                    Group::Pid(p) => *p == pid,
                    Group::Comm(names) => names.contains(&comm.as_str()),
                };
                if member {
                    *total += ticks.ticks;
                }
            }
            if comm == "postgres" {
                // A backend's title: `postgres: <user> <database> <client> <state>`.
                let title =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if title
                    .split_whitespace()
                    .any(|word| databases.iter().any(|d| d == word))
                {
                    backends.insert((pid, ticks.started), ticks.ticks);
                }
            }
        }
        Self {
            groups: totals,
            backends,
            machine_busy: machine_busy(),
        }
    }

    /// Ticks per group from `start` to `self`.
    pub(crate) fn since(&self, start: &Self) -> Vec<u64> {
        self.groups
            .iter()
            .zip(&start.groups)
            .map(|(end, start)| end.saturating_sub(*start))
            .collect()
    }

    /// Ticks of the run's backends alive at the end (a backend that exited meanwhile is missed).
    pub(crate) fn backends_since(&self, start: &Self) -> u64 {
        self.backends
            .iter()
            .map(|(key, end)| end.saturating_sub(start.backends.get(key).copied().unwrap_or(0)))
            .sum()
    }

    /// Busy ticks of the whole machine from `start` to `self`.
    pub(crate) fn machine_since(&self, start: &Self) -> u64 {
        self.machine_busy.saturating_sub(start.machine_busy)
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
pub(crate) fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// The counters of `pg_stat_database` that the report shows, in this order.
pub(crate) const PG_COUNTERS: [&str; 6] = [
    "xact_commit",
    "xact_rollback",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "tup_fetched",
];

/// Reads `pg_stat_database` through the maintenance database, so the reads do not count in
/// the databases they measure.
pub(crate) struct PgStats {
    connection: DatabaseConnection,
}

impl PgStats {
    pub(crate) async fn connect() -> anyhow::Result<Self> {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let connection = Database::connect(url.as_str())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self { connection })
    }

    /// [`PG_COUNTERS`] of each database in `databases`, in that order.
    pub(crate) async fn read(&self, databases: &[String]) -> anyhow::Result<Vec<[i64; 6]>> {
        let mut all = Vec::new();
        for database in databases {
            let sql = format!(
                "SELECT {} FROM pg_stat_database WHERE datname = $1",
                PG_COUNTERS.join(", ")
            );
            let row = self
                .connection
                .query_one_raw(Statement::from_sql_and_values(
                    self.connection.get_database_backend(),
                    sql,
                    [database.clone().into()],
                ))
                .await?
                .with_context(|| format!("no pg_stat_database row for {database}"))?;
            let mut counters = [0; 6];
            for (i, counter) in counters.iter_mut().enumerate() {
                *counter = row.try_get_by_index::<i64>(i)?;
            }
            all.push(counters);
        }
        Ok(all)
    }

    /// Drops the run's databases (best effort: the services must be gone).
    pub(crate) async fn drop_databases(&self, databases: &[String]) {
        for database in databases {
            let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            let _ = self.connection.execute_unprepared(&sql).await;
        }
    }
}
