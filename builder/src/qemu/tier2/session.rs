//! What the tier-2 scenarios share: the running cluster with its guests
//! and report ([`Run`]), and what a scenario can do to it or ask of it
//! (probe the VIP from the client, power a guest off, find the director
//! that holds the VIP, read its IPVS table).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::{client_probe, qmp, wait_facts, Cluster};
use super::facts::{answered_by, ipvs_service, Facts};
use super::guests::Prepared;
use super::netns::Netns;
use super::report::Report;
use crate::config::manifest::{Cluster as Manifest, Role};

/// The seconds between two fact blocks of a guest (qemu/tier2-facts.sh).
pub const FACT_PERIOD: u64 = 3;

/// The cluster while the scenarios run, and what they found so far.
pub struct Run<'a> {
    pub m: &'a Manifest,
    pub c: Cluster,
    /// In the order they were started: directors, then control planes.
    pub guests: Vec<Prepared>,
    pub r: Report,
    /// When the guests were started; the boot timeout counts from here.
    pub t0: Instant,
    pub boot_timeout: Duration,
    pub vip: String,
    pub port: u16,
    /// The director that holds the VIP, once scenario 2 has found it.
    pub active: Option<usize>,
}

/// What [`Run::power_off_until`] measured.
pub struct PoweredOff {
    /// From the power button to what was awaited (or giving up).
    pub took: Duration,
    pub in_time: bool,
    /// How long the guest took to power off.
    pub shutdown: Duration,
}

/// The node a scenario powers off and on again: the init node.
pub struct Victim {
    pub name: String,
    pub index: usize,
    pub ip: String,
    /// As IPVS lists it: `address:port`.
    pub rs: String,
}

impl Run<'_> {
    /// What is left of the boot timeout.
    pub fn deadline(&self) -> Duration {
        self.boot_timeout.saturating_sub(self.t0.elapsed())
    }

    /// Guests of `role`, by index.
    pub fn of_role(&self, role: Role) -> Vec<usize> {
        (0..self.guests.len())
            .filter(|&i| self.guests[i].role == role)
            .collect()
    }

    /// The control planes' names, in the order they were started.
    pub fn control_plane_names(&self) -> Vec<String> {
        self.of_role(Role::ControlPlane)
            .into_iter()
            .map(|i| self.guests[i].spec.name.clone())
            .collect()
    }

    pub fn active(&self) -> usize {
        self.active
            .expect("scenario 2 found the director holding the VIP")
    }

    pub fn victim(&self) -> Result<Victim> {
        let name = self.m.init_node().name.clone();
        let index = self
            .c
            .guest(&name)
            .context("the init node is not running")?;
        let ip = self.guests[index].address.to_string();
        let rs = format!("{ip}:{}", self.port);
        Ok(Victim {
            name,
            index,
            ip,
            rs,
        })
    }

    /// Powers guest `victim` off (see [`power_off`]) and waits until `done`
    /// holds on guest `watched`'s facts. In time: within `window` counted
    /// from the power button, with the shutdown and two fact periods
    /// allowed on top; the wait goes on 30 s past that.
    pub fn power_off_until(
        &mut self,
        victim: usize,
        grace: Duration,
        watched: usize,
        window: u64,
        what: &str,
        done: impl Fn(&Facts) -> bool,
    ) -> Result<PoweredOff> {
        let t = Instant::now();
        let shutdown = power_off(&mut self.c, victim, grace, &mut self.r)?;
        let limit = Duration::from_secs(window + FACT_PERIOD * 2) + shutdown;
        let seen = wait_facts(
            &mut self.c,
            watched,
            what,
            limit + Duration::from_secs(30),
            done,
        );
        let took = t.elapsed();
        Ok(PoweredOff {
            took,
            in_time: seen.is_ok() && took <= limit,
            shutdown,
        })
    }

    /// `n` connections from the client to the VIP, with who answered each.
    pub fn probe_vip(&self, n: usize) -> Vec<Option<String>> {
        probes(self.c.ns(), &self.vip, self.port, n)
    }

    /// Checks that `n` connections to the VIP are all answered, and by
    /// control planes of which `who` approves; reported as
    /// "`said` {who answered} (x unanswered of n)".
    pub fn check_vip_answers(
        &mut self,
        n: usize,
        said: &str,
        who: impl Fn(&BTreeSet<String>) -> bool,
    ) {
        let answers = self.probe_vip(n);
        let seen = answered_by(&answers);
        let unanswered = answers.iter().filter(|a| a.is_none()).count();
        self.r.check(
            // A connection lost now and then is the emulated guests' load
            // (five TCG guests on two cores: a TLS handshake can take longer
            // than a probe waits); a real server LVS sends into a black hole
            // loses its whole share, and `who` fails when one never answers.
            unanswered * 4 <= answers.len() && who(&seen),
            format!(
                "{said} {seen:?} ({unanswered} unanswered of {})",
                answers.len()
            ),
        );
    }
}

pub fn holds_vip(f: &Facts, vip: &str) -> bool {
    f.addrs
        .iter()
        .any(|(_, a)| a.split('/').next() == Some(vip))
}

/// The real servers the active director lists for the VIP (sorted).
pub fn listed(f: &Facts, vip: &str, port: u16) -> Vec<String> {
    ipvs_service(&f.ipvs, vip, port)
        .map(|(_, rs)| rs.into_iter().map(|r| r.addr).collect())
        .unwrap_or_default()
}

/// Probes `addr:port` from the client until `pred` holds on the answer;
/// returns the time that took (host clock), or None after `timeout`.
pub fn poll_probe(
    ns: &Netns,
    addr: &str,
    port: u16,
    timeout: Duration,
    pred: impl Fn(Option<&str>) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= timeout {
        if pred(client_probe(ns, addr, port).as_deref()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

pub fn probes(ns: &Netns, vip: &str, port: u16, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| client_probe(ns, vip, port)).collect()
}

/// Powers guest `i` off as `shutdown -h now` would (ACPI power button via
/// QMP `system_powerdown`, so the guest's systemd stops its services); if
/// QEMU has not exited within `grace`, it is killed (a power cut) and the
/// report says so.
pub fn power_off(c: &mut Cluster, i: usize, grace: Duration, r: &mut Report) -> Result<Duration> {
    let start = Instant::now();
    let name = c.guests[i].spec.name.clone();
    qmp(&c.guests[i].spec.qmp, "system_powerdown")
        .with_context(|| format!("powering {name} off"))?;
    while c.guests[i].running() && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(500));
    }
    if c.guests[i].running() {
        r.line(format!(
            "  note: {name} did not power off within {}s of system_powerdown; QEMU killed (power cut)",
            grace.as_secs()
        ));
        c.kill(i);
    } else {
        r.line(format!(
            "  {name}: powered off by QMP system_powerdown (ACPI power button, a clean shutdown like `shutdown -h now`) in {:.1}s",
            start.elapsed().as_secs_f64()
        ));
    }
    Ok(start.elapsed())
}

/// The director that holds the VIP (VRRP MASTER), once one does.
pub fn wait_active_director(
    c: &mut Cluster,
    directors: &[usize],
    vip: &str,
    timeout: Duration,
) -> Result<usize> {
    let start = Instant::now();
    loop {
        for &d in directors {
            if c.guests[d]
                .facts()
                .is_some_and(|f| holds_vip(&f, vip) && f.keepalived == "active")
            {
                return Ok(d);
            }
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "no director holds the VIP {vip} after {}s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
