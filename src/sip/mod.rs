//! The SIP stack: message parsing and building, transactions, transports and digest auth.
//!
//! Ours on purpose (see "Decisions" in ARCHITECTURE.md): the crates in the field either fail on
//! inputs RFC 3261 requires a server to accept or tie every message to one global event loop.

pub mod auth;
pub mod transport;
