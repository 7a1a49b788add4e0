//! Calls through the B2BUA between SIPp phones (Debian package `sip-tester`): a SIPp caller
//! authenticates its INVITE (407), the dialplan routes the extension to a user, the user's
//! registered SIPp phones ring, and the outcome lands in both users' call history.
//!
//! Each callee phone first registers with `register.xml` from the port it then answers on with
//! one of the `call_uas*.xml` scenarios, so the INVITE reaches it through its binding.

mod common;

use common::sipp::{
    audio_port, must_pass, received, register, rejected_scenario, spawn_sipp, SippRun,
};

use std::time::Duration;

use common::{Db, TestDb};
use switchboard::config::Transport;
use switchboard::store::{CallDirection, HistoryQuery, PartyOutcome};
use switchboard::Server;

/// Asserts that the call is in each of `users`' history, answered, and that `cause` ended it.
async fn answered_then_ended(server: &Server, users: &[i64], cause: &str) {
    for user in users {
        let entry = common::only_entry(server, *user).await;
        assert_eq!(entry.outcome, PartyOutcome::Answered, "user {user}");
    }
    assert_eq!(hangup_causes(server).await, vec![cause]);
}

/// SIP on UDP only.
const UDP: &str = "\"udp:127.0.0.1:0\"";

/// A server listening on `listen` (TOML list items) with `extra` config, and users 100 (phone
/// named `caller`, its password that name and `-secret`) and 200 (phone `bob`); their ids.
async fn server_with(
    db: &TestDb,
    listen: &str,
    extra: &str,
    caller: &str,
) -> (Server, tempfile::TempDir, i64, i64) {
    let (server, data) = common::start_server(
        db,
        &format!(
            "listen = [{listen}]\nrealm = \"test.example\"\n\
             digest_algorithms = [\"MD5\", \"SHA-256\"]"
        ),
        extra,
    )
    .await;
    let secret = format!("{caller}-secret");
    let caller = common::user_with_phone(&server, "100", caller, &secret).await;
    let bob = common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    (server, data, caller, bob)
}

/// A server with users 100 (phone `alice`) and 200 (phone `bob`), calls ringing `no_answer` s.
async fn server(db: &TestDb, no_answer: u64) -> (Server, tempfile::TempDir, i64, i64) {
    let calls = format!("[calls]\nno_answer_secs = {no_answer}\n");
    server_with(db, UDP, &calls, "alice").await
}

async fn phone_id(server: &Server, user_id: i64) -> i64 {
    server
        .store()
        .list_phones(user_id, Default::default())
        .await
        .unwrap()
        .items[0]
        .id
}

/// Registers bob's phone from a fresh port and starts `scenario` answering there.
async fn bob_answers(
    server: &Server,
    scenario: &str,
    args: &[&str],
) -> tokio::task::JoinHandle<SippRun> {
    let to = common::sip_addr(server, Transport::Udp);
    let port = common::free_udp_port();
    register(server, "bob", "bob-secret", port).await;
    let callee = spawn_sipp(scenario, to, port, args);
    // SIPp needs a moment before it listens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    callee
}

/// Alice calls extension 200 with `scenario` (plus `args`).
fn alice_calls(server: &Server, scenario: &str, args: &[&str]) -> tokio::task::JoinHandle<SippRun> {
    let mut all = vec!["-s", "200", "-au", "alice", "-ap", "alice-secret"];
    all.extend_from_slice(args);
    spawn_sipp(
        scenario,
        common::sip_addr(server, Transport::Udp),
        common::free_udp_port(),
        &all,
    )
}

