//! The SIP server on the wire: every RFC 4475 / RFC 5118 torture message sent to a running
//! server gets the answer its EXPECT row names (and the server keeps answering afterwards);
//! streams are framed, kept alive with CRLF, and closed on garbage; TLS with the generated
//! certificate; IPv6.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Db, TestDb};
use switchboard::config::{Config, Transport};
use switchboard::Server;

async fn server(db: &TestDb, listen: &str) -> (Server, tempfile::TempDir) {
    common::start_server(db, &format!("listen = [{listen}]"), "").await
}

fn torture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sip-torture")
}

/// Adds `;rport` to the first Via value (RFC 3581), so the answer comes back to the test's
/// socket the way it reaches a phone behind NAT, instead of to the port the message names.
/// The insertion goes after the first sent-by, following folded lines, and leaves every other
/// byte as it was.
fn with_rport(msg: &[u8]) -> Vec<u8> {
    let lower = msg.to_ascii_lowercase();
    let mut at = None;
    let mut i = 0;
    while i < lower.len() {
        let line_start = i == 0 || lower[i - 1] == b'\n';
        if line_start {
            let rest = &lower[i..];
            let name_len = if rest.starts_with(b"via") {
                3
            } else if rest.starts_with(b"v") {
                1
            } else {
                0
            };
            if name_len > 0 {
                let after = &rest[name_len..];
                let ws = after
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count();
                if after.get(ws) == Some(&b':') {
                    // Scan the value, through folds, to the first ';' or ','.
                    let mut j = i + name_len + ws + 1;
                    while j < msg.len() {
                        match msg[j] {
                            b';' | b',' => break,
                            b'\r' if !matches!(msg.get(j + 2), Some(b' ') | Some(b'\t')) => break,
                            _ => j += 1,
                        }
                    }
                    at = Some(j);
                    break;
                }
            }
        }
        i += 1;
    }
    match at {
        Some(j) => [&msg[..j], b";rport", &msg[j..]].concat(),
        None => msg.to_vec(),
    }
}

/// Makes the first RFC 3261 branch unique: several torture messages share a branch (and
/// sent-by), and the transaction layer rightly takes the later ones for retransmissions.
fn unique_branch(msg: &[u8], n: usize) -> Vec<u8> {
    let cookie = b"branch=z9hG4bK";
    match msg
        .windows(cookie.len())
        .position(|w| w.eq_ignore_ascii_case(cookie))
    {
        Some(i) => {
            let at = i + cookie.len();
            [&msg[..at], format!("t{n}x").as_bytes(), &msg[at..]].concat()
        }
        None => msg.to_vec(),
    }
}

/// Sends one datagram and returns the status code of the answer, if one comes.
fn exchange(sock: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Option<u16> {
    sock.send_to(bytes, to).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut code = None;
    // Take the final answer; skip 100 Trying.
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        let c = text.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
        code = c;
        if c.is_some_and(|c| c >= 200) {
            break;
        }
    }
    code
}

/// What the server should answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Status(u16),
    /// Any answer but 400: the message is accepted and processed (today: 200, 401, 405, 481, 501).
    Processed,
    Silence,
    /// EXPECT allows a 400 or a silent drop.
    BadOrSilence,
}

/// The answer each row's text asks for. Responses are never answered; the rest follows the
/// EXPECT rows, with the cases the text spells out named here.
fn expected(file: &str, valid: bool, is_response: bool) -> Want {
    if is_response {
        return Want::Silence;
    }
    match file {
        "badvers.dat" => Want::Status(505),
        // Require of option tags nobody supports: 420 (RFC 3261 §8.2.2.3).
        "bext01.dat" => Want::Status(420),
        // Registrar: the To of a REGISTER must be a SIP/SIPS AOR.
        "unksm2.dat" => Want::Status(400),
        // Responses the parser refuses (CSeq or status out of range): never answered.
        "scalarlg.dat" | "bigcode.dat" => Want::Silence,
        // No From, To or Call-ID: a response cannot even be addressed.
        "insuf.dat" => Want::Silence,
        "test.dat" => Want::BadOrSilence,
        // The Date is malformed but does not matter to processing.
        "baddate.dat" => Want::Processed,
        _ if valid => Want::Processed,
        _ => Want::Status(400),
    }
}

