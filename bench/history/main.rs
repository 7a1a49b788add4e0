//! Call-history query latency: 1,000,000 call records for 1,000 users in PostgreSQL (a fresh
//! schema in the test database), then `Store::call_history` timed for the default query and
//! every filter and sort combination, first pages and pages reached through a cursor. Prints
//! p50 and p99 per combination. Not a test: bench/RESULTS.md records the figures.
//!
//!   cargo bench --bench history          # CALLS=1000000 USERS=1000 QUERIES=300
//!
//! PostgreSQL at `SWITCHBOARD_BENCH_POSTGRES` (default postgres://postgres@127.0.0.1:5432/test).
//! The records are generated inside PostgreSQL (`generate_series`), as the B2BUA would write
//! them: every call has its caller's outgoing party and, for three calls in four, the callee's
//! incoming one (the rest go out through a trunk); a fifth of the calls are unanswered.

use std::time::{Duration, Instant};

use switchboard::store::{
    DirectionFilter, HistoryQuery, HistorySort, OutcomeFilter, SortOrder, Store,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let calls = env_or("CALLS", 1_000_000);
    let users = env_or("USERS", 1_000);
    let queries = env_or("QUERIES", 300) as usize;
    let base = std::env::var("SWITCHBOARD_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("sb_bench_history_{}", std::process::id());
    let admin = Store::connect(&base).await.expect("PostgreSQL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(admin.pool())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::open(&url).await.expect("open store");

    println!("== history: {calls} calls, {users} users, PostgreSQL schema {schema}");
    let t = Instant::now();
    let pool = store.pool();
    for sql in [
        format!(
            "INSERT INTO users (extension, display_name, email, created_at) \
             SELECT (1000 + g)::text, 'User ' || g, 'u' || g || '@example.com', 0 \
             FROM generate_series(1, {users}) g"
        ),
        // Call g: from user (g % U) + 1 to user (g * 7 % U) + 1, or to a number outside.
        format!(
            "INSERT INTO calls (call_ref, started_at, answered_at, ended_at, outcome, \
               hangup_cause, caller_number, caller_name, dialled_number, callee_number, \
               callee_name, click_to_call, trunk) \
             SELECT 'bench-' || g, 1700000000000 + g * 1000, \
               CASE WHEN g % 5 <> 0 THEN 1700000000000 + g * 1000 + 3000 END, \
               1700000000000 + g * 1000 + 3000 + (g % 600) * 1000, \
               CASE WHEN g % 5 <> 0 THEN 'answered' WHEN g % 10 = 0 THEN 'no_answer' \
                    ELSE 'busy' END, 'caller', (1000 + g % {users} + 1)::text, 'User', \
               '0301234' || (g % 1000), '0301234' || (g % 1000), 'Name ' || (g % 97), \
               g % 13 = 0, NULL \
             FROM generate_series(1, {calls}) g"
        ),
        format!(
            "INSERT INTO call_parties (call_id, user_id, direction, other_number, other_name, \
               other_name_key, answered_by, started_at, answered_at, duration_ms, outcome, \
               click_to_call) \
             SELECT c.id, (c.id % {users}) + 1, 'outgoing', \
               CASE WHEN c.id % 4 = 0 THEN '+49301234' || (c.id % 1000) \
                    ELSE (1000 + (c.id * 7 % {users}) + 1)::text END, \
               'Name ' || (c.id % 97), 'name ' || (c.id % 97), NULL, c.started_at, \
               c.answered_at, COALESCE(c.ended_at - c.answered_at, 0), c.outcome, \
               c.click_to_call \
             FROM calls c"
        ),
        format!(
            "INSERT INTO call_parties (call_id, user_id, direction, other_number, other_name, \
               other_name_key, answered_by, started_at, answered_at, duration_ms, outcome, \
               click_to_call) \
             SELECT c.id, (c.id * 7 % {users}) + 1, 'incoming', \
               (1000 + (c.id % {users}) + 1)::text, 'User ' || ((c.id % {users}) + 1), \
               'user ' || ((c.id % {users}) + 1), \
               CASE WHEN c.answered_at IS NOT NULL THEN 'phone:' || (c.id % 50) END, \
               c.started_at, c.answered_at, COALESCE(c.ended_at - c.answered_at, 0), \
               CASE WHEN c.outcome = 'answered' THEN 'answered' ELSE 'missed' END, false \
             FROM calls c WHERE c.id % 4 <> 0"
        ),
        "ANALYZE".to_owned(),
    ] {
        sqlx::query(&sql).execute(pool).await.expect("populate");
    }
    let parties: i64 = sqlx::query_scalar("SELECT count(*) FROM call_parties")
        .fetch_one(pool)
        .await
        .expect("count");
    println!(
        "   populated in {:.1} s: {parties} history entries ({} per user)",
        t.elapsed().as_secs_f64(),
        parties / users as i64
    );

    let mut cases: Vec<(String, HistoryQuery)> = vec![("default".into(), HistoryQuery::default())];
    for (dn, d) in [
        ("incoming", DirectionFilter::Incoming),
        ("outgoing", DirectionFilter::Outgoing),
        ("all", DirectionFilter::All),
    ] {
        for (on, o) in [
            ("answered", OutcomeFilter::Answered),
            ("missed", OutcomeFilter::Missed),
            ("all", OutcomeFilter::All),
        ] {
            cases.push((
                format!("direction={dn} outcome={on}"),
                HistoryQuery {
                    direction: d,
                    outcome: o,
                    ..HistoryQuery::default()
                },
            ));
        }
    }
    for (sn, s) in [
        ("time", HistorySort::Time),
        ("number", HistorySort::Number),
        ("name", HistorySort::Name),
        ("duration", HistorySort::Duration),
        ("outcome", HistorySort::Outcome),
    ] {
        for (on, o) in [("asc", SortOrder::Asc), ("desc", SortOrder::Desc)] {
            cases.push((
                format!("sort={sn} order={on}"),
                HistoryQuery {
                    sort: s,
                    order: o,
                    ..HistoryQuery::default()
                },
            ));
            cases.push((
                format!("sort={sn} order={on} direction=incoming outcome=missed"),
                HistoryQuery {
                    sort: s,
                    order: o,
                    direction: DirectionFilter::Incoming,
                    outcome: OutcomeFilter::Missed,
                    ..HistoryQuery::default()
                },
            ));
        }
    }

    println!(
        "   {:<58} {:>9} {:>9} {:>9} {:>9}",
        "query (limit 50)", "p50 ms", "p99 ms", "page2 p50", "page2 p99"
    );
    let mut worst = Duration::ZERO;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for (name, q) in &cases {
        let mut first = Vec::with_capacity(queries);
        let mut second = Vec::with_capacity(queries);
        for _ in 0..queries {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let user = (seed % users) as i64 + 1;
            let t = Instant::now();
            let page = store.call_history(user, q).await.expect("query");
            first.push(t.elapsed());
            if let Some(cursor) = page.next_cursor {
                let q2 = HistoryQuery {
                    cursor: Some(cursor),
                    ..q.clone()
                };
                let t = Instant::now();
                store.call_history(user, &q2).await.expect("page 2");
                second.push(t.elapsed());
            }
        }
        first.sort();
        second.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (p50, p99) = (percentile(&first, 0.5), percentile(&first, 0.99));
        let (q50, q99) = if second.is_empty() {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (percentile(&second, 0.5), percentile(&second, 0.99))
        };
        worst = worst.max(p99).max(q99);
        println!(
            "   {:<58} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            ms(p50),
            ms(p99),
            ms(q50),
            ms(q99)
        );
    }
    println!(
        "== worst p99 over every combination and page: {:.2} ms (target < 10 ms)",
        worst.as_secs_f64() * 1000.0
    );
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(admin.pool())
        .await
        .expect("drop schema");
    admin.close().await;
}
