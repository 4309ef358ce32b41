//! The recorder: a few tasks that record the attempts that end together in one transaction
//! (group commit).
//!
//! An attempt hands its [`Change`] over and waits for the answer. A free task takes the first
//! waiting change and every other one already waiting (at most [`RECORD_BATCH`]) and records
//! them with [`record::record_batch`]. Under load a commit thus records many attempts; at light
//! load a batch is one attempt and nothing waits for company. [`WORKERS`] tasks record at once,
//! so a transaction waiting for a lock (an endpoint row the API is updating, a table a
//! maintenance statement holds) delays only its own batch. If the database refuses a batch,
//! each of its changes is recorded alone, so one change it refuses cannot fail the others; if
//! the database is unreachable, every change of the batch gets the error at once.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr};
use tokio::{
    sync::{Mutex, mpsc, oneshot},
    task::JoinSet,
};

use super::record::{self, Change, Recorded};

/// The most changes one transaction records.
const RECORD_BATCH: usize = 256;

/// Transactions recording at once.
const WORKERS: usize = 4;

type Reply = oneshot::Sender<Result<Recorded, DbErr>>;
/// The queue of changes waiting, shared by the recorder tasks.
type Queue = Arc<Mutex<mpsc::Receiver<(Arc<Change>, Reply)>>>;

/// Hands changes to the recorder task; cheap to clone.
#[derive(Clone)]
pub(super) struct Recorder {
    tx: mpsc::Sender<(Arc<Change>, Reply)>,
}

impl Recorder {
    /// Starts the recorder tasks on `db`; they end once every [`Recorder`] is dropped and the
    /// changes handed over are recorded.
    pub(super) fn start(db: DatabaseConnection) -> (Self, JoinSet<()>) {
        let (tx, rx) = mpsc::channel(RECORD_BATCH * 4);
        let rx = Arc::new(Mutex::new(rx));
        let mut tasks = JoinSet::new();
        for _ in 0..WORKERS {
            tasks.spawn(run(db.clone(), rx.clone()));
        }
        (Self { tx }, tasks)
    }

    /// Records `change` (in a batch with others) and returns what recording did.
    ///
    /// # Errors
    /// The database error of its transaction, or [`DbErr::Custom`] when the recorder is gone
    /// (shutting down).
    pub(super) async fn record(&self, change: Arc<Change>) -> Result<Recorded, DbErr> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((change, reply))
            .await
            .map_err(|_| DbErr::Custom("the recorder stopped".into()))?;
        answer
            .await
            .map_err(|_| DbErr::Custom("the recorder dropped the change".into()))?
    }
}

async fn run(db: DatabaseConnection, rx: Queue) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    loop {
        // Held only while waiting for and taking a batch, not while recording it.
        if rx.lock().await.recv_many(&mut batch, RECORD_BATCH).await == 0 {
            return;
        }
        let changes: Vec<&Change> = batch.iter().map(|(change, _)| change.as_ref()).collect();
        match record::record_batch(&db, &changes).await {
            Ok(results) => {
                for ((_, reply), recorded) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(error) if batch.len() == 1 || common::database::is_unreachable(&error) => {
                // Unreachable: recording each change alone would wait out the connection
                // timeout once per change; every waiter gets the error (and retries within
                // its lease).
                let message = common::telemetry::error_chain(&error);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(DbErr::Custom(message.clone())));
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = %common::telemetry::error_chain(&error),
                    changes = batch.len(),
                    "recording a batch of attempts failed; recording each alone"
                );
                for (change, reply) in batch.drain(..) {
                    let _ = reply.send(
                        record::record_batch(&db, &[change.as_ref()])
                            .await
                            .map(|mut results| results.pop().unwrap_or_default()),
                    );
                }
            }
        }
    }
}
