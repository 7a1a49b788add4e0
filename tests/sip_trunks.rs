//! SIP trunks against SIPp playing the ITSP (Debian package `sip-tester`): the trunk registers
//! with digest auth, outgoing calls go out through it answering its 407 (and its challenges to
//! our BYE and to a phone's hold we relay), calls to a DID ring the user's phones, and a
//! location's external number rings through the trunk next to the user's phones.
//!
//! The ITSP listens on 127.0.0.2 and the phones on 127.0.0.1: an INVITE from the trunk's
//! address is a trunk call, so the two must differ.

mod common;

use std::time::Duration;

use common::sipp::{must_pass, received, register, spawn_sipp, spawn_sipp_from, SippRun};
use common::{Db, TestDb};
use switchboard::config::Transport;
use switchboard::store::{CallDirection, PartyOutcome};
use switchboard::Server;

const ITSP_IP: &str = "127.0.0.2";

/// A server with users 100 (phone `alice`, DID +4930555100) and 200 (phone `bob`, DID
/// +4930555200), and trunk `default` whose next hop is SIPp on `itsp_port`.
async fn server(
    db: &TestDb,
    itsp_port: u16,
    trunk_extra: &str,
) -> (Server, tempfile::TempDir, i64, i64) {
    let hop = format!("host = \"itsp.test\"\noutbound_proxy = \"{ITSP_IP}:{itsp_port}\"");
    server_with_hop(db, &hop, trunk_extra).await
}

/// As [`server`], with the trunk's `host` (and `outbound_proxy`, if any) given by `hop`.
async fn server_with_hop(
    db: &TestDb,
    hop: &str,
    trunk_extra: &str,
) -> (Server, tempfile::TempDir, i64, i64) {
    let trunk = format!(
        "[[trunks]]\nname = \"default\"\n{hop}\nusername = \"acct\"\n\
         password = \"acct-secret\"\nnumber_format = \"national\"\n\
         dids = [ {{ number = \"+4930555100\", extension = \"100\" }}, \
                  {{ number = \"+4930555200\", extension = \"200\" }} ]\n{trunk_extra}\n"
    );
    let (server, data) = common::start_server(
        db,
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nrealm = \"test.example\"\n\
         digest_algorithms = [\"MD5\", \"SHA-256\"]",
        &format!("[calls]\nno_answer_secs = 20\n{trunk}"),
    )
    .await;
    let alice = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let bob = common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    (server, data, alice, bob)
}

/// SIPp as the ITSP, answering on `port`.
async fn itsp(scenario: &str, port: u16, args: &[&str]) -> tokio::task::JoinHandle<SippRun> {
    let h = spawn_sipp_from(ITSP_IP, scenario, None, port, args);
    // SIPp needs a moment before it listens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h
}

/// SIPp as the ITSP taking one call for `number`: it challenges our INVITE with the trunk's
/// account (acct / acct-secret), then answers.
async fn itsp_answers_for(port: u16, number: &str) -> tokio::task::JoinHandle<SippRun> {
    itsp_answers_with("trunk_uas.xml", port, number).await
}

/// As [`itsp_answers_for`], playing `scenario` (a variant of `trunk_uas.xml`).
async fn itsp_answers_with(
    scenario: &str,
    port: u16,
    number: &str,
) -> tokio::task::JoinHandle<SippRun> {
    let args = [
        "-set",
        "user",
        "acct",
        "-set",
        "pass",
        "acct-secret",
        "-set",
        "num",
        number,
    ];
    itsp(scenario, port, &args).await
}

/// Alice's phone calls `number` and hangs up `hold_ms` after the answer.
fn alice_dials(server: &Server, number: &str, hold_ms: u32) -> tokio::task::JoinHandle<SippRun> {
    let hold = hold_ms.to_string();
    spawn_sipp(
        "call_uac.xml",
        common::sip_addr(server, Transport::Udp),
        common::free_udp_port(),
        &[
            "-s",
            number,
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-d",
            &hold,
        ],
    )
}

