//! The claim query itself: ordering rule, row locks and the cursor hint.

use outbox::OutboxRow;
use sea_orm::TransactionTrait;
use uuid::Uuid;

use crate::helpers::TestContext;

fn seqs(rows: &[OutboxRow]) -> Vec<i64> {
    rows.iter().map(|row| row.seq).collect()
}

#[tokio::test]
async fn a_claim_cursor_is_only_a_hint_every_eligible_row_is_still_claimed() {
    let ctx = TestContext::new("claim_cursor").await;
    let first = Uuid::new_v4();
    let mut aggregates = vec![first];
    aggregates.extend((0..5).map(|_| Uuid::new_v4()));
    ctx.write_events(&aggregates).await;
    // A second event of the first aggregate: not eligible while the first one is pending.
    ctx.write_events(&[first]).await;
    let all = outbox::claim_batch(&ctx.db, 100, None).await.unwrap();
    assert_eq!(all.len(), 6, "the first aggregate's second event waits");
    let s: Vec<i64> = seqs(&all);

    let txn = ctx.db.begin().await.unwrap();
    let claimed = outbox::claim_batch(&txn, 3, Some(s[3])).await.unwrap();
    assert_eq!(
        seqs(&claimed),
        [s[0], s[4], s[5]],
        "past the cursor first; the batch is then filled from before it"
    );

    // Another relay skips the locked rows instead of waiting for them.
    let other = ctx.db.begin().await.unwrap();
    let rest = outbox::claim_batch(&other, 100, None).await.unwrap();
    assert_eq!(seqs(&rest), [s[1], s[2], s[3]]);
    let past_the_end = outbox::claim_batch(&other, 100, Some(i64::MAX - 1))
        .await
        .unwrap();
    assert_eq!(
        seqs(&past_the_end),
        [s[1], s[2], s[3]],
        "a cursor past every row still finds them"
    );
    other.rollback().await.unwrap();
    txn.rollback().await.unwrap();
}
