//! Test support (feature `testing`), shared by every crate's tests, benchmarks and the
//! end-to-end suite:
//! - isolation: every test gets its own PostgreSQL database ([`fresh_postgres_database`]) and
//!   its own AMQP namespace ([`unique_namespace`], cleaned up by [`AmqpCleanup`]), so suites run
//!   in parallel against the real services;
//! - waiting: [`eventually`], a bounded poll (never a bare sleep);
//! - probing: [`http_get`], [`free_port`], [`scalar`], [`slow_header_clients`] (slowloris);
//! - plans: [`pinned_postgres_database`], [`pin_generic_plans`], [`rows_read_in_transaction`],
//!   [`pages_read_in_transaction`] (a cached plan's cost);
//! - events: [`user_registered`], [`signup_attempted`], sign-up events to publish or decode;
//! - logs: [`init_tracing`], which shows a test's logs when `TEST_LOG` is set (zero2prod's
//!   trick: `TEST_LOG=1 cargo test name`).
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the server
//! and the maintenance database used to create test databases; `AMQP_URL` (default
//! [`crate::amqp::DEFAULT_URL`]) names the broker.

use std::{future::Future, time::Duration};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, Statement};

use crate::events::{
    Envelope, PhoneVerificationRequestedV1, PhoneVerifiedV1, SignupAttemptedV1, UserRegisteredV1,
    VerificationDetails,
};

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| crate::amqp::DEFAULT_URL.into())
}

/// What a check passed to [`eventually`] returns: `true`, or `Some(value)`, once it holds.
pub trait Settled {
    /// What [`eventually`] returns once the check holds.
    type Value;
    /// `Some` once the check holds.
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Polls `check` every 20 ms until it returns `true` (or `Some(value)`, which is returned).
///
/// # Panics
/// After `timeout`, naming `what` was awaited.
pub async fn eventually<S, F, Fut>(timeout: Duration, what: &str, mut check: F) -> S::Value
where
    S: Settled,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await.settled() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET url` (`http://host:port/path`, or `host:port/path`) over a plain socket: `(status,
/// body)`, or `(0, "")` when nothing answers. Loopback only, no TLS (reqwest would need a TLS
/// provider for nothing).
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = address
        .split_once('/')
        .map_or((address, String::from("/")), |(a, p)| (a, format!("/{p}")));
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).await.is_err() {
        return (0, String::new());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Opens `count` connections to `addr` that send the start of an HTTP/1 request and then one
/// more header byte every `pace`, never finishing the headers (a slowloris client). Returns,
/// per connection, how long after connecting the server closed it, or `None` if it was still
/// open after `give_up` (or could not connect).
pub async fn slow_header_clients(
    addr: std::net::SocketAddr,
    count: usize,
    pace: Duration,
    give_up: Duration,
) -> Vec<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..count {
        clients.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let head = format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut tick = tokio::time::interval(pace);
            let mut buffer = [0_u8; 512];
            let deadline = tokio::time::sleep(give_up);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => return None,
                    read = stream.read(&mut buffer) => match read {
                        // Closed (or answered with an error and closed): count it as closed.
                        Ok(0) | Err(_) => return Some(started.elapsed()),
                        Ok(_) => {}
                    },
                    _ = tick.tick() => {
                        if stream.write_all(b"x").await.is_err() {
                            return Some(started.elapsed());
                        }
                    }
                }
            }
        });
    }
    let mut closed = Vec::with_capacity(count);
    while let Some(result) = clients.join_next().await {
        closed.push(result.unwrap_or(None));
    }
    closed
}

