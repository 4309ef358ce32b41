//! Connecting to a service database (PostgreSQL or SQLite) with the pool settings every service
//! uses, migrating it, and the migration-script runner.

use std::time::Duration;

use anyhow::Context;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    sqlx::{
        postgres::PgListener,
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};
use sea_orm_migration::MigratorTrait;
use tokio_util::sync::CancellationToken;

use crate::{backoff::Backoff, shutdown::sleep_or_cancel};

/// How a service's pool is opened; see [`connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    max_connections: u32,
    lazy: bool,
    sqlite_synchronous_normal: bool,
}

impl PoolOptions {
    /// At most `max_connections` PostgreSQL connections, opened at once.
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            lazy: false,
            sqlite_synchronous_normal: false,
        }
    }

    /// PostgreSQL connects on first use, so an unreachable server is retried by the service's
    /// loops instead of failing start-up.
    #[must_use]
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// SQLite skips the fsync per commit (`synchronous = NORMAL`). In WAL mode that stays safe
    /// against process crashes; a power loss may roll back the last commits. For a database
    /// whose last commits can be lost safely (the email-service inbox: the worst is a resend).
    #[must_use]
    pub fn sqlite_synchronous_normal(mut self) -> Self {
        self.sqlite_synchronous_normal = true;
        self
    }
}

/// Connects to `url` (`postgres://…` or `sqlite://…`).
///
/// SQLite runs with one connection in WAL mode with foreign keys on: SQLite has a single writer
/// anyway, and one connection avoids `SQLITE_BUSY` between the process's own transactions.
///
/// # Errors
/// When the database is unreachable (or, lazily, never at connect time on PostgreSQL).
pub async fn connect(url: &str, pool: PoolOptions) -> anyhow::Result<DatabaseConnection> {
    let is_sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(if is_sqlite { 1 } else { pool.max_connections })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy(pool.lazy && !is_sqlite)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            let o = o.journal_mode(SqliteJournalMode::Wal).foreign_keys(true);
            if pool.sqlite_synchronous_normal {
                o.synchronous(SqliteSynchronous::Normal)
            } else {
                o
            }
        });
    Database::connect(options).await.with_context(|| {
        format!(
            "connecting to DATABASE_URL {}",
            crate::settings::redact_url(url)
        )
    })
}

/// Key of the PostgreSQL advisory lock held while migrating (any value unique to this project:
/// "SIGNUP" in ASCII). Advisory locks are per database, so services on separate databases do not
/// wait for each other.
const MIGRATION_LOCK_KEY: i64 = 0x5349_474E_5550;

/// How long an instance waits for another one's migrations before giving up.
pub const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(300);

/// [`connect`], then applies `M`'s pending migrations.
///
/// On PostgreSQL the migrations run under an advisory lock held by a separate session, so
/// instances started at the same instant on a fresh database migrate one after the other (the
/// others then find nothing pending) instead of racing to create the same tables and dying. A
/// crashed holder's session ends, and its lock with it; a holder that hangs makes the others
/// give up after [`MIGRATION_LOCK_WAIT`] (and be restarted). The lock is per session: behind
/// PgBouncer in transaction mode, point `DATABASE_URL` at PostgreSQL itself for migrations.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn connect_and_migrate<M: MigratorTrait>(
    url: &str,
    pool: PoolOptions,
) -> anyhow::Result<DatabaseConnection> {
    let db = connect(url, pool).await?;
    let context = || {
        format!(
            "applying the migrations of DATABASE_URL {}",
            crate::settings::redact_url(url)
        )
    };
    if db.get_database_backend() == DbBackend::Postgres {
        use sea_orm::sqlx::{Connection as _, PgConnection};
        let mut lock = PgConnection::connect(url).await.with_context(context)?;
        let waiting_since = std::time::Instant::now();
        let mut logged = false;
        loop {
            let locked: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .fetch_one(&mut lock)
                .await
                .with_context(context)?;
            if locked {
                break;
            }
            anyhow::ensure!(
                waiting_since.elapsed() < MIGRATION_LOCK_WAIT,
                "another instance has been migrating DATABASE_URL {} for over {}s; giving up",
                crate::settings::redact_url(url),
                MIGRATION_LOCK_WAIT.as_secs()
            );
            if !logged {
                tracing::info!("another instance is migrating the database; waiting for it");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let migrated = M::up(&db, None).await;
        // Closing the session releases the lock too; unlock first so the next instance need not
        // wait for the close.
        let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut lock)
            .await;
        let _ = lock.close().await;
        migrated.with_context(context)?;
    } else {
        M::up(&db, None).await.with_context(context)?;
    }
    Ok(db)
}

/// `" FOR UPDATE SKIP LOCKED"` on PostgreSQL, nothing on SQLite (one writer, no row locks): the
/// suffix of a claim subquery that several instances run at once, so each takes other rows
/// instead of waiting on (or deadlocking over) the rows another holds.
pub fn skip_locked(backend: DbBackend) -> &'static str {
    if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    }
}