async fn torture_messages_get_the_right_answer(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "\"udp:127.0.0.1:0\"").await;
    let to = common::sip_addr(&server, Transport::Udp);
    let results = tokio::task::spawn_blocking(move || {
        // A socket per message: an unacknowledged INVITE's final response is retransmitted
        // (Timer G), and those copies must not be taken for the next message's answer.
        let fresh = || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(400)))
                .unwrap();
            sock
        };
        let mut report = Vec::new();
        for set in ["rfc4475", "rfc5118"] {
            let base = torture_dir().join(set);
            let expect = std::fs::read_to_string(base.join("EXPECT.tsv"))
                .expect("torture corpus beside the repository");
            for row in expect.lines().filter(|l| !l.trim().is_empty()) {
                let cols: Vec<&str> = row.splitn(3, '\t').collect();
                let (file, valid, text) = (cols[0], cols[1] == "valid", cols[2]);
                let path = if base.join("wire").join(file).exists() {
                    base.join("wire").join(file)
                } else {
                    base.join("dat").join(file)
                };
                let raw = std::fs::read(&path).unwrap();
                // Responses and messages we refuse are answered (or not) statelessly to the
                // source; accepted requests are answered per Via, so ask for rport.
                let parsed = switchboard::sip::message::parse(&raw);
                let bytes = match &parsed {
                    Ok(m) if m.is_request() => unique_branch(&with_rport(&raw), report.len()),
                    _ => raw.clone(),
                };
                let got = exchange(&fresh(), to, &bytes);
                let is_response = matches!(&parsed, Ok(m) if !m.is_request());
                report.push((
                    file.to_owned(),
                    expected(file, valid, is_response),
                    text.to_owned(),
                    got,
                ));
            }
        }
        // Still alive and answering afterwards.
        let alive = exchange(
            &fresh(),
            to,
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKalive;rport\r\n\
              From: <sip:t@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\n\
              Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        );
        (report, alive)
    })
    .await
    .unwrap();

    let (report, alive) = results;
    let mut failures = Vec::new();
    for (file, want, text, got) in &report {
        let ok = match want {
            Want::Silence => got.is_none(),
            Want::Processed => got.is_some_and(|c| c != 400),
            Want::Status(code) => *got == Some(*code),
            Want::BadOrSilence => got.is_none() || *got == Some(400),
        };
        if !ok {
            failures.push(format!(
                "{file}: got {got:?}, wanted {want:?}; EXPECT: {text}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        report.len(),
        failures.join("\n")
    );
    assert!(report.len() >= 60);
    assert_eq!(alive, Some(200));
    server.shutdown().await;
}

async fn streams_are_framed_kept_alive_and_closed_on_garbage(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "\"tcp:127.0.0.1:0\"").await;
    let to = common::sip_addr(&server, Transport::Tcp);
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // Two requests in one write, the second split across writes: both answered, in order.
        let opt = |n: u32| {
            format!(
                "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp{n}\r\n\
                 From: <sip:t@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: tcp{n}\r\nCSeq: {n} OPTIONS\r\n\
                 Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let two = format!("{}{}", opt(1), opt(2));
        let (a, b) = two.split_at(two.len() - 10);
        s.write_all(a.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b.as_bytes()).unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while got.matches("SIP/2.0 200").count() < 2 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let first = got.find("CSeq: 1 OPTIONS").unwrap();
        let second = got.find("CSeq: 2 OPTIONS").unwrap();
        assert!(first < second);

        // CRLF keep-alive: a double CRLF ping gets a single CRLF pong (RFC 5626 §3.5.1).
        s.write_all(b"\r\n\r\n").unwrap();
        let n = s.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\r\n");

        // Garbage: the connection is closed (after a 400 when one can be built).
        s.write_all(b"HELLO WORLD THIS IS NOT SIP\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        assert!(closed, "garbage did not close the stream");

        // A message without Content-Length on a stream is a framing error: closed too.
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKncl\r\n\
              From: <sip:t@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: ncl\r\nCSeq: 1 OPTIONS\r\n\
              Max-Forwards: 70\r\n\r\n",
        )
        .unwrap();
        let mut all = Vec::new();
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        assert!(closed);
        assert!(
            String::from_utf8_lossy(&all).starts_with("SIP/2.0 400"),
            "{}",
            String::from_utf8_lossy(&all)
        );
    })
    .await
    .unwrap();
    server.shutdown().await;
}

async fn tls_with_the_generated_certificate(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, data) = server(&tdb, "\"tls:127.0.0.1:0\"").await;
    let to = common::sip_addr(&server, Transport::Tls);
    // The certificate was generated into the data dir; trust exactly it.
    let cert_path = data.path().join("tls/sip.crt");
    use rustls::pki_types::pem::PemObject;
    let cert = rustls::pki_types::CertificateDer::from_pem_file(&cert_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(
        b"OPTIONS sips:x SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKtls\r\n\
          From: <sips:t@x>;tag=1\r\nTo: <sips:x>\r\nCall-ID: tls1\r\nCSeq: 1 OPTIONS\r\n\
          Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    assert!(text.contains("Allow: "), "{text}");

    // The same certificate is used again after a restart.
    server.shutdown().await;
    let before = std::fs::read(&cert_path).unwrap();
    let toml = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[sip]\nlisten = [\"tls:127.0.0.1:0\"]\n",
        data.path().display().to_string(),
        tdb.url
    );
    let again = Server::start(Config::from_toml(&toml).unwrap())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&cert_path).unwrap(), before);
    again.shutdown().await;
}

async fn ipv6_loopback(db: Db) {
    let tdb = TestDb::new(db).await;
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("this machine has no IPv6 loopback; the IPv6 transport cannot be tested");
    }
    let (server, _data) = server(&tdb, "\"udp:[::1]:0\"").await;
    let to = common::sip_addr(&server, Transport::Udp);
    let code = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("[::1]:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        exchange(
            &sock,
            to,
            b"OPTIONS sip:[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:9;branch=z9hG4bKv6;rport\r\n\
              From: <sip:t@[::1]>;tag=1\r\nTo: <sip:[::1]>\r\nCall-ID: v6\r\nCSeq: 1 OPTIONS\r\n\
              Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(200));
    server.shutdown().await;
}

on_both_databases!(
    torture_messages_get_the_right_answer,
    streams_are_framed_kept_alive_and_closed_on_garbage,
    tls_with_the_generated_certificate,
    ipv6_loopback,
);
