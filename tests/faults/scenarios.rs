//! The outages of issue 16, each against a fresh system under a load of sign-ups.

use std::{sync::Arc, time::Duration};

use email_service::SinkBehaviour;
use tokio::time::Instant;

use crate::harness::{System, addresses, restart_broker, restart_postgres};

/// Sends in flight per email-service: the bound on the duplicates one interruption can cause
/// (a mail accepted by the server but not yet recorded).
const SENDS_IN_FLIGHT: usize = 16;
const SIGN_UPS: usize = 300;
/// Every sign-up's mail must arrive within this after the load started.
const ALL_MAILED: Duration = Duration::from_secs(180);

async fn system(label: &str, extra: &[(&str, &str)]) -> Arc<System> {
    let sends = SENDS_IN_FLIGHT.to_string();
    let mut env = vec![("MAX_CONCURRENT_SENDS", sends.as_str())];
    env.extend_from_slice(extra);
    Arc::new(System::new(label, &env).await)
}

async fn mails_reach(system: &System, n: usize) {
    common::testing::eventually(Duration::from_secs(120), "mails flowing", || async {
        system.sink.count() >= n
    })
    .await;
}

/// How long after `since` the next mail arrived (the recovery time after an outage ended).
async fn next_mail_after(system: &System, since: Instant) -> Duration {
    let before = system.sink.count();
    if before >= SIGN_UPS {
        return Duration::ZERO;
    }
    common::testing::eventually(
        Duration::from_secs(120),
        "a mail after the outage",
        || async { system.sink.count() > before },
    )
    .await;
    since.elapsed()
}

fn start_load(system: &Arc<System>, emails: &[String]) -> tokio::task::JoinHandle<()> {
    let (system, emails) = (system.clone(), emails.to_vec());
    tokio::spawn(async move { system.sign_up(emails).await })
}

async fn start_one_of_each(system: &System) {
    system.start("user-1");
    system.wait_for_user_service().await;
    system.start("relay-1");
    system.start("email-1");
}

