//! The SIP stack: URIs, header values and whole messages with their framing (RFC 3261, RFC 3581,
//! RFC 4475, RFC 5118), transports and digest authentication.
//!
//! Hand-written instead of depending on `rsip` (see "Decisions" in ARCHITECTURE.md): that crate
//! is unmaintained and fails compact header forms, folded lines, IPv6 Via hosts and `tel:` URIs,
//! all of which a PBX meets in the field. The RFC 4475 and RFC 5118 torture suites run against
//! this code in `tests/sip_torture.rs`, and `fuzz/` fuzzes the parser.
//!
//! Nothing here panics on any input; malformed messages surface as [`message::ParseError`],
//! which knows the status to answer with.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod header;
pub(crate) mod lex;
pub mod message;
pub mod multipart;
pub mod stun;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod udp_batch;
pub mod uri;
