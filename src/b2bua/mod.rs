//! Calls: the back-to-back user agent. Every call is two (or, while ringing, more) independent
//! SIP dialogs: the caller's leg, on which we are the UAS, and one leg per target we ring, on
//! which we are the UAC.
//!
//! - [`call`]: one call as a sans-IO state machine — forking to a location's targets, first
//!   answer wins, CANCEL of the other branches, outcome mapping, hang-up from either side and
//!   relaying in-dialog requests between the legs, or answering here (echo test). Fed with
//!   parsed messages and time; returns [`call::Action`]s for a driver to carry out.
//! - [`service`]: the driver on the SIP endpoint's task — INVITE authentication, routing
//!   (`service::route`), media anchoring through the relay, call records
//!   (`service::records`), and the glue of click-to-call's two legs.
//! - [`click_to_call`]: the API's side of click-to-call (validation, routing, the state shown).
//! - [`events`]: the live call-event bus the API streams.
//!
//! Not here: transactions (`sip::transaction`), sockets, digest (`sip::auth`), dialplans
//! (`routing`), bindings (the registrar), RTP (`media`), SQL (`store`).

pub mod call;
pub mod click_to_call;
pub mod events;
pub mod service;
