//! Process metrics in the Prometheus text format (`GET /metrics`).
//!
//! A handful of atomic counters written by hand: the exposition format for counters and gauges is
//! a few lines, and the metrics crates would bring a registry, macros and a global recorder for
//! what is today a dozen numbers. Each subsystem adds its counters here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters shared by every part of the server.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// HTTP responses by class: 2xx, 3xx, 4xx, 5xx.
    http_responses: [AtomicU64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            http_responses: Default::default(),
        }
    }
}

impl Metrics {
    pub fn http_response(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.http_responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the exposition text; `counters` are other subsystems' running totals, `gauges`
    /// point-in-time values the caller measured.
    pub fn render(&self, counters: &[(&str, &str, u64)], gauges: &[(&str, &str, i64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP switchboard_build_info Build information.\n# TYPE switchboard_build_info gauge\nswitchboard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_uptime_seconds Seconds since the server started.\n# TYPE switchboard_uptime_seconds gauge\nswitchboard_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_http_responses_total HTTP responses sent, by status class.\n# TYPE switchboard_http_responses_total counter"
        );
        for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_http_responses_total{{class=\"{class}\"}} {}",
                self.http_responses[i].load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