/// The hang-up causes of every stored call.
async fn hangup_causes(server: &Server) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT hangup_cause FROM calls")
        .fetch_all(server.store().pool())
        .await
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// A caller that requires reliable provisionals (RFC 3262): its 180 comes with Require: 100rel
/// and an RSeq, its PRACK gets 200, and the call goes on as any other.
async fn a_caller_requiring_100rel_gets_reliable_ringing(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_100rel.xml", &["-d", "200"]);
    let caller = must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    let ringing = received(&caller, "SIP/2.0 180");
    assert!(ringing.contains("RSeq: "), "{ringing}");
    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// The callee sends its 200 again after the call ended (its copy of our ACK was lost, as far
/// as it knows): the ended call, already reduced to its ACKs, sends the same ACK again.
async fn a_2xx_after_the_call_ended_gets_its_ack_again(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_2xx_again.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac.xml", &["-d", "200"]);
    must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    let acks: Vec<&str> = callee
        .messages
        .split("message received")
        .filter(|m| m.contains("ACK sip:"))
        .collect();
    assert_eq!(acks.len(), 2, "{}", callee.messages);
    fn cseq(m: &str) -> Option<&str> {
        m.lines().map(str::trim).find(|l| l.starts_with("CSeq:"))
    }
    assert_eq!(cseq(acks[0]), cseq(acks[1]), "{}", callee.messages);
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

async fn answered_call_hung_up_by_the_caller(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac.xml", &["-d", "1000"]);
    let caller = must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;

    // What the callee saw: our INVITE with the caller's extension and name, the caller's SDP.
    let invite = callee
        .messages
        .split("message received")
        .nth(1)
        .unwrap_or_default();
    assert!(invite.contains("INVITE sip:bob@127.0.0.1"), "{invite}");
    assert!(
        invite.contains("From: \"User 100\" <sip:100@test.example>;tag="),
        "{invite}"
    );
    // Media is anchored: the callee is told to send to our relay, and so is the caller.
    let to_callee = audio_port(invite);
    assert!(invite.contains("c=IN IP4 127.0.0.1"), "{invite}");
    let ok = caller
        .messages
        .split("message received")
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 2 INVITE"))
        .unwrap_or_default();
    assert!(ok.contains("o=callee 2 2"), "{ok}");
    // Session timers (RFC 4028): we take them, and the caller refreshes.
    assert!(ok.contains("Session-Expires: 1800;refresher=uac"), "{ok}");
    assert!(ok.contains("Require: timer"), "{ok}");
    let to_caller = audio_port(ok);
    for port in [to_callee, to_caller] {
        assert!((20000..30000).contains(&port) && port % 2 == 0, "{port}");
    }
    assert_ne!(to_callee, to_caller);

    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.direction, CallDirection::Outgoing);
    assert_eq!(out.outcome, PartyOutcome::Answered);
    assert_eq!(out.other_number, "200");
    assert_eq!(out.other_name, "User 200");
    assert!(
        out.duration_ms >= 800 && out.duration_ms < 10_000,
        "{out:?}"
    );
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.direction, CallDirection::Incoming);
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    assert_eq!(inc.other_number, "100");
    let bob_phone = phone_id(&server, bob).await;
    assert_eq!(inc.answered_by, Some(format!("phone:{bob_phone}")));
    let rec = server
        .store()
        .call_by_ref(&{
            // The record's reference is the caller's dialog; find it through the entry instead.
            let all: Vec<(String,)> = sqlx::query_as("SELECT call_ref FROM calls")
                .fetch_all(server.store().pool())
                .await
                .unwrap();
            assert_eq!(all.len(), 1);
            all[0].0.clone()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.record.hangup_cause, "caller");
    server.shutdown().await;
}

/// A PCMU-only caller and a PCMA-only callee talk through the relay's conversion; when the
/// callee holds the call, its re-INVITE reaches the caller in PCMU and the caller's answer
/// reaches the callee in PCMA (each scenario checks the law it is shown).
async fn hold_across_transcoding(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_pcma_hold.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_pcmu_held.xml", &[]);
    let caller = must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    let ok = caller
        .messages
        .split("message received")
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 2 INVITE"))
        .unwrap_or_default();
    assert!(
        ok.contains("RTP/AVP 0"),
        "the caller was answered in its law: {ok}"
    );
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// A callee whose 200 has no Contact is still acknowledged and hung up where our INVITE went:
/// the call is answered, its ACK and the caller's BYE reach the callee (its scenario waits for
/// both).
async fn answer_without_contact(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_no_contact.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac.xml", &[]);
    must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// RFC 4028 with the caller naming us the refresher (`refresher=uas`): our 200 says so, and
/// half-way through the 90 s interval our UPDATE reaches the caller, naming us (its UAC)
/// `refresher=uac` (its scenario checks both), and the caller answers it; the call then ends
/// normally. Takes 45 s, the shortest interval allowed.
async fn pbx_refreshes_when_named_refresher(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _bob) = server(&tdb, 30).await;
    let long = ["-timeout", "90s", "-recv_timeout", "75s"];
    let callee = bob_answers(&server, "call_uas.xml", &long).await;
    let caller = alice_calls(&server, "call_uac_refresher_uas.xml", &long);
    let caller = must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    let update = caller
        .messages
        .split("message received")
        .find(|m| m.contains("UPDATE sip:"))
        .unwrap_or_default();
    assert!(
        update.contains("Session-Expires: 90;refresher=uac"),
        "{update}"
    );
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// The caller gives up on a re-INVITE: its CANCEL reaches the callee (whose scenario waits for
/// it), the callee's 487 comes back as the re-INVITE's answer, and the call goes on to its BYE.
async fn re_invite_cancelled_on_both_legs(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, _bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_reinvite_cancelled.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_reinvite_cancel.xml", &[]);
    must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    let cancels = callee
        .messages
        .split("message received")
        .filter(|m| m.contains("CANCEL sip:") && m.contains("CSeq: 2 CANCEL"))
        .count();
    assert!(
        cancels >= 1,
        "the callee got no CANCEL for its re-INVITE (CSeq 2)"
    );
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// Hold during a call, and the ACK of the re-INVITE's 200 lost once: we send the 200 again
/// until the ACK comes (RFC 3261 §13.3.1.4), the ACK reaches the callee, and the call goes on.
async fn re_invite_answer_is_repeated_until_acknowledged(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, _alice, _bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_reinvited.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_reinvite_late_ack.xml", &[]);
    let caller = must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    // The caller held its ACK back for 2.2 s: T1 and 3·T1 later the 200 came again.
    let oks = caller
        .messages
        .split("message received")
        .filter(|m| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 3 INVITE"))
        .count();
    assert!(oks >= 3, "the re-INVITE's 200 came {oks} times");
    // The callee's hold answer went through to the caller, and its ACK back to the callee.
    let acks = callee
        .messages
        .split("message received")
        .filter(|m| m.contains("ACK sip:"))
        .count();
    assert_eq!(
        acks, 2,
        "ACKs at the callee: one for the call, one for the re-INVITE"
    );
    server.shutdown().await;
}

/// A late-offer call (no session description in the INVITE, RFC 3261 §13.2.1): the callee's
/// offer reaches the caller in the 200, the caller's answer reaches the callee in the ACK, both
/// pointed at our relay.
async fn late_offer_call(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, _alice, _bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_late_offer.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_late_offer.xml", &["-d", "300"]);
    let caller = must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    let ack = callee
        .messages
        .split("message received")
        .find(|m| m.contains("ACK sip:"))
        .unwrap_or_default();
    assert!(ack.contains("c=IN IP4 127.0.0.1"), "{ack}");
    let ok = caller
        .messages
        .split("message received")
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 2 INVITE"))
        .unwrap_or_default();
    let (to_callee, to_caller) = (audio_port(ack), audio_port(ok));
    for port in [to_callee, to_caller] {
        assert!((20000..30000).contains(&port) && port % 2 == 0, "{port}");
    }
    assert_ne!(to_callee, to_caller);
    server.shutdown().await;
}

async fn answered_call_hung_up_by_the_callee(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let callee = bob_answers(
        &server,
        "call_uas_hangup.xml",
        &["-s", "bob", "-d", "500", "-set", "ring_ms", "200"],
    )
    .await;
    let caller = alice_calls(&server, "call_uac_wait.xml", &[]);
    must_pass("the callee", callee).await;
    let caller = must_pass("the caller", caller).await;
    // The caller's BYE comes from us, inside the caller's dialog.
    let bye = caller
        .messages
        .split("message received")
        .find(|m| m.contains("BYE sip:caller@"))
        .unwrap_or_default();
    assert!(bye.contains("Call-ID: 1-"), "{bye}");
    answered_then_ended(&server, &[alice, bob], "callee").await;
    server.shutdown().await;
}

/// A phone on TCP whose connection breaks during a call, and which registers again over a new
/// connection, still gets the call's BYE: through the new connection. With `ringing`, the
/// connection breaks while the call rings, and the answer comes over the new connection too
/// (RFC 3261 §18.2.2 with the connection the phone opened), which the phone ACKs there.
async fn tcp_caller_reconnects(db: Db, ringing: bool) {
    let tdb = TestDb::new(db).await;
    let listen = format!("{UDP}, \"tcp:127.0.0.1:0\"");
    // call_uac_wait.xml's Contact names user `caller`.
    let (server, _data, caller, _bob) = server_with(&tdb, &listen, "", "caller").await;
    // Bob rings 5 s and hangs up 2 s after answering, or answers at once and hangs up after 7 s:
    // either way the caller is on its new connection by then.
    let (ring, talk) = if ringing {
        ("5000", "2000")
    } else {
        ("200", "7000")
    };
    let callee = bob_answers(
        &server,
        "call_uas_hangup.xml",
        &["-s", "bob", "-d", talk, "-set", "ring_ms", ring],
    )
    .await;
    let tcp = common::sip_addr(&server, Transport::Tcp);
    let (old_port, new_port) = (common::free_tcp_port(), common::free_tcp_port());
    let old_port_text = old_port.to_string();
    let phone = ["-au", "caller", "-ap", "caller-secret", "-t", "t1"];
    let call_id = ["-cid_str", "reconnect-%u"];
    // The call, over a connection SIPp closes when it quits: while it rings, or once answered.
    let quit = if ringing { "1500ms" } else { "3s" };
    let mut args = vec!["-s", "200", "-timeout", quit];
    args.extend(phone.iter().chain(&call_id));
    let first = spawn_sipp("call_uac_wait.xml", tcp, old_port, &args)
        .await
        .unwrap();
    let answer_to_invite = |m: &&str| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 2 INVITE");
    let mut received = first.messages.split("message received");
    let reached = if ringing {
        received.any(|m| m.contains("SIP/2.0 180 Ringing"))
    } else {
        received.any(|m| answer_to_invite(&m))
    };
    assert!(reached, "{}", common::sipp::tail(&first.messages));
    // The INVITE's From tag, for an ACK the phone sends from its new connection.
    let tag = first
        .messages
        .lines()
        .find_map(|l| l.trim().strip_prefix("From: <sip:caller@"))
        .and_then(|f| f.split(";tag=").nth(1))
        .expect("the INVITE's From tag")
        .trim()
        .to_owned();
    // The phone again, on a new connection, with the Contact it called from.
    let mut args = vec!["-s", "caller", "-set", "expires", "600"];
    args.extend(["-set", "contact_port", old_port_text.as_str()]);
    args.extend(["-set", "from_tag", tag.as_str()]);
    args.extend(phone.iter().chain(&call_id));
    let second = spawn_sipp("register_then_bye.xml", tcp, new_port, &args);
    registered(&server, "caller", |_| true).await;
    let second = must_pass("the reconnected caller", second).await;
    let answered_there = second
        .messages
        .split("message received")
        .any(|m| answer_to_invite(&m));
    assert_eq!(
        answered_there,
        ringing,
        "{}",
        common::sipp::tail(&second.messages)
    );
    must_pass("the callee", callee).await;
    answered_then_ended(&server, &[caller], "callee").await;
    server.shutdown().await;
}

/// Waits until the registrar holds a binding of phone `username` that `changed` accepts.
async fn registered(server: &Server, username: &str, changed: impl Fn(u64) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while !server
        .registrar()
        .bindings_for(username)
        .iter()
        .any(|b| changed(b.source.flow))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{username} did not register (again) in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same for a callee, whose old connection stays open on our side (as when a NAT forgot it):
/// a phone on TCP answers over the connection it registered on, registers again over a new one
/// during the call, and the caller's BYE reaches it there.
async fn tcp_callee_reconnects_during_a_call(db: Db) {
    let tdb = TestDb::new(db).await;
    let listen = format!("{UDP}, \"tcp:127.0.0.1:0\"");
    let (server, _data, alice, _bob) = server_with(&tdb, &listen, "", "alice").await;
    // call_uas.xml's Contact names user `callee`.
    let callee = common::user_with_phone(&server, "300", "callee", "callee-secret").await;
    let tcp = common::sip_addr(&server, Transport::Tcp);
    let (old_port, new_port) = (common::free_tcp_port(), common::free_tcp_port());
    let old_port_text = old_port.to_string();
    let uas = common::sipp::sipp_dir().join("call_uas.xml");
    let bye = common::sipp::sipp_dir().join("bye_uas.xml");
    let (uas, bye) = (uas.to_str().unwrap(), bye.to_str().unwrap());
    let mut args = vec![
        "-s",
        "callee",
        "-au",
        "callee",
        "-ap",
        "callee-secret",
        "-t",
        "t1",
    ];
    args.extend([
        "-set",
        "expires",
        "600",
        "-set",
        "contact_port",
        &old_port_text,
    ]);
    // The phone registers and answers the INVITE that comes over its connection (as a call
    // SIPp did not start: -oocsf). Its connection stays open to the end, as one that a NAT
    // forgot does on our side.
    let mut first_args = args.clone();
    first_args.extend(["-oocsf", uas, "-timeout", "11s"]);
    let first = spawn_sipp("register_then_bye.xml", tcp, old_port, &first_args);
    registered(&server, "callee", |_| true).await;
    let before = server.registrar().bindings_for("callee")[0].source.flow;
    // Alice hangs up 6 s after the answer.
    let caller = spawn_sipp(
        "call_uac.xml",
        common::sip_addr(&server, Transport::Udp),
        common::free_udp_port(),
        &[
            "-s",
            "300",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-d",
            "6000",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Again, from the same address on a new connection, with the same Contact; the BYE is a
    // call SIPp did not start.
    let mut second_args = args.clone();
    second_args.extend(["-oocsf", bye, "-timeout", "8s"]);
    let second = spawn_sipp("register_then_bye.xml", tcp, new_port, &second_args);
    registered(&server, "callee", |flow| flow != before).await;
    must_pass("the caller", caller).await;
    // Both main scenarios wait for a BYE of their own until they time out.
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let got_bye = |run: &SippRun| {
        run.messages
            .split("message received")
            .any(|m| m.contains("BYE sip:callee@"))
    };
    let acked = first
        .messages
        .split("message received")
        .any(|m| m.contains("ACK sip:callee@"));
    assert!(
        acked,
        "not answered: {}",
        common::sipp::tail(&first.messages)
    );
    assert!(
        got_bye(&second),
        "no BYE over the new connection: {}",
        common::sipp::tail(&second.messages)
    );
    assert!(!got_bye(&first), "the BYE went to the old connection");
    answered_then_ended(&server, &[callee, alice], "caller").await;
    server.shutdown().await;
}

/// A server whose media timeout is 1 s, with alice (100) and bob (200).
async fn server_with_media_timeout(db: &TestDb) -> (Server, tempfile::TempDir, i64) {
    let (server, data, alice, _bob) =
        server_with(db, UDP, "[media]\ntimeout_secs = 1\n", "alice").await;
    (server, data, alice)
}

/// Neither phone sends any RTP (SIPp plays none): with `media.timeout_secs = 1` the PBX hangs
/// up both legs itself, as it would when both phones vanished without a BYE.
async fn silent_call_is_hung_up(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice) = server_with_media_timeout(&tdb).await;
    let callee = bob_answers(&server, "call_uas.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_wait.xml", &[]);
    // Both wait for a BYE, which only the PBX can send.
    must_pass("the callee", callee).await;
    must_pass("the caller", caller).await;
    answered_then_ended(&server, &[alice], "media_timeout").await;
    server.shutdown().await;
}

/// A call on hold is silent by design (RFC 3264: the held side sends nothing): the media
/// timeout, 1 s here, leaves it alone for the 2.5 s it stays on hold, and the caller ends it.
async fn held_call_is_not_hung_up_for_silence(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice) = server_with_media_timeout(&tdb).await;
    let callee = bob_answers(&server, "call_uas_reinvited.xml", &[]).await;
    // Alice puts the call on hold (a=sendonly, answered a=recvonly) 300 ms after the answer.
    let caller = alice_calls(&server, "call_uac_reinvite_late_ack.xml", &[]);
    must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    answered_then_ended(&server, &[alice], "caller").await;
    server.shutdown().await;
}

/// Guessing passwords with INVITEs gets the source banned like failed REGISTERs do: after
/// `security.ban_failures` wrong answers to 407 it hears nothing more, not even for REGISTER.
async fn invite_password_guessing_is_banned(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, _alice, _bob) = server(&tdb, 30).await;
    let scenarios = tempfile::tempdir().unwrap();
    // The second INVITE carries a wrong password, so it is challenged again: 407.
    let guess = rejected_scenario(&scenarios, 407);
    for i in 0..5 {
        let run = spawn_sipp(
            &guess,
            common::sip_addr(&server, Transport::Udp),
            common::free_udp_port(),
            &["-s", "200", "-au", "alice", "-ap", "not-her-password"],
        );
        must_pass(&format!("guess {i}"), run).await;
    }
    let bans = server.registrar().bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].ip.to_string(), "127.0.0.1");
    // Banned: even the right password gets no answer now.
    let run = alice_calls(&server, "call_uac.xml", &["-recv_timeout", "3s"])
        .await
        .unwrap();
    assert!(!run.ok, "a banned source was answered");
    assert!(!run.messages.contains("SIP/2.0 407"), "{}", run.messages);
    server.shutdown().await;
}

async fn busy_callee(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_busy.xml", &[]).await;
    let scenarios = tempfile::tempdir().unwrap();
    let caller = alice_calls(&server, &rejected_scenario(&scenarios, 486), &[]);
    must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Busy
    );
    assert_eq!(
        common::only_entry(&server, bob).await.outcome,
        PartyOutcome::Missed
    );
    server.shutdown().await;
}

/// Bob's phone forwards the call (302 to extension 300, its own call forwarding): the PBX
/// routes 300 as bob would dial it and carol's phone answers; the call is in all three users'
/// histories.
async fn a_phones_call_forwarding_is_followed(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let carol = common::user_with_phone(&server, "300", "carol", "carol-secret").await;
    let forwarding = bob_answers(&server, "call_uas_redirect.xml", &[]).await;
    let to = common::sip_addr(&server, Transport::Udp);
    let port = common::free_udp_port();
    register(&server, "carol", "carol-secret", port).await;
    let answering = spawn_sipp("call_uas.xml", to, port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = alice_calls(&server, "call_uac.xml", &["-d", "200"]);
    must_pass("the caller", caller).await;
    must_pass("the forwarding phone", forwarding).await;
    let answering = must_pass("the phone forwarded to", answering).await;
    // Carol sees who really calls.
    let invite = answering
        .messages
        .split("message received")
        .find(|m| m.contains("INVITE sip:"))
        .unwrap_or_default();
    assert!(invite.contains("<sip:100@test.example>"), "{invite}");
    let carols_phone = phone_id(&server, carol).await;
    for user in [alice, bob, carol] {
        let entry = common::only_entry(&server, user).await;
        assert_eq!(entry.outcome, PartyOutcome::Answered, "user {user}");
    }
    let incoming = common::only_entry(&server, bob).await;
    assert_eq!(incoming.direction, CallDirection::Incoming);
    assert_eq!(incoming.answered_by, Some(format!("phone:{carols_phone}")));
    assert_eq!(
        common::only_entry(&server, carol).await.direction,
        CallDirection::Incoming
    );
    server.shutdown().await;
}

/// Attended transfer's last step (RFC 3891): carol's phone sends an INVITE with `Replaces`
/// naming alice's dialog with the PBX in alice's answered call to bob. Carol takes alice's
/// place: alice gets BYE, bob gets a re-INVITE with carol's session description, and carol's
/// BYE later ends the call at bob's.
async fn a_phone_replaces_another_in_an_answered_call(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    common::user_with_phone(&server, "300", "carol", "carol-secret").await;
    let callee = bob_answers(&server, "call_uas_reinvited.xml", &[]).await;
    let files = tempfile::tempdir().unwrap();
    let dialog_file = files.path().join("dialog");
    let dialog_path = dialog_file.to_str().unwrap().to_owned();
    let replaced = alice_calls(
        &server,
        "call_uac_replaced.xml",
        &["-set", "dialog_file", &dialog_path],
    );
    let mut dialog = String::new();
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&dialog_file) {
            dialog = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if dialog.is_empty() {
        let run = replaced.await.unwrap();
        panic!("alice wrote no dialog: {}\n{}", run.stderr, run.messages);
    }
    let ids: Vec<&str> = dialog.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "alice's dialog: {dialog:?}");
    let (call_id, pbx_tag, alice_tag) = (ids[0], ids[1], ids[2]);
    let carol = spawn_sipp(
        "call_uac_replaces.xml",
        common::sip_addr(&server, Transport::Udp),
        common::free_udp_port(),
        &[
            "-s",
            "200",
            "-au",
            "carol",
            "-ap",
            "carol-secret",
            "-d",
            "300",
            "-set",
            "replaces_call_id",
            call_id,
            "-set",
            "replaces_to_tag",
            pbx_tag,
            "-set",
            "replaces_from_tag",
            alice_tag,
        ],
    );
    must_pass("carol, replacing alice", carol).await;
    let alice_run = must_pass("alice, replaced", replaced).await;
    let bob_run = must_pass("bob", callee).await;
    // The re-INVITE bob got carries carol's session (anchored: her origin line stays).
    let reinvite = bob_run
        .messages
        .split("message received")
        .filter(|m| m.contains("INVITE sip:"))
        .nth(1)
        .unwrap_or_default();
    assert!(reinvite.contains("o=transferee"), "{reinvite}");
    assert!(
        alice_run.messages.contains("BYE sip:"),
        "{}",
        alice_run.messages
    );
    // One call, answered, ended by its caller's side (now carol).
    for user in [alice, bob] {
        let entry = common::only_entry(&server, user).await;
        assert_eq!(entry.outcome, PartyOutcome::Answered, "user {user}");
    }
    assert_eq!(hangup_causes(&server).await, vec!["caller"]);
    server.shutdown().await;
}

/// A `Replaces` naming no dialog of ours gets 481 (RFC 3891 §3), after authentication.
async fn replaces_for_an_unknown_dialog_is_refused(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, _alice, _bob) = server(&tdb, 30).await;
    let carol = spawn_sipp(
        "call_uac_replaces.xml",
        common::sip_addr(&server, Transport::Udp),
        common::free_udp_port(),
        &[
            "-s",
            "200",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-set",
            "replaces_call_id",
            "nobody@example",
            "-set",
            "replaces_to_tag",
            "1",
            "-set",
            "replaces_from_tag",
            "2",
        ],
    );
    let run = carol.await.unwrap();
    assert!(!run.ok, "an unknown dialog was replaced");
    assert!(run.messages.contains("SIP/2.0 481"), "{}", run.messages);
    server.shutdown().await;
}

/// Bob's phone sends its early media reliably (RFC 3262): the PBX PRACKs it in the early
/// dialog, passes the early media on, and its later BYE continues that dialog's CSeq (the
/// scenario checks both).
async fn a_reliable_provisional_from_the_callee_is_pracked(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_100rel.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac.xml", &["-d", "200"]);
    let caller = must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    let prack = received(&callee, "PRACK sip:");
    assert!(prack.contains("RAck: 1 1 INVITE"), "{prack}");
    assert!(
        caller.messages.contains("SIP/2.0 183"),
        "{}",
        caller.messages
    );
    answered_then_ended(&server, &[alice, bob], "caller").await;
    server.shutdown().await;
}

async fn unanswered_call_times_out(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 2).await;
    let callee = bob_answers(&server, "call_uas_ringing.xml", &[]).await;
    let scenarios = tempfile::tempdir().unwrap();
    let caller = alice_calls(&server, &rejected_scenario(&scenarios, 480), &[]);
    must_pass("the caller", caller).await;
    let callee = must_pass("the callee", callee).await;
    // A CANCEL for a timeout carries no "completed elsewhere" reason.
    assert!(!callee.messages.contains("Call completed elsewhere"));
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::NoAnswer
    );
    assert_eq!(
        common::only_entry(&server, bob).await.outcome,
        PartyOutcome::Missed
    );
    server.shutdown().await;
}

