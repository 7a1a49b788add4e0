//! Write transactions on SQLite wait for another connection's write lock instead of failing.
//!
//! A deferred SQLite transaction that has read and then writes while another connection holds
//! the write lock fails at once with `SQLITE_BUSY` (no busy wait). `Store` begins its write
//! transactions with `BEGIN IMMEDIATE`, so they queue for the lock within the busy timeout.

mod common;

use std::time::{Duration, Instant};

use common::{Db, TestDb};
use switchboard::directory::PhonePatch;

#[tokio::test]
async fn a_write_waits_for_another_writer_on_sqlite() {
    let tdb = TestDb::new(Db::Sqlite).await;
    let store = tdb.store().await;
    let (user_id, phone_id) =
        common::add_user_with_phone(&store, "100", "alice", "alice-secret", "r").await;

    // Another connection takes the write lock and keeps it for a while, as a transaction
    // that failed and is still being rolled back does.
    let mut other = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET display_name = 'B' WHERE id = ?")
        .bind(user_id)
        .execute(&mut *other)
        .await
        .unwrap();
    let hold = Duration::from_millis(300);
    let holder = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
    });

    // update_phone reads, then writes: as a deferred transaction it failed with SQLITE_BUSY.
    let started = Instant::now();
    let updated = store
        .update_phone(
            phone_id,
            &PhonePatch {
                name: Some("Laptop".into()),
                sip_username: None,
                password: None,
            },
            "r",
        )
        .await
        .expect("the write waits for the lock instead of failing");
    assert_eq!(updated.name, "Laptop");
    assert!(
        started.elapsed() >= hold - Duration::from_millis(50),
        "it waited for the other writer ({:?})",
        started.elapsed()
    );
    holder.await.unwrap();
}
