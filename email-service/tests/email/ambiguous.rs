//! A server that takes the mail and never answers: the send times out, and the service says
//! where a duplicate may come from (the retry of a mail the server may already have accepted).

use std::time::Duration;

use email_service::SinkBehaviour;

use crate::helpers::{eventually, http_get, registered, spawn_app_with};

#[tokio::test]
async fn a_send_without_the_final_answer_is_counted_as_a_possible_duplicate() {
    let app = spawn_app_with(|settings| {
        settings.smtp_timeout = Duration::from_millis(500);
    })
    .await;
    // The first transaction gets the data and no answer; the retry is accepted.
    app.sink.fail_next(1, SinkBehaviour::Hang);
    app.publish(&registered("maybe-twice@example.com", None))
        .await;
    let mails = app.sink.wait_for(1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(mails[0].to, ["maybe-twice@example.com"]);
    let metrics = format!("http://{}/metrics", app.admin);
    eventually(
        Duration::from_secs(5),
        "the ambiguous send counted",
        || async {
            let (_, body) = http_get(&metrics).await;
            body.lines().any(|line| {
                line.starts_with("email_ambiguous_sends_total") && !line.ends_with(" 0")
            })
        },
    )
    .await;
    app.stop().await;
}
