//! Instances started at the same instant on a fresh database all migrate it and come up.

use common::database::{PoolOptions, connect_and_migrate};
use sea_orm_migration::{MigrationTrait, MigratorTrait};

/// A service migrator holding just the outbox table.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        outbox::migrations()
    }
}

#[tokio::test]
async fn instances_started_together_on_a_fresh_database_all_migrate_it() {
    common::testing::init_tracing();
    let url = common::testing::fresh_postgres_database("outbox_concurrent_migrations")
        .await
        .unwrap();
    // Without serialisation most of these die racing to create `seaql_migrations` ("duplicate
    // key value violates unique constraint pg_type_typname_nsp_index").
    let starts = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(
            async move { connect_and_migrate::<Migrator>(&url, PoolOptions::new(2)).await },
        )
    });
    let mut dbs = Vec::new();
    for start in futures::future::join_all(starts).await {
        dbs.push(start.unwrap().map_err(|e| format!("{e:#}")).unwrap());
    }
    let applied = common::testing::scalar(&dbs[0], "SELECT COUNT(*) FROM seaql_migrations").await;
    assert_eq!(
        applied,
        outbox::migrations().len() as i64,
        "each migration is recorded once"
    );
    let rows = common::testing::scalar(&dbs[0], "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(rows, 0);
}
