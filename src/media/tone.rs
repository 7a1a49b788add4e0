//! Tones and prompts: what the PBX itself plays into a call (ringback while click-to-call dials
//! the target, busy and congestion when it fails), as 20 ms frames of 8 kHz linear audio.
//!
//! A [`Tone`] is one or two frequencies switched on and off in a cadence ("425/1000,4000":
//! 425 Hz, one second on, four off). The presets are the ITU-T E.180 / European ones by
//! default, configurable per country ([`Tones`]). A [`Prompt`] is a WAV file read with `hound`,
//! mixed down to mono and resampled to 8 kHz. A [`Source`] turns either into frames.
//!
//! Sans-IO and allocation-free per frame: the relay's worker threads call
//! [`Source::next_frame`] every 20 ms and encode the samples with `media::g711`.
//!
//! Owns: tone specifications and synthesis, prompt decoding and resampling. Must not touch:
//! sockets, RTP headers, timing (the relay owns those).

use std::f32::consts::TAU;
use std::path::Path;
use std::sync::Arc;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;
const RATE: f32 = 8000.0;
/// Peak amplitude of a tone: about −10 dBm0, what exchanges send.
const LEVEL: f32 = 7000.0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("tone `{spec}`: {reason}")]
pub struct ToneError {
    pub spec: String,
    pub reason: String,
}

/// A tone: frequencies (summed) and a cadence of on/off durations in milliseconds (an empty
/// cadence is continuous).
#[derive(Debug, Clone, PartialEq)]
pub struct Tone {
    pub freqs: Vec<f32>,
    pub cadence: Vec<u32>,
}

impl Tone {
    /// Parses `f1[+f2]/on,off[,on,off…]`, e.g. `425/1000,4000` or `400+450/400,200,400,2000`;
    /// `425` alone is continuous.
    pub fn parse(spec: &str) -> Result<Tone, ToneError> {
        let err = |reason: &str| ToneError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (freqs, cadence) = match spec.trim().split_once('/') {
            Some((f, c)) => (f, Some(c)),
            None => (spec.trim(), None),
        };
        let freqs = freqs
            .split('+')
            .map(|f| {
                f.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|f| (20.0..4000.0).contains(f))
            })
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| err("frequencies must be numbers from 20 to 3999 Hz, joined by '+'"))?;
        if freqs.is_empty() || freqs.len() > 2 {
            return Err(err("one or two frequencies"));
        }
        let cadence = match cadence {
            None => Vec::new(),
            Some(c) => c
                .split(',')
                .map(|d| {
                    d.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|d| (1..=60_000).contains(d))
                })
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| err("durations must be whole milliseconds from 1 to 60000"))?,
        };
        if cadence.len() % 2 == 1 {
            return Err(err("the cadence needs on,off pairs"));
        }
        Ok(Tone { freqs, cadence })
    }
}

/// The tones of one country.
#[derive(Debug, Clone, PartialEq)]
pub struct Tones {
    pub ringback: Tone,
    pub busy: Tone,
    pub congestion: Tone,
}

impl Tones {
    /// A preset by country: `eu` (ITU-T E.180 / CEPT, the default), `us` (North America), `uk`.
    pub fn preset(country: &str) -> Option<Tones> {
        let (r, b, c) = match country.to_ascii_lowercase().as_str() {
            "eu" | "de" | "fr" | "it" | "es" | "at" | "ch" | "nl" => {
                ("425/1000,4000", "425/500,500", "425/250,250")
            }
            "us" | "ca" => ("440+480/2000,4000", "480+620/500,500", "480+620/250,250"),
            "uk" | "gb" => (
                "400+450/400,200,400,2000",
                "400/375,375",
                "400/400,350,225,525",
            ),
            _ => return None,
        };
        // The presets are literals that parse; a failure here is a bug caught by the tests.
        Some(Tones {
            ringback: Tone::parse(r).ok()?,
            busy: Tone::parse(b).ok()?,
            congestion: Tone::parse(c).ok()?,
        })
    }
}

impl Default for Tones {
    fn default() -> Tones {
        // "eu" is a literal preset; covered by a unit test.
        Tones::preset("eu").unwrap_or(Tones {
            ringback: Tone {
                freqs: vec![425.0],
                cadence: vec![1000, 4000],
            },
            busy: Tone {
                freqs: vec![425.0],
                cadence: vec![500, 500],
            },
            congestion: Tone {
                freqs: vec![425.0],
                cadence: vec![250, 250],
            },
        })
    }
}

