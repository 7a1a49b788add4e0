//! Media: the RTP engine. Runs on threads of its own, never on the tokio runtime that carries
//! signalling, so a burst of SIP cannot delay audio and a flood of RTP cannot delay SIP.
//!
//! - [`sdp`]: reading where a party wants its audio and pointing a description at us.
//! - [`relay`]: the anchoring relay (latching, RTP and RTCP, port pool, worker threads,
//!   PCMU↔PCMA transcoding, playing tones and prompts into a side).
//! - [`netfilter`]: handing streams that need only forwarding to the kernel (nftables).
//! - [`g711`]: the two laws and the conversion between them.
//! - [`tone`]: ringback/busy/congestion tones and WAV prompts as 20 ms frames.
//!
//! Not yet here: the conference mixer, codecs beyond G.711.

pub mod g711;
pub mod netfilter;
pub mod relay;
pub mod sdp;
pub mod tone;