async fn caller_cancels_before_the_answer(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let callee = bob_answers(&server, "call_uas_ringing.xml", &[]).await;
    let caller = alice_calls(&server, "call_uac_cancel.xml", &[]);
    must_pass("the caller", caller).await;
    must_pass("the callee", callee).await;
    // Stopped at once: the record of the call that just ended is written before the stop
    // completes, not lost with the writer's queue.
    server.shutdown().await;
    let store = tdb.store().await;
    for (user, outcome) in [
        (alice, PartyOutcome::Cancelled),
        (bob, PartyOutcome::Missed),
    ] {
        let page = store
            .call_history(user, &HistoryQuery::default())
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "user {user}");
        assert_eq!(page.entries[0].outcome, outcome);
    }
}

/// Both of bob's phones ring; the second answers, the first gets CANCEL with the RFC 3326
/// reason phones show as "answered elsewhere".
async fn both_phones_ring_and_the_loser_is_told(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data, alice, bob) = server(&tdb, 30).await;
    let desk2 = server
        .store()
        .create_phone(
            bob,
            &switchboard::directory::NewPhone {
                sip_username: "bob2".into(),
                name: "Softphone".into(),
                password: Some("bob2-secret".into()),
            },
            "test.example",
        )
        .await
        .unwrap();
    let to = common::sip_addr(&server, Transport::Udp);
    let (p1, p2) = (common::free_udp_port(), common::free_udp_port());
    register(&server, "bob", "bob-secret", p1).await;
    register(&server, "bob2", "bob2-secret", p2).await;
    let ringing = spawn_sipp("call_uas_ringing.xml", to, p1, &[]);
    let answering = spawn_sipp("call_uas.xml", to, p2, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = spawn_sipp(
        "call_uac.xml",
        to,
        common::free_udp_port(),
        &[
            "-s",
            "200",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-d",
            "500",
        ],
    );
    must_pass("the caller", caller).await;
    must_pass("the answering phone", answering).await;
    let ringing = must_pass("the other phone", ringing).await;
    let cancel = ringing
        .messages
        .split("message received")
        .find(|m| m.contains("CANCEL sip:"))
        .unwrap_or_default();
    assert!(
        cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel}"
    );
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    assert_eq!(inc.answered_by, Some(format!("phone:{}", desk2.0.id)));
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