/// A prompt: 8 kHz mono samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: hound::Error },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

impl Prompt {
    /// Reads a WAV file (PCM 8/16/24/32-bit or float, any rate, any channels): mixed down to
    /// mono and resampled to 8 kHz by linear interpolation (prompts are speech; a polyphase
    /// filter would buy nothing audible at telephone bandwidth).
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        let p = path.display().to_string();
        let mut reader = hound::WavReader::open(path).map_err(|source| PromptError::Read {
            path: p.clone(),
            source,
        })?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let read_err = |source| PromptError::Read {
            path: p.clone(),
            source,
        };
        let mono: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1i64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                let all: Vec<i32> = reader
                    .samples::<i32>()
                    .collect::<Result<_, _>>()
                    .map_err(read_err)?;
                all.chunks(channels)
                    .map(|c| c.iter().map(|&s| s as f32 * scale).sum::<f32>() / channels as f32)
                    .collect()
            }
            hound::SampleFormat::Float => {
                let all: Vec<f32> = reader
                    .samples::<f32>()
                    .collect::<Result<_, _>>()
                    .map_err(read_err)?;
                all.chunks(channels)
                    .map(|c| c.iter().sum::<f32>() / channels as f32)
                    .collect()
            }
        };
        if mono.is_empty() || spec.sample_rate == 0 {
            return Err(PromptError::Format {
                path: p,
                reason: "no audio".into(),
            });
        }
        Ok(Prompt {
            samples: resample(&mono, spec.sample_rate).into(),
        })
    }

    pub fn from_samples(samples: Vec<i16>) -> Prompt {
        Prompt {
            samples: samples.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// `input` at `rate` Hz (−1.0..1.0) as 8 kHz 16-bit samples.
fn resample(input: &[f32], rate: u32) -> Vec<i16> {
    let step = rate as f64 / f64::from(RATE as u32);
    let n = ((input.len() as f64) / step).floor() as usize;
    (0..n)
        .map(|i| {
            let pos = i as f64 * step;
            let k = pos as usize;
            let frac = (pos - k as f64) as f32;
            let a = input[k.min(input.len() - 1)];
            let b = input[(k + 1).min(input.len() - 1)];
            let v = a + (b - a) * frac;
            (v.clamp(-1.0, 1.0) * 32767.0) as i16
        })
        .collect()
}

/// What a [`Source`] plays.
#[derive(Debug, Clone, PartialEq)]
pub enum Sound {
    Tone(Tone),
    /// A prompt, once (`repeat = false`) or over and over.
    Prompt {
        prompt: Prompt,
        repeat: bool,
    },
}

/// A sound being played: 20 ms frames on demand.
#[derive(Debug)]
pub struct Source {
    sound: Sound,
    /// Samples produced so far.
    pos: u64,
    phases: [f32; 2],
}

impl Source {
    pub fn new(sound: Sound) -> Source {
        Source {
            sound,
            pos: 0,
            phases: [0.0; 2],
        }
    }

    /// The next 20 ms; `false` once a prompt played once has ended (the frame is then silence).
    pub fn next_frame(&mut self, out: &mut [i16; FRAME]) -> bool {
        let start = self.pos;
        self.pos += FRAME as u64;
        match &self.sound {
            Sound::Tone(t) => {
                let period: u64 = t.cadence.iter().map(|&d| u64::from(d) * 8).sum();
                for (i, o) in out.iter_mut().enumerate() {
                    let at = start + i as u64;
                    let on = period == 0 || {
                        let mut r = at % period;
                        let mut on = true;
                        let mut lit = false;
                        for &d in &t.cadence {
                            let len = u64::from(d) * 8;
                            if r < len {
                                lit = on;
                                break;
                            }
                            r -= len;
                            on = !on;
                        }
                        lit
                    };
                    let mut v = 0.0;
                    for (k, f) in t.freqs.iter().enumerate() {
                        // Phase keeps running through the silences so tone bursts start clean.
                        self.phases[k] = (self.phases[k] + TAU * f / RATE) % TAU;
                        if on {
                            v += self.phases[k].sin();
                        }
                    }
                    *o = (v * LEVEL / t.freqs.len().max(1) as f32) as i16;
                }
                true
            }
            Sound::Prompt { prompt, repeat } => {
                let len = prompt.samples.len() as u64;
                if len == 0 || (!repeat && start >= len) {
                    out.fill(0);
                    return false;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let at = start + i as u64;
                    *o = if *repeat || at < len {
                        prompt.samples[(at % len) as usize]
                    } else {
                        0
                    };
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Energy of `f` Hz in `samples` (Goertzel), relative to the total.
    fn share(samples: &[i16], f: f32) -> f32 {
        let w = TAU * f / RATE;
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in samples {
            let s = x as f32 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let total: f32 = samples.iter().map(|&x| (x as f32).powi(2)).sum();
        power / (total * samples.len() as f32 / 2.0)
    }

    fn play(sound: Sound, frames: usize) -> Vec<i16> {
        let mut s = Source::new(sound);
        let mut out = Vec::new();
        let mut f = [0i16; FRAME];
        for _ in 0..frames {
            s.next_frame(&mut f);
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn presets_parse_and_eu_is_the_default() {
        for c in ["eu", "us", "uk", "DE"] {
            assert!(Tones::preset(c).is_some(), "{c}");
        }
        assert!(Tones::preset("xx").is_none());
        let d = Tones::default();
        assert_eq!(d.ringback, Tone::parse("425/1000,4000").unwrap());
        assert_eq!(d.busy.cadence, vec![500, 500]);
    }

    #[test]
    fn bad_specs_say_why() {
        for bad in [
            "",
            "abc/1,2",
            "425/1000",
            "425+450+500/1,1",
            "425/0,10",
            "5000/1,1",
        ] {
            assert!(Tone::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Tone::parse("425").unwrap().cadence, Vec::<u32>::new());
    }

    #[test]
    fn ringback_is_425_hz_on_for_a_second_then_off_for_four() {
        let s = play(Sound::Tone(Tones::default().ringback), 250); // 5 s
        let on = &s[..8000];
        let off = &s[8000 + 80..40000 - 80];
        assert!(share(on, 425.0) > 0.9, "{}", share(on, 425.0));
        assert!(share(on, 600.0) < 0.01);
        assert!(off.iter().all(|&x| x == 0), "silent between bursts");
        let peak = on.iter().map(|x| x.unsigned_abs()).max().unwrap();
        assert!((6000..=7000).contains(&peak), "{peak}");
        // And again at 5 s: the cadence repeats.
        let again = play(Sound::Tone(Tones::default().ringback), 300);
        assert!(share(&again[40000..48000], 425.0) > 0.9);
    }

    #[test]
    fn two_frequency_tones_hold_both() {
        let s = play(Sound::Tone(Tones::preset("us").unwrap().busy), 25);
        let on = &s[..4000];
        assert!(share(on, 480.0) > 0.3 && share(on, 620.0) > 0.3);
    }

    #[test]
    fn prompts_play_once_or_repeat() {
        let p = Prompt::from_samples((0..400).map(|i| i as i16 + 1).collect());
        let mut s = Source::new(Sound::Prompt {
            prompt: p.clone(),
            repeat: false,
        });
        let mut f = [0i16; FRAME];
        assert!(s.next_frame(&mut f) && f[0] == 1);
        assert!(s.next_frame(&mut f) && f[0] == 161);
        assert!(s.next_frame(&mut f));
        assert_eq!(&f[..80], &(321..401).collect::<Vec<i16>>()[..]);
        assert!(f[80..].iter().all(|&x| x == 0));
        assert!(!s.next_frame(&mut f));
        let r = play(
            Sound::Prompt {
                prompt: p,
                repeat: true,
            },
            5,
        );
        assert_eq!(r[400], 1);
    }

    #[test]
    fn wav_prompts_are_resampled_to_8khz_mono() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wav");
        // One second of 1 kHz in stereo at 16 kHz.
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..16000 {
            let v = ((TAU * 1000.0 * i as f32 / 16000.0).sin() * 16000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let p = Prompt::load(&path).unwrap();
        assert!((7990..=8000).contains(&p.len()), "{}", p.len());
        let s = play(
            Sound::Prompt {
                prompt: p,
                repeat: false,
            },
            50,
        );
        assert!(share(&s[..7900], 1000.0) > 0.9);
        let peak = s.iter().map(|x| x.unsigned_abs()).max().unwrap();
        assert!((15000..=16500).contains(&peak), "{peak}");
        // Not a WAV: a clear error, no panic.
        std::fs::write(dir.path().join("bad.wav"), b"nope").unwrap();
        assert!(Prompt::load(&dir.path().join("bad.wav")).is_err());
    }
}