/// Runs `rabbitmqctl args…` and returns its output.
///
/// # Panics
/// When it fails.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("rabbitmqctl {args:?}: {error}"));
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The broker-side pid of the connection named `name` (its `AMQP_CONNECTION_NAME`), once the
/// broker lists it (polled for up to 10 s).
pub async fn amqp_connection_pid(name: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // RabbitMQ 3.10 has no `user_provided_name` column; the name is in the client properties.
        let listed = rabbitmqctl(&["-s", "list_connections", "pid", "client_properties"])
            .await
            .lines()
            .find(|line| line.contains(name))
            .and_then(|line| line.split('\t').next())
            .map(str::to_owned);
        if listed.is_some() || tokio::time::Instant::now() >= deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closes the connection named `name` from the broker's side ("the broker dropped us"), and
/// returns its pid.
///
/// # Panics
/// When no such connection is listed.
pub async fn close_amqp_connection(name: &str) -> String {
    let pid = amqp_connection_pid(name)
        .await
        .unwrap_or_else(|| panic!("no AMQP connection named {name}"));
    rabbitmqctl(&["close_connection", &pid, "test: connection dropped"]).await;
    pid
}

/// An environment for [`crate::settings::load_from`] from `(variable, value)` pairs.
pub fn env_vars(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a child process to bind).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// The first column of the first row of `sql` as an integer (`SELECT COUNT(*) …`).
///
/// # Panics
/// When the query fails or returns no row.
pub async fn scalar(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .unwrap_or_else(|| panic!("{sql}: no row"));
    row.try_get_by_index::<i64>(0)
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// A `user.registered.v1` event of `ann@example.com` (first name `Ann`) whose verification link
/// carries `token` and whose code is `code`, valid 24 h and 1 h from now.
pub fn user_registered(token: &str, code: &str) -> Envelope<UserRegisteredV1> {
    let now = chrono::Utc::now();
    Envelope::new(
        uuid::Uuid::new_v4(),
        now,
        UserRegisteredV1 {
            user_id: uuid::Uuid::new_v4(),
            email: "ann@example.com".into(),
            first_name: Some("Ann".into()),
            last_name: None,
            verification: VerificationDetails {
                link: format!("http://127.0.0.1:8080/user/verify?token={token}"),
                code: code.into(),
                expires_at: now + chrono::Duration::hours(24),
                code_expires_at: Some(now + chrono::Duration::hours(1)),
            },
            registered_at: Some(now),
        },
    )
}

/// A `user.signup_attempted.v1` event of `ann@example.com`: someone tried to register her
/// address again.
pub fn signup_attempted(account_verified: bool) -> Envelope<SignupAttemptedV1> {
    Envelope::new(
        uuid::Uuid::new_v4(),
        chrono::Utc::now(),
        SignupAttemptedV1 {
            user_id: uuid::Uuid::new_v4(),
            email: "ann@example.com".into(),
            attempted_at: chrono::Utc::now(),
            account_verified,
        },
    )
}

/// A `user.phone_verification_requested.v1` event: code `code` for `+447700900123`, valid for
/// ten minutes, first send.
pub fn phone_verification_requested(code: &str) -> Envelope<PhoneVerificationRequestedV1> {
    Envelope::new(
        uuid::Uuid::new_v4(),
        chrono::Utc::now(),
        PhoneVerificationRequestedV1 {
            user_id: uuid::Uuid::new_v4(),
            verification_id: uuid::Uuid::new_v4(),
            phone: "+447700900123".into(),
            code: code.into(),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
            send_number: 1,
        },
    )
}

/// A `user.phone_verified.v1` event for `+447700900123`.
pub fn phone_verified() -> Envelope<PhoneVerifiedV1> {
    Envelope::new(
        uuid::Uuid::new_v4(),
        chrono::Utc::now(),
        PhoneVerifiedV1 {
            user_id: uuid::Uuid::new_v4(),
            verification_id: uuid::Uuid::new_v4(),
            phone: "+447700900123".into(),
            verified_at: chrono::Utc::now(),
        },
    )
}

/// The path of the workspace binary `name` (`user-service`, `outbox-relay`, …) that cargo built
/// next to the running test's `deps/` folder, for tests that run the services as processes.
///
/// # Panics
/// If it is not there: `cargo test --workspace` builds every binary of the workspace, and so
/// does `cargo build --bins`.
pub fn service_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; \
         `cargo test --workspace` does)",
        path.display()
    );
    path
}

/// Makes ring the process's default rustls provider (once; later calls do nothing).
///
/// The webhook-service builds reqwest with `rustls-no-provider` (its egress client brings its
/// own ring provider), and cargo unifies features: every test binary built together with it
/// (`cargo test --workspace`, the root package) gets a reqwest whose `Client::new()` panics
/// without a default provider, even for plain `http://`. [`init_tracing`] calls this too.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Installs a log subscriber for the test process once: with `TEST_LOG` set, logs at
/// `RUST_LOG` (default `info`) go to the test's captured output; without it, nothing is
/// printed. Also [`install_crypto_provider`]. Call it from every `spawn_app`-style helper.
pub fn init_tracing() {
    install_crypto_provider();
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_none() {
            // An explicit global subscriber, even one that records nothing: while a test
            // process has a single registered subscriber, tracing works out a callsite's
            // interest from the default of whichever thread reaches it first. A test capturing
            // logs with a scoped subscriber (`set_default`, the only registered one) then
            // missed every event whose callsite another test's thread had reached first.
            let _ =
                tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
            return;
        }
        use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(crate::telemetry::secret_safe_caps())
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .try_init();
    });
}

/// A unique, short namespace for AMQP names: `t<uuid>.`.
pub fn unique_namespace() -> String {
    format!("t{}.", uuid::Uuid::new_v4().simple())
}