#[tokio::test]
#[ignore = "restarts the shared broker: run alone with scripts/faults.sh"]
async fn broker_restarts_mid_load_lose_nothing() {
    let system = system("faults_broker", &[]).await;
    start_one_of_each(&system).await;
    let emails = addresses("broker", SIGN_UPS);
    let load = start_load(&system, &emails);
    for (round, at) in [SIGN_UPS / 5, SIGN_UPS / 2].into_iter().enumerate() {
        mails_reach(&system, at).await;
        println!("restarting RabbitMQ at {} mails", system.sink.count());
        restart_broker(Duration::from_secs(5)).await;
        println!("RabbitMQ back at {} mails", system.sink.count());
        let recovery = next_mail_after(&system, Instant::now()).await;
        println!(
            "broker restart {}: mail flowing again {recovery:?} after it was back",
            round + 1
        );
        assert!(
            recovery < Duration::from_secs(30),
            "recovery took {recovery:?}"
        );
    }
    load.await.unwrap();
    let (_, duplicates) = system.wait_for_mails(&emails, ALL_MAILED).await;
    println!("broker restarts: {SIGN_UPS} sign-ups, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= 2 * SENDS_IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test]
#[ignore = "restarts the shared database: run alone with scripts/faults.sh"]
async fn a_postgres_restart_mid_load_loses_nothing() {
    let system = system("faults_postgres", &[]).await;
    start_one_of_each(&system).await;
    let emails = addresses("postgres", SIGN_UPS);
    let load = start_load(&system, &emails);
    mails_reach(&system, SIGN_UPS / 5).await;
    println!("restarting PostgreSQL at {} mails", system.sink.count());
    restart_postgres().await;
    println!("PostgreSQL back at {} mails", system.sink.count());
    let recovery = next_mail_after(&system, Instant::now()).await;
    println!("postgres restart: mail flowing again {recovery:?} after it was back");
    assert!(
        recovery < Duration::from_secs(30),
        "recovery took {recovery:?}"
    );
    load.await.unwrap();
    let (_, duplicates) = system.wait_for_mails(&emails, ALL_MAILED).await;
    println!("postgres restart: {SIGN_UPS} sign-ups, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= SENDS_IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test]
#[ignore = "part of the fault-injection suite: run with scripts/faults.sh"]
async fn an_smtp_outage_longer_than_the_retry_ladder_dead_letters_nothing() {
    // Ladder 200 ms, 400 ms, 1 s and 3 attempts: 1.6 s; the outage lasts 8 s.
    let system = system("faults_smtp", &[("MAX_ATTEMPTS", "3")]).await;
    start_one_of_each(&system).await;
    let emails = addresses("smtp", SIGN_UPS);
    let load = start_load(&system, &emails);
    mails_reach(&system, SIGN_UPS / 10).await;
    system.sink.set_behaviour(SinkBehaviour::TempFail);
    let attempts_before = system.sink.transactions();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let attempts = system.sink.transactions() - attempts_before;
    system.sink.set_behaviour(SinkBehaviour::Accept);
    let recovery = next_mail_after(&system, Instant::now()).await;
    println!(
        "smtp outage of 8 s: {attempts} send attempts during it; mail again {recovery:?} after"
    );
    assert!(
        recovery < Duration::from_secs(35),
        "recovery took {recovery:?}"
    );
    load.await.unwrap();
    let (_, duplicates) = system.wait_for_mails(&emails, ALL_MAILED).await;
    assert_eq!(system.dead_letters().await, 0, "nothing dead-lettered");
    println!("smtp outage: {SIGN_UPS} sign-ups, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= SENDS_IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test]
#[ignore = "part of the fault-injection suite: run with scripts/faults.sh"]
async fn each_service_sigkilled_mid_load_loses_nothing() {
    let system = system("faults_sigkill", &[]).await;
    start_one_of_each(&system).await;
    let emails = addresses("sigkill", SIGN_UPS);
    let load = start_load(&system, &emails);
    mails_reach(&system, SIGN_UPS / 6).await;
    system.kill("relay-1").await;
    system.start("relay-1");
    mails_reach(&system, SIGN_UPS / 3).await;
    system.kill("email-1").await;
    system.start("email-1");
    let restarted = Instant::now();
    let recovery = next_mail_after(&system, restarted).await;
    println!("email-service SIGKILL: mail again {recovery:?} after the restart");
    mails_reach(&system, SIGN_UPS / 2).await;
    system.kill("user-1").await;
    system.start("user-1");
    system.wait_for_user_service().await;
    load.await.unwrap();
    let (_, duplicates) = system.wait_for_mails(&emails, ALL_MAILED).await;
    println!("SIGKILL of each service: {SIGN_UPS} sign-ups, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= SENDS_IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test]
#[ignore = "part of the fault-injection suite: run with scripts/faults.sh"]
async fn three_relays_and_three_email_services_started_together_one_of_each_killed() {
    let system = system("faults_three", &[]).await;
    // All at the same instant on fresh databases: the email-services race to migrate the
    // inbox and the relays find no outbox table until the user-service has migrated.
    for name in [
        "user-1", "relay-1", "relay-2", "relay-3", "email-1", "email-2", "email-3",
    ] {
        system.start(name);
    }
    system.wait_for_user_service().await;
    let emails = addresses("three", SIGN_UPS);
    let load = start_load(&system, &emails);
    mails_reach(&system, SIGN_UPS / 3).await;
    system.kill("relay-2").await;
    system.kill("email-2").await;
    load.await.unwrap();
    let (_, duplicates) = system.wait_for_mails(&emails, ALL_MAILED).await;
    println!(
        "three of each, one of each killed: {SIGN_UPS} sign-ups, 0 lost, {duplicates} duplicates"
    );
    assert!(duplicates <= SENDS_IN_FLIGHT, "{duplicates} duplicates");
}
