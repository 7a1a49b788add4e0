//! Calls: the back-to-back user agent. Every call is two (or, while ringing, more) independent
//! SIP dialogs: the caller's leg, on which we are the UAS, and one leg per target we ring, on
//! which we are the UAC.
//!
//! - [`call`]: one call as a sans-IO state machine — forking to a location's targets, first
//!   answer wins, CANCEL of the other branches, outcome mapping, hang-up from either side and
//!   relaying in-dialog requests between the legs. Fed with parsed messages and time; returns
//!   [`call::Action`]s for a driver to carry out.
//!
//! Not here: transactions (`sip::transaction`), sockets, authentication of the caller
//! (`sip::auth`), choosing the targets (`routing` and the registrar), media (`media`), and
//! writing call records (`store`). The driver that connects these to the SIP endpoint is the
//! next piece of work (issue 4).

pub mod call;
pub mod click_to_call;
pub mod events;
pub mod service;
