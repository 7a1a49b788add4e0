//! Hostile traffic past the parser. `scripts/sip-netfuzz.py` plays two phones through whole calls
//! and mutates what it sends at the header level (headers dropped, duplicated or given hostile
//! values; CSeq, tags, branches, status codes and session descriptions changed; requests of every
//! method inside the dialogs), so that its messages parse and reach the transaction layer, the
//! dialogs and the B2BUA, where `tests/sip_torture.rs` stops at the parser; TCP connections carry
//! such messages cut at random places, pipelined, with lying Content-Lengths and junk between
//! them. Afterwards the server must still work: no thread of it panicked, and a clean SIPp call
//! goes through and is recorded.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::sipp::{must_pass, register, spawn_sipp};
use common::{Db, TestDb};
use switchboard::config::Transport;
use switchboard::store::PartyOutcome;

#[tokio::test(flavor = "multi_thread")]
async fn mutated_calls_leave_the_server_working() {
    // Any panic on any thread of this process (the server's included) is counted, even one the
    // server would survive.
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let tdb = TestDb::new(Db::Sqlite).await;
    // Bans off in effect: the fuzzer's mutated credentials would ban 127.0.0.1 within seconds.
    let (server, _data) = common::start_server(
        &tdb,
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nrealm = \"test.example\"\ndigest_algorithms = [\"MD5\", \"SHA-256\"]",
        "[calls]\nno_answer_secs = 2\n[security]\nban_failures = 1000000\nban_window_secs = 1\n",
    )
    .await;
    common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    let carol = common::user_with_phone(&server, "300", "carol", "carol-secret").await;
    let to = common::sip_addr(&server, Transport::Udp);
    let tcp = common::sip_addr(&server, Transport::Tcp).port().to_string();

    let secs = std::env::var("NETFUZZ_SECS").unwrap_or_else(|_| "20".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sip-netfuzz.py");
    let fuzzers: Vec<_> = (1..=2)
        .map(|seed: u32| {
            let (secs, tcp) = (secs.clone(), tcp.clone());
            tokio::task::spawn_blocking(move || {
                Command::new("python3")
                    .args([
                        script,
                        &to.to_string(),
                        "alice:alice-secret",
                        "bob:bob-secret",
                    ])
                    .args(["200", &secs, &seed.to_string(), &tcp])
                    .output()
                    .expect("python3 runs")
            })
        })
        .collect();
    for f in fuzzers {
        let out = f.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The fuzzer reports its calls and what the caller got; calls must have got through
        // to the callee, or the mutations never reached the B2BUA.
        eprintln!("{stdout}");
        assert!(stdout.contains("'callee rang'"), "{stdout}");
        assert!(stdout.contains("'tcp answered'"), "{stdout}");
    }

    // A clean call, after all that: carol answers, alice calls, and the record is written.
    let port = common::free_udp_port();
    register(&server, "carol", "carol-secret", port).await;
    let callee = spawn_sipp("call_uas.xml", to, port, &[]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let caller = spawn_sipp(
        "call_uac.xml",
        to,
        common::free_udp_port(),
        &[
            "-s",
            "300",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-d",
            "200",
        ],
    );
    must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    let entry = common::only_entry(&server, carol).await;
    assert_eq!(entry.outcome, PartyOutcome::Answered);
    assert_eq!(entry.other_number, "100");

    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    server.shutdown().await;
}
