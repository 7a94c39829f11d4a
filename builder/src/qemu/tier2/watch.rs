//! A client that connects to the VIP over and over in a thread of its own
//! during a failover, and the longest outage it saw.

use std::time::{Duration, Instant};

use super::cluster::tcp_connects;
use super::netns::Netns;

/// A client on the segment that connects to the VIP over and over in a
/// thread of its own, so an outage is seen on the host's clock while the
/// harness is busy powering a guest off.
pub(crate) struct VipWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Duration, Duration, bool)>>,
}

/// Each probe may wait this long for an answer.
pub(crate) const WATCH_TIMEOUT_SECS: u32 = 1;

/// The client watches the VIP this long before the MASTER is powered off.
pub(crate) const WATCH_LEAD: Duration = Duration::from_secs(2);

impl VipWatch {
    pub fn start(ns: &Netns, vip: &str, port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, ns_name, vip) = (stop.clone(), ns.name.clone(), vip.to_string());
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut probes = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let start = t0.elapsed();
                // The TCP handshake alone: who answers is checked with TLS
                // after the failover, by `probes`.
                let ok = tcp_connects(&ns_name, &vip, port, WATCH_TIMEOUT_SECS);
                probes.push((start, t0.elapsed(), ok));
                std::thread::sleep(Duration::from_millis(100));
            }
            probes
        });
        VipWatch { stop, handle }
    }

    /// Stops probing and sums up what the client saw.
    pub fn finish(self) -> WatchSummary {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let probes = self.handle.join().unwrap_or_default();
        let failed: Vec<&(Duration, Duration, bool)> = probes.iter().filter(|p| !p.2).collect();
        let longest_failed = failed
            .iter()
            .map(|p| p.1.saturating_sub(p.0))
            .max()
            .unwrap_or_default();
        WatchSummary {
            outage: longest_outage(&probes),
            attempts: probes.len(),
            unanswered: failed.len(),
            first_unanswered_at: failed.first().map(|p| p.0),
            resolution: longest_failed + Duration::from_millis(100),
        }
    }
}

pub(crate) struct WatchSummary {
    /// The longest stretch without an answer: from the end of an answered
    /// attempt to the start of the next answered one.
    pub outage: Duration,
    pub attempts: usize,
    pub unanswered: usize,
    /// Since the watch started.
    pub first_unanswered_at: Option<Duration>,
    /// How much `outage` can exceed the real outage: about the longest
    /// unanswered attempt (the one in flight when the VIP came back) plus
    /// the pause between attempts.
    pub resolution: Duration,
}

/// Longest time between an answered probe's end and the next answered
/// probe's start, over probes (start, end, answered).
fn longest_outage(probes: &[(Duration, Duration, bool)]) -> Duration {
    let mut last_ok_end: Option<Duration> = None;
    let mut longest = Duration::ZERO;
    let mut since_ok_failed = false;
    for &(start, end, ok) in probes {
        if ok {
            if let (Some(prev), true) = (last_ok_end, since_ok_failed) {
                longest = longest.max(start.saturating_sub(prev));
            }
            last_ok_end = Some(end);
            since_ok_failed = false;
        } else {
            since_ok_failed = true;
        }
    }
    if since_ok_failed {
        // No answer again before the watch stopped: the outage lasted at
        // least until the last probe ended.
        if let Some(&(_, end, _)) = probes.last() {
            longest = longest.max(end.saturating_sub(last_ok_end.unwrap_or_default()));
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn outage_is_the_longest_gap_between_answers() {
        assert_eq!(longest_outage(&[]), Duration::ZERO);
        let all_ok = [(s(0.0), s(0.1), true), (s(0.2), s(0.3), true)];
        assert_eq!(longest_outage(&all_ok), Duration::ZERO);
        let gap = [
            (s(0.0), s(0.1), true),
            (s(0.2), s(1.2), false),
            (s(1.3), s(2.3), false),
            (s(2.4), s(2.5), true),
            (s(2.6), s(3.6), false),
            (s(3.7), s(3.8), true),
        ];
        assert_eq!(longest_outage(&gap), s(2.4) - s(0.1));
        // Never answered again: counted to the end of the last attempt.
        let lost = [(s(0.0), s(0.1), true), (s(0.2), s(5.2), false)];
        assert_eq!(longest_outage(&lost), s(5.1));
    }
}
