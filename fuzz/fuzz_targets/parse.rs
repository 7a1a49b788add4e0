//! Fuzzes the SIP message layer: datagram parsing, stream framing, error
//! responses and the parse -> to_bytes -> parse round trip.
//!
//! Seed with the torture corpus for fast coverage:
//! `cargo fuzz run parse ../../shared/testdata/sip-torture/rfc4475/dat`

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::message::{self, Frame, Message, MAX_MESSAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    match message::parse(data) {
        Ok(msg) => {
            // Whatever we accept we must be able to send on, and sending it
            // twice must give the same bytes.
            let wire = msg.to_bytes();
            let again = match message::parse(&wire) {
                Ok(m) => m,
                Err(e) => panic!("to_bytes() output does not re-parse: {e}"),
            };
            assert_eq!(again.to_bytes(), wire, "serialisation is not stable");
            assert_eq!(again.body(), msg.body());
            assert_eq!(again.via_headers(), msg.via_headers());
            if msg.is_request() {
                let rsp = Message::response_to(&msg, 200, "OK").to_bytes();
                assert!(message::parse(&rsp).is_ok(), "response_to output does not parse");
            }
        }
        Err(e) => {
            if let Some(rsp) = e.response_bytes() {
                assert!(rsp.starts_with(b"SIP/2.0 "));
            }
        }
    }

    match message::frame(data, MAX_MESSAGE_SIZE) {
        Frame::Message(n) => {
            assert!(n > 0 && n <= data.len());
            if let Some(msg) = data.get(..n) {
                let _ = message::parse(msg);
            }
        }
        Frame::KeepAlive(n) => assert!(n == 2 || n == 4),
        Frame::Incomplete => {}
        Frame::Body(total) => assert!(total > data.len() && total <= MAX_MESSAGE_SIZE),
        Frame::Invalid(e) => {
            let _ = e.response_bytes();
        }
    }
});
