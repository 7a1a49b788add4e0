//! Fuzzes what the services read from a message once it parsed: the typed headers they ask for
//! (credentials, routes, expiry, name-address lists), digest verification (with a nonce the
//! server issued where the input says `NONCE`), and the body through
//! `media::sdp` (the whole body, and the SDP part of a multipart one). The SDP functions also get
//! the input as it is, as text.
//!
//! `cargo fuzz run layers` in `fuzz/` (see `parse.rs` for seeding with the torture corpus).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::media::sdp;
use switchboard::sip::auth::{uri_matches, DigestServer};
use switchboard::sip::header::HeaderName;
use switchboard::sip::message;
use switchboard::sip::multipart;

fn descriptions(text: &str) {
    let _ = sdp::audio_endpoint(text);
    let _ = sdp::holds(text);
    let _ = sdp::anchor(text, "192.0.2.1:20000".parse().expect("address"));
    let _ = sdp::audio_formats(text);
    let _ = sdp::audio_encrypted(text);
    let _ = sdp::offer_both_g711(text);
    let _ = sdp::swap_g711(text, sdp::PCMU, sdp::PCMA);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        descriptions(text);
    }
    // A nonce the server issued, so that verification goes past the nonce check: the input's
    // `NONCE` stands for it.
    let mut server = DigestServer::new(b"fuzz");
    let nonce = server.nonce("realm", 0);
    let with_nonce = String::from_utf8_lossy(data).replace("NONCE", &nonce);
    let Ok(msg) = message::parse(with_nonce.as_bytes()) else {
        return;
    };
    for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
        for creds in msg.credentials(&name).flatten() {
            let _ = server.verify(&creds, "INVITE", |_| Some("0".repeat(64)), "realm", 0);
            if let (Some(u), Some(r)) = (creds.uri(), msg.uri()) {
                let _ = uri_matches(u, r);
            }
        }
    }
    let _ = (msg.expires(), msg.min_expires(), msg.routes(), msg.record_routes());
    let _ = msg.name_addrs(&HeaderName::PAssertedIdentity);
    let body = msg.body();
    if let Some(ct) = msg.content_type() {
        if let Some(part) = multipart::part(body, ct, "application/sdp") {
            if let Some(text) = body.get(part).and_then(|b| std::str::from_utf8(b).ok()) {
                descriptions(text);
            }
        }
    }
});
