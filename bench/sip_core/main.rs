//! The SIP core's own work per registration, without sockets, threads or the store: parse the
//! REGISTER, stamp `received`/`rport`, decide it in the registrar, render the answer; twice per
//! registration (401, then 200), as in `bench/register`. Prints nanoseconds per registration,
//! the best of several rounds.
//!
//!   cargo bench --bench sip_core            # PHONES=10000 ROUNDS=7
//!
//! Why it exists: the end-to-end benchmark (`bench/register/run.sh`) is the figure that counts,
//! but on a shared VM its runs differ by ±15 %, more than most single changes to the parser or
//! the registrar are worth. This measures only our own code, single-threaded, so a change to it
//! shows up as a change in this figure. The client's side (building each phone's REGISTERs and
//! its digest answer) is done outside the timed sections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard::registrar::{Registrar, RegistrarConfig, Source, Transport};
use switchboard::sip::auth::{self, Algorithm};
use switchboard::sip::header::{Challenge, HeaderName};
use switchboard::sip::message;
use switchboard::store::PhoneCredentials;

// The server's allocator, so that allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: switchboard::allocator::Allocator = switchboard::allocator::Allocator;

const REALM: &str = "bench.example";
const PASSWORD: &str = "secret";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sip_core benchmark: run it with `cargo bench --bench sip_core`");
        return;
    }
    let phones: usize = env_or("PHONES", 10_000);
    let rounds: usize = env_or("ROUNDS", 7);
    let mut registrar = Registrar::new(
        RegistrarConfig::new(REALM),
        b"bench secret, 32 bytes at least!",
    );
    let creds: Vec<PhoneCredentials> = (0..phones)
        .map(|i| PhoneCredentials {
            phone_id: i as i64,
            user_id: i as i64,
            realm: REALM.into(),
            ha1_md5: auth::ha1(Algorithm::Md5, &user(i), REALM, PASSWORD),
            ha1_sha256: auth::ha1(Algorithm::Sha256, &user(i), REALM, PASSWORD),
        })
        .collect();
    let peer: SocketAddr = "192.0.2.7:5062".parse().expect("literal address");
    let source = Source {
        addr: peer,
        transport: Transport::Udp,
        flow: 0,
    };
    println!("sip_core: {phones} phones, each registration = REGISTER, 401, REGISTER, 200");
    let mut best = Duration::MAX;
    let mut cseq = 1u32;
    for round in 0..rounds {
        let mut server = Duration::ZERO;
        for (i, cred) in creds.iter().enumerate() {
            cseq += 1;
            let first = register(i, cseq, None);
            let t = Instant::now();
            let challenge = serve(&mut registrar, &first, source, None);
            server += t.elapsed();

            cseq += 1;
            let second = register(i, cseq, Some(&challenge));
            let t = Instant::now();
            let ok = serve(&mut registrar, &second, source, Some(cred));
            server += t.elapsed();
            assert!(
                ok.starts_with(b"SIP/2.0 200"),
                "phone {i} was not registered"
            );
        }
        let per = server / phones as u32;
        println!("  round {round}: {:>7} ns per registration", per.as_nanos());
        best = best.min(per);
    }
    println!(
        "best: {} ns per registration (server side only)",
        best.as_nanos()
    );
}

/// What the SIP core does with one datagram from a phone, up to the bytes it sends back.
fn serve(
    registrar: &mut Registrar,
    datagram: &[u8],
    source: Source,
    creds: Option<&PhoneCredentials>,
) -> Vec<u8> {
    let mut req = match message::parse(datagram) {
        Ok(m) => m,
        Err(e) => panic!("the benchmark's own REGISTER did not parse: {e}"),
    };
    if let Err(e) = req.stamp_top_via(source.addr.ip(), Some(source.addr.port())) {
        panic!("stamping the Via failed: {e}");
    }
    let outcome = registrar.handle_register(&req, source, creds, 1_700_000_000_000);
    outcome.response.to_bytes()
}

fn user(i: usize) -> String {
    format!("{}", 100_000 + i)
}

/// A phone's REGISTER, as SIPp's scenario sends it; with the digest answer to `challenge`.
fn register(i: usize, cseq: u32, challenge: Option<&[u8]>) -> Vec<u8> {
    let user = user(i);
    let mut text = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-{i}-{cseq};rport\r\n\
         From: <sip:{user}@{REALM}>;tag={i}\r\n\
         To: <sip:{user}@{REALM}>\r\n\
         Call-ID: reg-{i}@192.0.2.7\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@192.0.2.7:5062>\r\n\
         Max-Forwards: 70\r\n\
         Expires: 3600\r\n\
         User-Agent: bench\r\n"
    );
    if let Some(challenge) = challenge {
        let rsp = match message::parse(challenge) {
            Ok(m) => m,
            Err(e) => panic!("the server's 401 did not parse: {e}"),
        };
        let offered: Vec<Challenge> = rsp
            .headers(&HeaderName::WwwAuthenticate)
            .filter_map(|v| Challenge::parse(v).ok())
            .filter(|c| c.algorithm() == Some("MD5"))
            .collect();
        let uri = format!("sip:{REALM}");
        let creds = auth::authorize(&offered, &user, PASSWORD, "REGISTER", &uri, "0a4f113b", 1)
            .expect("the 401 offers MD5");
        text.push_str(&format!("Authorization: {creds}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
