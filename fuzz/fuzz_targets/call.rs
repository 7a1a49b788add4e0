//! Fuzzes the B2BUA's call state machine (`b2bua::call`) with what phones and trunks send it.
//! The input is parts separated by NUL bytes: the first is the caller's INVITE; each further part
//! is one event, 100 ms of virtual time after the one before, its first byte saying which: a
//! response to the callee's INVITE (0), the answer to the in-dialog request the call sent last
//! (1), an in-dialog request from the caller (2) or the callee (3), the caller's CANCEL (4), a
//! CANCEL of the last request received (5), the callee's INVITE timing out (6), the caller's
//! transaction failing (7), the last request sent timing out (8), a hang-up by the PBX (other).
//! The rest of the part is the message, where one is needed. Timers run to the end, an hour
//! later. Whatever the input, the call must neither panic nor spin on its timers, before or
//! after it let go of what a finished call no longer needs (`Call::release`).
//!
//! `cargo fuzz run call` in `fuzz/`.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::b2bua::call::{Action, Call, CallConfig, Key, Leg, Target};
use switchboard::sip::header::{NameAddr, Transport, Via};
use switchboard::sip::message;
use switchboard::sip::uri::{Host, Uri};

fn drain(call: &mut Call, sent: &mut Vec<Key>) {
    while let Some(action) = call.poll_action() {
        if let Action::Request { key, .. } = action {
            sent.push(key);
        }
    }
    // As the driver does once a call is finished (a no-op before): what comes after must
    // still be handled.
    call.release();
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
    let mut received = 1000;
    for (i, part) in parts.enumerate() {
        let now = start + Duration::from_millis(100 * (i as u64 + 1));
        call.handle_timeout(now);
        let Some((&event, text)) = part.split_first() else {
            continue;
        };
        let msg = message::parse(text).ok();
        match (event, msg) {
            (0, Some(m)) if m.status().is_some() => call.on_invite_response(0, &m, now),
            (1, Some(m)) if m.status().is_some() => {
                if let Some(key) = sent.pop() {
                    call.on_response(key, &m, now);
                }
            }
            (2 | 3, Some(m)) if m.is_request() => {
                received += 1;
                let leg = if event == 2 { Leg::Caller } else { Leg::Callee };
                call.on_request(leg, received, &m, now);
            }
            (4, _) => call.on_caller_cancel(now),
            (5, _) => call.on_cancel(received),
            (6, _) => call.on_invite_timeout(0, now),
            (7, _) => call.on_caller_gone(now),
            (8, _) => {
                if let Some(key) = sent.pop() {
                    call.on_request_timeout(key, now);
                }
            }
            (9.., _) => call.hang_up_both("fuzz", now),
            _ => {}
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
