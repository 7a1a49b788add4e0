//! Media: the RTP engine. Runs on threads of its own, never on the tokio runtime that carries
//! signalling, so a burst of SIP cannot delay audio and a flood of RTP cannot delay SIP.
//!
//! - [`sdp`]: reading where a party wants its audio and pointing a description at us.
//! - [`relay`]: the anchoring relay (latching, RTP and RTCP, port pool, worker threads).
//!
//! Not yet here: transcoding between PCMU and PCMA, tones and prompts, the conference mixer.

pub mod g711;
pub mod relay;
pub mod sdp;