/// `GET /api/v1/trunks` until `done` holds for the first trunk (10 s at most).
async fn trunk_status(
    server: &Server,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let token = server
        .initial_admin_token()
        .expect("admin token")
        .to_owned();
    let addr = server.http_addr();
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let token = token.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            common::http(addr, "GET", "/api/v1/trunks", &token, "")
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        last = body[0].clone();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("trunk status never got there: {last}");
}

/// The trunks each call record names.
async fn record_trunks(server: &Server) -> Vec<Option<String>> {
    let rows: Vec<(Option<String>,)> = sqlx::query_as("SELECT trunk FROM calls")
        .fetch_all(server.store().pool())
        .await
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

async fn trunk_registers(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let registrar = itsp(
        "trunk_registrar.xml",
        port,
        &[
            "-set",
            "user",
            "acct",
            "-set",
            "pass",
            "acct-secret",
            "-set",
            "expires",
            "300",
        ],
    )
    .await;
    let (server, _data, _, _) = server(&tdb, port, "").await;
    let registrar = must_pass("the ITSP's registrar", registrar).await;
    let register = received(&registrar, "Authorization:");
    assert!(
        register.contains("REGISTER sip:itsp.test SIP/2.0"),
        "{register}"
    );
    assert!(register.contains("username=\"acct\""), "{register}");
    assert!(register.contains("Expires: 600"), "{register}");
    let sip = common::sip_addr(&server, Transport::Udp);
    assert!(
        register.contains(&format!("Contact: <sip:acct@{sip}>")),
        "{register}"
    );
    // The registrar granted 300 s: the status says registered until about then.
    let status = trunk_status(&server, |s| s["registration"] == "registered").await;
    let expires = status["expires_at"].as_i64().unwrap();
    let in_s = (expires - switchboard::store::now_ms()) / 1000;
    assert!((290..=300).contains(&in_s), "{status}");
    assert_eq!(status["next_hop"], format!("{ITSP_IP}:{port}"));
    server.shutdown().await;
}

/// The same over TCP: we open the connection to the ITSP, register through it, and the
/// Contact says so.
async fn trunk_registers_over_tcp(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let registrar = itsp(
        "trunk_registrar.xml",
        port,
        &[
            "-t",
            "t1",
            "-set",
            "user",
            "acct",
            "-set",
            "pass",
            "acct-secret",
            "-set",
            "expires",
            "300",
        ],
    )
    .await;
    let (server, _data, _, _) = server(&tdb, port, "transport = \"tcp\"").await;
    let registrar = must_pass("the ITSP's registrar (TCP)", registrar).await;
    let register = received(&registrar, "Authorization:");
    assert!(register.contains("Via: SIP/2.0/TCP "), "{register}");
    let tcp = common::sip_addr(&server, Transport::Tcp);
    assert!(
        register.contains(&format!("Contact: <sip:acct@{tcp};transport=tcp>")),
        "{register}"
    );
    trunk_status(&server, |s| s["registration"] == "registered").await;
    server.shutdown().await;
}

/// An outgoing call through a TCP trunk: the INVITE, the ACK and the BYE go over the
/// connection we open (this ITSP does not challenge).
async fn outgoing_call_over_tcp(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let trunk = itsp("call_uas.xml", port, &["-t", "t1"]).await;
    let (server, _data, alice, _) =
        server(&tdb, port, "register = false\ntransport = \"tcp\"").await;
    let caller = alice_dials(&server, "0301234567", 500);
    must_pass("the caller", caller).await;
    let trunk = must_pass("the ITSP (TCP)", trunk).await;
    let invite = received(&trunk, "INVITE sip:");
    assert!(
        invite.contains("INVITE sip:0301234567@itsp.test SIP/2.0"),
        "{invite}"
    );
    assert!(invite.contains("Via: SIP/2.0/TCP "), "{invite}");
    received(&trunk, "BYE sip:");
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// The ITSP refuses the credentials (403): the status shows the failure, with its code.
async fn trunk_with_a_wrong_password_fails(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let registrar = itsp(
        "trunk_registrar.xml",
        port,
        &[
            "-set", "user", "acct", "-set", "pass", "other", "-set", "expires", "300",
        ],
    )
    .await;
    let (server, _data, _, _) = server(&tdb, port, "").await;
    let run = registrar.await.unwrap();
    assert!(!run.ok, "the ITSP must have refused: {}", run.messages);
    let status = trunk_status(&server, |s| s["registration"] == "failed").await;
    assert_eq!(status["last_error"], "403", "{status}");
    assert!(status.get("expires_at").is_none(), "{status}");
    server.shutdown().await;
}

/// Alice dials 0301234567: the default dialplan's "national" route sends it to trunk
/// `default`, which wants national numbers; the ITSP challenges the INVITE (407), we answer
/// with the trunk's account, it answers the call, alice hangs up.
async fn outgoing_call_through_the_trunk(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let trunk = itsp_answers_for(port, "0301234567").await;
    let (server, _data, alice, _) = server(&tdb, port, "register = false").await;
    let caller = alice_dials(&server, "0301234567", 1000);
    must_pass("the caller", caller).await;
    let trunk = must_pass("the ITSP", trunk).await;
    // The ITSP sees alice's DID on the trunk's domain as caller, and her name.
    let invite = received(&trunk, "Proxy-Authorization:");
    assert!(
        invite.contains("INVITE sip:0301234567@itsp.test SIP/2.0"),
        "{invite}"
    );
    assert!(
        invite.contains("From: \"User 100\" <sip:+4930555100@itsp.test>;tag="),
        "{invite}"
    );
    assert!(invite.contains("username=\"acct\""), "{invite}");
    assert!(invite.contains("CSeq: 2 INVITE"), "{invite}");
    received(&trunk, "BYE sip:");

    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.direction, CallDirection::Outgoing);
    assert_eq!(out.outcome, PartyOutcome::Answered);
    assert_eq!(out.other_number, "+49301234567");
    assert_eq!(
        record_trunks(&server).await,
        vec![Some("default".to_owned())]
    );
    server.shutdown().await;
}

/// An ITSP that authenticates our BYE too (401): it gets the BYE again with the trunk's
/// account, which it verifies; otherwise its leg would stay up, and billed.
async fn challenged_bye_is_sent_again_with_credentials(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let trunk = itsp_answers_with("trunk_uas_bye_auth.xml", port, "0301234567").await;
    let (server, _data, _, _) = server(&tdb, port, "register = false").await;
    let caller = alice_dials(&server, "0301234567", 500);
    must_pass("the caller", caller).await;
    let trunk = must_pass("the ITSP", trunk).await;
    let bye = trunk
        .messages
        .split("message received")
        .find(|m| m.contains("BYE sip:") && m.contains("Authorization: Digest"))
        .unwrap_or_else(|| panic!("no BYE with credentials in {}", trunk.messages));
    assert!(bye.contains("username=\"acct\""), "{bye}");
    server.shutdown().await;
}

/// An ITSP that authenticates every request challenges alice's hold too (a re-INVITE we relay
/// to it): it gets the re-INVITE again with the trunk's account, and alice gets its 200, never
/// the ITSP's 407.
async fn challenged_hold_is_sent_again_with_credentials(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let trunk = itsp_answers_with("trunk_uas_reinvite_auth.xml", port, "0301234567").await;
    let (server, _data, alice, _) = server(&tdb, port, "register = false").await;
    let caller = spawn_sipp(
        "call_uac_hold.xml",
        common::sip_addr(&server, Transport::Udp),
        common::free_udp_port(),
        &[
            "-s",
            "0301234567",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            "-d",
            "300",
        ],
    );
    must_pass("the caller", caller).await;
    let trunk = must_pass("the ITSP", trunk).await;
    let hold = trunk
        .messages
        .split("message received")
        .find(|m| {
            m.contains("INVITE sip:")
                && m.contains("a=sendonly")
                && m.contains("Proxy-Authorization: Digest")
        })
        .unwrap_or_else(|| panic!("no re-INVITE with credentials in {}", trunk.messages));
    assert!(hold.contains("username=\"acct\""), "{hold}");
    assert!(hold.contains("realm=\"itsp.test\""), "{hold}");
    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// A trunk reached without an outbound proxy whose edge answers with the Contact of a gateway
/// elsewhere and does not Record-Route: the ACK and alice's BYE go to that gateway (RFC 3261
/// §12.2.1.1), not to the address the INVITE went to.
async fn in_dialog_requests_follow_the_trunks_contact(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let gw_port = common::free_udp_port();
    let gw_arg = gw_port.to_string();
    let gateway = itsp("trunk_gateway.xml", gw_port, &[]).await;
    let edge = itsp(
        "trunk_uas_gateway_contact.xml",
        port,
        &["-set", "gw_port", &gw_arg],
    )
    .await;
    let hop = format!("host = \"{ITSP_IP}:{port}\"");
    let (server, _data, alice, _) = server_with_hop(&tdb, &hop, "register = false").await;
    let caller = alice_dials(&server, "0301234567", 500);
    must_pass("the caller", caller).await;
    let gateway = must_pass("the gateway", gateway).await;
    let edge = must_pass("the ITSP's edge", edge).await;
    received(&gateway, "ACK sip:gw@");
    received(&gateway, "BYE sip:gw@");
    assert!(!edge.messages.contains("ACK sip:"), "{}", edge.messages);
    assert!(!edge.messages.contains("BYE sip:"), "{}", edge.messages);
    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// dnsmasq (Debian package `dnsmasq-base`) on 127.0.0.1:`port`, answering nothing but
/// `records` (its `--srv-host` and `--host-record` options); killed when dropped.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(port: u16, records: &[&str]) -> Dnsmasq {
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let child = std::process::Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
            ])
            .args([
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .args(["--pid-file=", "--log-facility=-", "--user=root"])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (Debian package dnsmasq-base)");
        // Ready once its port is taken.
        for _ in 0..100 {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A trunk configured by its domain only (`host = "itsp.test"`, no port, no proxy): its server
/// is found through the SRV record `_sip._udp.itsp.test` (RFC 3263 §4.2), served by dnsmasq, and
/// the call goes there.
async fn trunk_found_through_srv(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let dns_port = common::free_udp_port();
    let srv = format!("--srv-host=_sip._udp.itsp.test,sbc.itsp.test,{port},10,5");
    let _dns = Dnsmasq::start(dns_port, &[&srv, "--host-record=sbc.itsp.test,127.0.0.2"]);
    let trunk = itsp_answers_for(port, "0301234567").await;
    let extra = format!("register = false\n[dns]\nservers = [\"127.0.0.1:{dns_port}\"]");
    let (server, _data, alice, _) = server_with_hop(&tdb, "host = \"itsp.test\"", &extra).await;
    let status = trunk_status(&server, |t| !t["next_hop"].is_null()).await;
    assert_eq!(status["next_hop"], format!("{ITSP_IP}:{port}"), "{status}");
    let caller = alice_dials(&server, "0301234567", 500);
    must_pass("the caller", caller).await;
    let trunk = must_pass("the ITSP", trunk).await;
    let invite = received(&trunk, "Proxy-Authorization:");
    assert!(
        invite.contains("INVITE sip:0301234567@itsp.test SIP/2.0"),
        "{invite}"
    );
    let out = common::only_entry(&server, alice).await;
    assert_eq!(out.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// The ITSP (SIPp playing `scenario` from the trunk's address, port `port`) calls bob's DID
/// 4930555200 and bob's registered phone (SIPp, `call_uas.xml`) answers: both runs, passed.
async fn itsp_calls_bobs_did(server: &Server, port: u16, scenario: &str) -> (SippRun, SippRun) {
    let to = common::sip_addr(server, Transport::Udp);
    let phone_port = common::free_udp_port();
    register(server, "bob", "bob-secret", phone_port).await;
    let phone = spawn_sipp("call_uas.xml", to, phone_port, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let itsp = spawn_sipp_from(ITSP_IP, scenario, Some(to), port, &["-s", "4930555200"]);
    let itsp = must_pass("the ITSP", itsp).await;
    let phone = must_pass("bob's phone", phone).await;
    (itsp, phone)
}

/// The ITSP delivers a call for DID +4930555200 (as 4930555200, without the `+`): bob's phone
/// rings and answers; the ITSP is not challenged.
async fn incoming_call_to_a_did(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let (server, _data, _, bob) = server(&tdb, port, "register = false").await;
    let (itsp, phone) = itsp_calls_bobs_did(&server, port, "trunk_uac.xml").await;
    assert!(!itsp.messages.contains("407 Proxy"), "{}", itsp.messages);
    let invite = received(&phone, "INVITE sip:");
    assert!(
        invite.contains("From: \"Caller Name\" <sip:+4915112345678@test.example>;tag="),
        "{invite}"
    );
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.direction, CallDirection::Incoming);
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    assert_eq!(inc.other_number, "+4915112345678");
    assert_eq!(
        record_trunks(&server).await,
        vec![Some("default".to_owned())]
    );
    server.shutdown().await;
}

/// A SIP-I ITSP's offer comes in a multipart body beside an ISUP part: bob's phone gets the
/// body with the session description anchored on our relay (not the ITSP's address) and the
/// ISUP part as it was.
async fn a_multipart_offer_is_anchored(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let (server, _data, _, bob) = server(&tdb, port, "register = false").await;
    let (_, phone) = itsp_calls_bobs_did(&server, port, "trunk_uac_multipart.xml").await;
    let invite = received(&phone, "INVITE sip:");
    assert!(
        invite.contains("Content-Type: multipart/mixed;boundary=unique-boundary-1"),
        "{invite}"
    );
    assert!(invite.contains("IAM-4930555200-4915112345678"), "{invite}");
    assert!(invite.contains("c=IN IP4 127.0.0.1"), "{invite}");
    assert!(!invite.contains("c=IN IP4 127.0.0.2"), "{invite}");
    assert!(invite.contains("--unique-boundary-1--"), "{invite}");
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// A call from a trunk reached without an outbound proxy, whose edge names a gateway elsewhere
/// in its Contact and does not Record-Route: when bob hangs up, our BYE goes to that gateway.
async fn our_bye_to_a_trunk_caller_follows_its_contact(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let gw_port = common::free_udp_port();
    let gw_arg = gw_port.to_string();
    let hop = format!("host = \"{ITSP_IP}:{port}\"");
    let (server, _data, _, bob) = server_with_hop(&tdb, &hop, "register = false").await;
    let to = common::sip_addr(&server, Transport::Udp);
    let phone_port = common::free_udp_port();
    register(&server, "bob", "bob-secret", phone_port).await;
    let phone = spawn_sipp(
        "call_uas_hangup.xml",
        to,
        phone_port,
        &["-s", "bob", "-d", "500", "-set", "ring_ms", "200"],
    );
    let gateway = itsp("trunk_gateway_bye.xml", gw_port, &[]).await;
    let edge = spawn_sipp_from(
        ITSP_IP,
        "trunk_uac_gateway_contact.xml",
        Some(to),
        port,
        &["-s", "4930555200", "-set", "gw_port", &gw_arg],
    );
    let edge = must_pass("the ITSP's edge", edge).await;
    must_pass("bob's phone", phone).await;
    let gateway = must_pass("the gateway", gateway).await;
    received(&gateway, "BYE sip:gw@");
    assert!(!edge.messages.contains("BYE sip:"), "{}", edge.messages);
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// Bob's location holds his two phones and his mobile (through the trunk): alice calls him,
/// all three ring, the mobile answers, both phones get CANCEL saying so.
async fn location_rings_phones_and_an_external_number(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let mobile = itsp_answers_for(port, "01701234567").await;
    let (server, _data, alice, bob) = server(&tdb, port, "register = false").await;
    let store = server.store();
    let desk = store
        .list_phones(bob, Default::default())
        .await
        .unwrap()
        .items[0]
        .id;
    let (soft, _) = store
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
    store
        .update_user(
            bob,
            &switchboard::directory::UserPatch {
                external_numbers: Some(vec![switchboard::directory::ExternalNumber {
                    label: "mobile".into(),
                    number: "01701234567".into(),
                }]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let location = store
        .create_location(
            bob,
            &switchboard::directory::NewLocation {
                name: "everywhere".into(),
                phones: vec![desk, soft.id],
                numbers: vec!["01701234567".into()],
            },
        )
        .await
        .unwrap();
    store
        .set_current_location(bob, Some(location.id))
        .await
        .unwrap();

    let to = common::sip_addr(&server, Transport::Udp);
    let (p1, p2) = (common::free_udp_port(), common::free_udp_port());
    register(&server, "bob", "bob-secret", p1).await;
    register(&server, "bob2", "bob2-secret", p2).await;
    let desk_rings = spawn_sipp("call_uas_ringing.xml", to, p1, &[]);
    let soft_rings = spawn_sipp("call_uas_ringing.xml", to, p2, &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caller = alice_dials(&server, "200", 500);
    must_pass("the caller", caller).await;
    let mobile = must_pass("the mobile (ITSP)", mobile).await;
    // Through the trunk, the caller shows as bob's DID (the ITSP's account), with alice's name.
    let invite = received(&mobile, "Proxy-Authorization:");
    assert!(
        invite.contains("From: \"User 100\" <sip:+4930555200@itsp.test>;tag="),
        "{invite}"
    );
    for phone in [desk_rings, soft_rings] {
        let run = must_pass("a phone of the location", phone).await;
        let cancel = received(&run, "CANCEL sip:");
        assert!(
            cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
            "{cancel}"
        );
    }
    let inc = common::only_entry(&server, bob).await;
    assert_eq!(inc.outcome, PartyOutcome::Answered);
    assert_eq!(inc.answered_by.as_deref(), Some("+491701234567"));
    assert_eq!(
        common::only_entry(&server, alice).await.outcome,
        PartyOutcome::Answered
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers() {
    trunk_registers(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tcp() {
    trunk_registers_over_tcp(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_over_tcp() {
    outgoing_call_over_tcp(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password() {
    trunk_with_a_wrong_password_fails(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing() {
    outgoing_call_through_the_trunk(Db::Sqlite).await;
    outgoing_call_through_the_trunk(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming() {
    incoming_call_to_a_did(Db::Sqlite).await;
    incoming_call_to_a_did(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_with_an_external_number() {
    location_rings_phones_and_an_external_number(Db::Sqlite).await;
    location_rings_phones_and_an_external_number(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dialog_requests_to_the_trunks_contact() {
    in_dialog_requests_follow_the_trunks_contact(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_bye_to_a_trunk_callers_contact() {
    our_bye_to_a_trunk_caller_follows_its_contact(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_host_by_srv_record() {
    trunk_found_through_srv(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_offer() {
    a_multipart_offer_is_anchored(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenged_bye() {
    challenged_bye_is_sent_again_with_credentials(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenged_hold() {
    challenged_hold_is_sent_again_with_credentials(Db::Sqlite).await;
}