/// Creates an empty PostgreSQL database named after `label` and returns its URL.
///
/// # Errors
/// When the server is unreachable.
pub async fn fresh_postgres_database(label: &str) -> anyhow::Result<String> {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!(
        "t_{label}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let admin = Database::connect(admin_url.as_str())
        .await
        .with_context(|| format!("connecting to TEST_DATABASE_URL {admin_url}"))?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating test database {name}"))?;
    admin.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Makes PostgreSQL plan every prepared statement of this session generically from its first
/// execution on, and keep that plan (what it does after five executions). With a one-connection
/// pool, a test can run a statement once on a small table, grow the table, and check that the
/// cached plan does not read the whole table: the plan a service caches at start-up, on new
/// tables, is kept until the next ANALYZE (never, where autovacuum is off).
///
/// # Panics
/// When the setting fails.
pub async fn pin_generic_plans(db: &impl ConnectionTrait) {
    scalar(
        db,
        "SELECT 0::bigint FROM \
         (SELECT set_config('plan_cache_mode', 'force_generic_plan', false)) s",
    )
    .await;
}

/// Rows returned by sequential scans of `table` and index entries returned by its indexes, by
/// this session and not yet reported to the statistics: the current transaction's, and those of
/// earlier ones of the last second or so (a backend reports at most once a second). Call it
/// inside the transaction that ran the statements to measure, after a setup that did not read
/// the table, or measure a difference. It shows a sequential scan or a whole-index walk that
/// returns its entries; a walk whose condition is tested inside the index returns only the
/// matches, so count pages for that ([`pages_read_in_transaction`]).
///
/// # Panics
/// When the query fails.
pub async fn rows_read_in_transaction(txn: &impl ConnectionTrait, table: &str) -> i64 {
    unreported_count(txn, "pg_stat_get_xact_tuples_returned", table).await
}

/// Pages (buffers) of `table` and its indexes used by this session and not yet reported, as
/// [`rows_read_in_transaction`] counts rows: a scan that tests its condition inside an index
/// shows here, not there. Measure a difference within one transaction.
///
/// # Panics
/// When the query fails.
pub async fn pages_read_in_transaction(txn: &impl ConnectionTrait, table: &str) -> i64 {
    unreported_count(txn, "pg_stat_get_xact_blocks_fetched", table).await
}

/// `counter` (a `pg_stat_get_xact_*` function) of `table` plus that of each of its indexes.
async fn unreported_count(txn: &impl ConnectionTrait, counter: &str, table: &str) -> i64 {
    scalar(
        txn,
        &format!(
            "SELECT ({counter}('{table}'::regclass) + COALESCE((SELECT \
             SUM({counter}(indexrelid)) FROM pg_index \
             WHERE indrelid = '{table}'::regclass), 0))::bigint"
        ),
    )
    .await
}

/// A fresh PostgreSQL database named after `label`, migrated by `M`, behind a pool of ONE
/// connection (so every statement shares its prepared statements and settings) whose plans are
/// generic from the first execution ([`pin_generic_plans`]): for tests of the plans a service
/// caches on new tables.
///
/// # Panics
/// When the database cannot be created or migrated.
pub async fn pinned_postgres_database<M: sea_orm_migration::MigratorTrait>(
    label: &str,
) -> sea_orm::DatabaseConnection {
    let url = fresh_postgres_database(label)
        .await
        .expect("a test database");
    let db = crate::database::connect_and_migrate::<M>(&url, crate::database::PoolOptions::new(1))
        .await
        .expect("the test database migrated");
    pin_generic_plans(&db).await;
    db
}

/// Deletes a test's exchange and queues when dropped (also when the test panics), so test runs
/// do not leave quorum queues behind on the shared broker.
#[derive(Debug)]
pub struct AmqpCleanup {
    topology: crate::topology::Topology,
    extra_queues: Vec<String>,
}

impl AmqpCleanup {
    /// Cleans up every name of `topology`.
    pub fn for_topology(topology: &crate::topology::Topology) -> Self {
        Self {
            topology: topology.clone(),
            extra_queues: Vec::new(),
        }
    }

    /// Also deletes `queue`.
    pub fn add_queue(&mut self, queue: String) {
        self.extra_queues.push(queue);
    }
}

impl Drop for AmqpCleanup {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let extra_queues = std::mem::take(&mut self.extra_queues);
        // Drop cannot await: delete from a short-lived runtime on its own thread.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) = crate::amqp::connect(&amqp_url(), "test-cleanup").await else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in &extra_queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = topology.delete(&channel).await;
                }
                let _ = connection.close(200, "cleanup done".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}