on_both_databases!(answered_call_hung_up_by_the_caller);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_after_the_end_is_acked_again() {
    a_2xx_after_the_call_ended_gets_its_ack_again(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_provisionals() {
    a_caller_requiring_100rel_gets_reliable_ringing(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_hangs_up() {
    answered_call_hung_up_by_the_callee(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_phone_reconnects() {
    tcp_caller_reconnects(Db::Sqlite, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_caller_reconnects_ringing() {
    tcp_caller_reconnects(Db::Sqlite, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_callee_reconnects() {
    tcp_callee_reconnects_during_a_call(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_timeout() {
    silent_call_is_hung_up(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_brute_force() {
    invite_password_guessing_is_banned(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_forwarding_by_redirect() {
    a_phones_call_forwarding_is_followed(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attended_transfer_replaces() {
    a_phone_replaces_another_in_an_answered_call(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_unknown_dialog() {
    replaces_for_an_unknown_dialog_is_refused(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_reliable_provisionals() {
    a_reliable_provisional_from_the_callee_is_pracked(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy() {
    busy_callee(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer() {
    unanswered_call_times_out(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel() {
    caller_cancels_before_the_answer(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forking() {
    both_phones_ring_and_the_loser_is_told(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_while_transcoded() {
    hold_across_transcoding(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_without_contact() {
    answer_without_contact(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_refreshed_by_us() {
    pbx_refreshes_when_named_refresher(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_cancelled() {
    re_invite_cancelled_on_both_legs(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_invite_lost_ack() {
    re_invite_answer_is_repeated_until_acknowledged(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer() {
    late_offer_call(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_call_keeps_its_silence() {
    held_call_is_not_hung_up_for_silence(Db::Sqlite).await
}
