//! Fuzzes the B2BUA's call state machine (`b2bua::call`) with what phones and trunks send it.
//! The input is messages separated by NUL bytes: the first is the caller's INVITE; each further
//! one that parses is given to the call as it arrives in the field, with 100 ms of virtual time
//! between them: a response to an INVITE as the callee's answer to ours, another response as the
//! answer to the last in-dialog request the call sent, a request as an in-dialog request from
//! the caller or the callee (alternately). Timers run to the end, an hour later. Whatever the
//! input, the call must neither panic nor run for ever.
//!
//! `cargo fuzz run call` in `fuzz/`.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::b2bua::call::{Action, Call, CallConfig, Key, Leg, Target};
use switchboard::sip::header::{NameAddr, Transport, Via};
use switchboard::sip::message::{self, Method};
use switchboard::sip::uri::{Host, Uri};

fn drain(call: &mut Call, sent: &mut Vec<Key>) {
    while let Some(action) = call.poll_action() {
        if let Action::Request { key, .. } = action {
            sent.push(key);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let Some(Ok(invite)) = parts.next().map(message::parse) else {
        return;
    };
    let config = CallConfig {
        no_answer: Duration::from_secs(30),
        no_answer_status: 480,
        contact: NameAddr::parse("<sip:pbx@192.0.2.1:5060>").expect("contact"),
        via: Via::new(
            Transport::Udp,
            Host::parse("192.0.2.1").expect("host"),
            Some(5060),
            "z9hG4bK-fuzz",
        ),
        caller_id: NameAddr::parse("\"Alice\" <sip:100@192.0.2.1>").expect("caller id"),
    };
    let target = Target::phone(Uri::parse("sip:bob@192.0.2.9").expect("uri"), "phone:1".into());
    let start = Instant::now();
    let Ok(mut call) = Call::new(invite, "fuzztag", vec![target], config, 1, start) else {
        return;
    };
    let mut sent = Vec::new();
    drain(&mut call, &mut sent);
    for (i, part) in parts.enumerate() {
        let now = start + Duration::from_millis(100 * (i as u64 + 1));
        call.handle_timeout(now);
        if let Ok(msg) = message::parse(part) {
            if msg.is_request() {
                let leg = if i % 2 == 0 { Leg::Caller } else { Leg::Callee };
                call.on_request(leg, 1000 + i as u64, &msg, now);
            } else if msg.cseq().is_some_and(|c| c.method == Method::Invite) {
                call.on_invite_response(0, &msg, now);
            } else if let Some(key) = sent.pop() {
                call.on_response(key, &msg, now);
            }
        }
        drain(&mut call, &mut sent);
    }
    let end = start + Duration::from_secs(3600);
    let mut rounds = 0;
    while let Some(at) = call.poll_timeout() {
        if at > end {
            break;
        }
        call.handle_timeout(at);
        drain(&mut call, &mut sent);
        rounds += 1;
        assert!(rounds < 100_000, "the call's timers never settle");
    }
});