/// Listens on the PostgreSQL `NOTIFY` channel `channel` and calls `on_notify` for each
/// notification, and after every (re)connect, since notifications sent while disconnected are
/// lost. A notification is only a wake-up hint: the caller also polls. Reconnects with
/// [`Backoff`]; returns at `shutdown`, or at once on SQLite (no `LISTEN`).
///
/// The listener holds one connection of `db`'s pool for as long as it runs: size the pool for it.
pub async fn listen(
    db: DatabaseConnection,
    channel: &str,
    on_notify: impl Fn() + Send,
    shutdown: CancellationToken,
) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = db.get_postgres_connection_pool();
    let mut backoff = Backoff::default();
    loop {
        let error = match PgListener::connect_with(pool).await {
            Ok(mut listener) => match listener.listen(channel).await {
                Ok(()) => {
                    if backoff.is_failing() {
                        tracing::info!(channel, "LISTEN re-established: notifications are back");
                    } else {
                        tracing::debug!(channel, "listening for notifications");
                    }
                    backoff.reset();
                    on_notify();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            received = listener.try_recv() => match received {
                                Ok(_) => on_notify(),
                                Err(error) => break error,
                            },
                        }
                    }
                }
                Err(error) => error,
            },
            Err(error) => error,
        };
        if backoff.is_failing() {
            tracing::debug!(channel, %error, "LISTEN failed again");
        } else {
            tracing::warn!(channel, %error, "LISTEN failed; polling until it is re-established");
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// `retention` ago: rows last touched before it are due for deletion (saturates instead of
/// overflowing for absurd retentions).
pub fn retention_cutoff(retention: Duration) -> chrono::DateTime<chrono::Utc> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Runs a migration script written once for both backends: the placeholders `{uuid}`, `{ts}`,
/// `{json}` and `{seq}` become the backend's column types (PostgreSQL: `uuid`, `timestamptz`,
/// `jsonb`, `bigserial PRIMARY KEY`; SQLite: `blob`, `text`, `text`, `integer PRIMARY KEY
/// AUTOINCREMENT`), and the statements (separated by `;`, so none may appear in comments) run
/// one at a time.
///
/// # Errors
/// The first failing statement's error.
pub async fn run_sql_script(
    conn: &impl ConnectionTrait,
    script: &str,
) -> Result<(), sea_orm::DbErr> {
    let (uuid, ts, json, seq) = match conn.get_database_backend() {
        DbBackend::Postgres => ("uuid", "timestamptz", "jsonb", "bigserial PRIMARY KEY"),
        _ => ("blob", "text", "text", "integer PRIMARY KEY AUTOINCREMENT"),
    };
    let sql = script
        .replace("{uuid}", uuid)
        .replace("{ts}", ts)
        .replace("{json}", json)
        .replace("{seq}", seq);
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.execute_unprepared(statement).await?;
    }
    Ok(())
}

/// Whether `error` says the database could not be reached (no connection, a lost connection,
/// the pool timed out waiting for one), as opposed to a query that failed.
pub fn is_unreachable(error: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            match &**error {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed => true,
                // PostgreSQL going away: class 08 (connection exception), 57P01
                // admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now.
                Sqlx::Database(error) => error.code().is_some_and(|code| {
                    code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether any cause in `error`'s chain is a [`DbErr`] that [`is_unreachable`] (a 503 with
/// `Retry-After` rather than a 500).
pub fn any_cause_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<DbErr>())
        .any(is_unreachable)
}
