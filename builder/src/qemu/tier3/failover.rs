//! Tier 3's failover: the seed's failover test against the REAL control
//! plane, once `habuild status` has found it healthy. The init node is
//! powered off (keepalived must drop it from IPVS within the manifest's
//! window while a client keeps connecting to the VIP, and etcd must keep
//! quorum), powered on again (back in IPVS, Ready, etcd healthy with every
//! member), and with two directors the MASTER is powered off (the BACKUP
//! takes the VIP and the API stays reachable). What the API, etcd and the
//! VIP say comes from `habuild status --json` run in the namespace, as a
//! user would run it; IPVS and VRRP from the directors' fact blocks.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Prepared, Tier3Options};
use crate::config::manifest::{Cluster as Manifest, Role};
use crate::qemu::tier2::cluster::{wait_facts, Cluster};
use crate::qemu::tier2::facts::{removal_window_secs, vrrp_takeover_window_secs, Facts};
use crate::qemu::tier2::netns::Netns;
use crate::qemu::tier2::report::Report;
use crate::qemu::tier2::session::{holds_vip, listed, power_off, wait_active_director};
use crate::qemu::tier2::watch::{VipWatch, WATCH_LEAD};
use crate::status::{Observed, Seen, Verdict};

/// The seconds between two of a director's tier-3 fact blocks once IPVS
/// lists every control plane (qemu/tier3-facts.sh; a control plane's are
/// 15 s apart), at least: a block under emulation takes a while to gather.
const T3_FACT_PERIOD: u64 = 5;

/// How long the survivors may take to settle after the power-off (etcd
/// elects a new leader if the init node led, the API servers notice).
const SETTLE: Duration = Duration::from_secs(180);

/// `habuild status --json` as the tier parses it.
#[derive(Debug, serde::Deserialize)]
pub struct StatusJson {
    pub observed: Observed,
    pub verdict: Verdict,
}

/// One run of `habuild status --json` in the namespace.
pub struct StatusRun {
    pub healthy: bool,
    pub parsed: Option<StatusJson>,
    pub stderr: String,
}

/// Whether the cluster can run the failover: etcd keeps quorum with one of
/// its members down only from three members on, and the VIP needs a
/// director.
pub fn can_fail_over(m: &Manifest) -> Result<(), String> {
    let cps = m.control_planes().count();
    if cps < 3 {
        return Err(format!(
            "{cps} control plane(s): etcd loses quorum when one of fewer than three members is down"
        ));
    }
    if m.directors().count() == 0 {
        return Err("no director".into());
    }
    Ok(())
}

/// What must hold while `down` is powered off: the API answers through the
/// VIP, every other control plane's API server and etcd member is healthy,
/// the member list (asked of a survivor) still holds every control plane
/// as a voting member (quorum kept, nobody removed), and only the others
/// answer behind the VIP. Pure, so each rule is unit-tested.
pub fn judge_degraded(m: &Manifest, o: &Observed, down: &str) -> Vec<(bool, String)> {
    let mut v = Vec::new();
    v.push(match &o.vip_readyz {
        Seen::Ok(s) => (true, format!("/readyz through the VIP: {s}")),
        Seen::Failed(e) => (false, format!("/readyz through the VIP: {e}")),
    });
    for cp in o.control_planes.iter().filter(|c| c.name != down) {
        let readyz = cp.readyz.ok().map(String::as_str);
        let etcd = cp.etcd_health.ok().copied();
        v.push((
            readyz.is_some() && etcd == Some(true),
            format!(
                "{}: /readyz {}, etcd health {}",
                cp.name,
                readyz.unwrap_or("failed"),
                etcd.map_or("failed".into(), |h| h.to_string())
            ),
        ));
    }
    match &o.etcd_members {
        Seen::Ok(members) => {
            let voting: Vec<&str> = members
                .iter()
                .filter(|mb| !mb.is_learner)
                .map(|mb| mb.name.as_str())
                .collect();
            let all = m
                .control_planes()
                .all(|cp| voting.contains(&cp.name.as_str()));
            v.push((
                all,
                format!(
                    "etcd keeps quorum: {} voting member(s) listed by a survivor ({})",
                    voting.len(),
                    voting.join(", ")
                ),
            ));
        }
        Seen::Failed(e) => v.push((false, format!("the etcd member list: {e}"))),
    }
    let by_down = o.behind_vip.get(down).copied().unwrap_or(0);
    let answered: u32 = o.behind_vip.values().sum();
    v.push((
        by_down == 0 && answered * 4 >= o.vip_connections * 3 && answered > 0,
        format!(
            "behind the VIP: {answered} of {} connections answered, {by_down} by {down}",
            o.vip_connections
        ),
    ));
    v
}

/// Runs `habuild status --json` inside the namespace.
pub fn status_in(ns: &Netns, opts: &Tier3Options) -> Result<StatusRun> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("finding the habuild binary")?;
    let mut cmd = ns.command(exe.to_str().context("habuild's path is not UTF-8")?);
    cmd.arg("status")
        .arg("--manifest")
        .arg(opts.manifest_path)
        .arg("--secrets")
        .arg(opts.secrets_path)
        .arg("--json");
    let out = cmd
        .output()
        .context("running habuild status in the namespace")?;
    Ok(StatusRun {
        healthy: out.status.success(),
        parsed: serde_json::from_slice(&out.stdout).ok(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs status until `ok` holds on what it observed or `timeout` passes;
/// returns the last run and the time it took.
pub(super) fn status_until(
    ns: &Netns,
    opts: &Tier3Options,
    timeout: Duration,
    ok: impl Fn(&StatusRun) -> bool,
) -> Result<(StatusRun, Duration, bool)> {
    let t = Instant::now();
    loop {
        let run = status_in(ns, opts)?;
        if ok(&run) {
            return Ok((run, t.elapsed(), true));
        }
        if t.elapsed() >= timeout {
            return Ok((run, t.elapsed(), false));
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// Every control plane as IPVS lists it ("address:port"), sorted.
fn all_real_servers(guests: &[Prepared], port: u16) -> Vec<String> {
    let mut all: Vec<String> = of_role(guests, Role::ControlPlane)
        .into_iter()
        .map(|i| format!("{}:{port}", guests[i].address))
        .collect();
    all.sort();
    all
}

/// The guests of one role, by index.
fn of_role(guests: &[Prepared], role: Role) -> Vec<usize> {
    (0..guests.len())
        .filter(|&i| guests[i].role == role)
        .collect()
}

/// The directors powered on so far (one at a time, the BACKUPs wait for
/// the director failover).
fn running_directors(c: &Cluster, guests: &[Prepared]) -> Vec<usize> {
    of_role(guests, Role::Director)
        .into_iter()
        .filter(|&d| d < c.guests.len())
        .collect()
}

/// Whether a director's blocks come at the failovers' sampling period
/// (qemu/tier3-facts.sh slows them while the cluster forms).
fn sampled_fast(f: &Facts) -> bool {
    f.fact_period.is_some_and(|p| p <= T3_FACT_PERIOD)
}

/// Powers on the guests not powered on yet (the BACKUP directors, one at a
/// time), then waits until every director lists every control plane in
/// IPVS, as keepalived's checks find them (only then can a BACKUP take the
/// VIP over), and prints its blocks at the failovers' sampling period.
fn directors_ready(
    c: &mut Cluster,
    guests: &[Prepared],
    vip: &str,
    port: u16,
    r: &mut Report,
) -> Result<()> {
    let all_rs = all_real_servers(guests, port);
    let mut powered_on_now = Vec::new();
    while c.guests.len() < guests.len() {
        powered_on_now.push(c.start(guests[c.guests.len()].spec.clone())?);
    }
    let t = Instant::now();
    for d in of_role(guests, Role::Director) {
        let ready = wait_facts(
            c,
            d,
            "keepalived lists every control plane, blocks every 5 s",
            Duration::from_secs(600),
            |f| f.keepalived == "active" && listed(f, vip, port) == all_rs && sampled_fast(f),
        );
        if powered_on_now.contains(&d) || ready.is_err() {
            r.check(
                ready.is_ok(),
                format!(
                    "{}{}: keepalived up, every control plane in its IPVS table and its facts every {T3_FACT_PERIOD} s, {:.0}s later",
                    guests[d].spec.name,
                    if powered_on_now.contains(&d) { " powered on now" } else { "" },
                    t.elapsed().as_secs_f64()
                ),
            );
        }
        ready?;
    }
    Ok(())
}

/// The failovers a healthy cluster can go through: a control plane's
/// (from three control planes on) and a director's (from two directors on),
/// each on its own, so that a small cluster still proves what it can.
pub(super) fn run(
    m: &Manifest,
    c: &mut Cluster,
    guests: &[Prepared],
    opts: &Tier3Options,
    r: &mut Report,
) -> Result<()> {
    match can_fail_over(m) {
        Ok(()) => node_failover(m, c, guests, opts, r)?,
        Err(why) => r.line(format!(
            "failover 1 and 2 (a control plane): not run ({why})"
        )),
    }
    match can_move_vip(m) {
        Ok(()) => director_failover(m, c, guests, opts, r),
        Err(why) => {
            r.line(format!("failover 3 (a director): not run ({why})"));
            Ok(())
        }
    }
}

/// Whether the VIP can move: VRRP needs a second director to take it.
pub fn can_move_vip(m: &Manifest) -> Result<(), String> {
    match m.directors().count() {
        n if n >= 2 => Ok(()),
        n => Err(format!("{n} director(s): the VIP has nowhere to move")),
    }
}

/// The init node off (out of IPVS in time, the API answering, etcd
/// quorate) and on again (back in IPVS, status healthy).
fn node_failover(
    m: &Manifest,
    c: &mut Cluster,
    guests: &[Prepared],
    opts: &Tier3Options,
    r: &mut Report,
) -> Result<()> {
    let (vip, port) = (m.vip.address.to_string(), m.vip.port);
    let lb = &m.loadbalancer;
    let directors = running_directors(c, guests);
    let init = m.init_node();
    let victim = guests
        .iter()
        .position(|g| g.spec.name == init.name)
        .expect("the init node is a guest");
    let victim_rs = format!("{}:{port}", init.address);
    let all_rs = all_real_servers(guests, port);

    r.line(format!("failover 1: power off the init node {}", init.name));
    let active = wait_active_director(c, &directors, &vip, Duration::from_secs(300))?;
    let all_listed = wait_facts(
        c,
        active,
        "ipvsadm lists every control plane, blocks every 5 s",
        Duration::from_secs(300),
        |f| listed(f, &vip, port) == all_rs && sampled_fast(f),
    );
    r.check(
        all_listed.is_ok(),
        format!(
            "{} holds the VIP and lists every control plane: {}",
            c.guests[active].spec.name,
            all_rs.join(", ")
        ),
    );
    let window = removal_window_secs(
        lb.delay_loop.into(),
        lb.connect_timeout.into(),
        lb.retry.into(),
        lb.delay_before_retry.into(),
    );
    let watch = VipWatch::start(c.ns(), &vip, port);
    std::thread::sleep(WATCH_LEAD);
    let t = Instant::now();
    let shutdown = power_off(c, victim, Duration::from_secs(180), r)?;
    let limit = Duration::from_secs(window + T3_FACT_PERIOD * 2) + shutdown;
    let removed = wait_facts(
        c,
        active,
        "keepalived removes the powered-off node",
        limit + Duration::from_secs(60),
        |f| !listed(f, &vip, port).contains(&victim_rs),
    );
    let took = t.elapsed();
    r.timed(
        removed.is_ok() && took <= limit,
        &format!("{victim_rs} removed from {vip}:{port} after system_powerdown"),
        took,
        window,
        &format!(
            "delay_loop + connect_timeout x (retry + 1) + delay_before_retry x retry; the {:.1}s shutdown and {}s of fact sampling allowed on top",
            shutdown.as_secs_f64(),
            T3_FACT_PERIOD * 2
        ),
    );
    let (degraded, settled, in_time) = status_until(c.ns(), opts, SETTLE, |s| {
        s.parsed.as_ref().is_some_and(|p| {
            judge_degraded(m, &p.observed, &init.name)
                .iter()
                .all(|(ok, _)| *ok)
        })
    })?;
    let w = watch.finish();
    r.line(format!(
        "  a client connecting to the VIP from 2 s before the power button until the survivors answered: {} of {} TCP connections unanswered, the longest stretch without one {:.1}s",
        w.unanswered,
        w.attempts,
        w.outage.as_secs_f64()
    ));
    r.line(format!(
        "  habuild status with {} down ({:.0}s after its removal{}):",
        init.name,
        settled.as_secs_f64(),
        if in_time { "" } else { ", gave up" }
    ));
    match &degraded.parsed {
        Some(p) => {
            for (ok, what) in judge_degraded(m, &p.observed, &init.name) {
                r.check(ok, format!("  {what}"));
            }
        }
        None => r.check(
            false,
            format!(
                "  habuild status printed no JSON: {}",
                degraded.stderr.trim()
            ),
        ),
    }

    r.line(format!("failover 2: power {} on again", init.name));
    c.restart(victim)?;
    let t = Instant::now();
    let relisted = wait_facts(
        c,
        active,
        "ipvsadm lists the node again",
        opts.timeout,
        |f| listed(f, &vip, port).contains(&victim_rs),
    );
    r.check(
        relisted.is_ok(),
        format!(
            "{victim_rs} back in IPVS on {} {:.0}s after power-on (its API server answering again)",
            c.guests[active].spec.name,
            t.elapsed().as_secs_f64()
        ),
    );
    let (back, _, healthy) = status_until(c.ns(), opts, opts.timeout, |s| s.healthy)?;
    r.check(
        healthy,
        format!(
            "habuild status healthy again {:.0}s after power-on: {} Ready, etcd healthy with every member",
            t.elapsed().as_secs_f64(),
            init.name
        ),
    );
    if !healthy {
        for p in back.parsed.iter().flat_map(|p| &p.verdict.problems) {
            r.line(format!("      PROBLEM: {p}"));
        }
    }

    Ok(())
}

/// The MASTER director off: the BACKUP takes the VIP within VRRP's window
/// and `habuild status` through it finds the control plane healthy.
fn director_failover(
    m: &Manifest,
    c: &mut Cluster,
    guests: &[Prepared],
    opts: &Tier3Options,
    r: &mut Report,
) -> Result<()> {
    let vip = m.vip.address.to_string();
    let port = m.vip.port;
    let lb = &m.loadbalancer;
    directors_ready(c, guests, &vip, port, r)?;
    let directors = of_role(guests, Role::Director);
    let active = wait_active_director(c, &directors, &vip, Duration::from_secs(300))?;
    let backup = *directors
        .iter()
        .find(|&&d| d != active)
        .expect("two directors");
    let backup_priority = m
        .node(&guests[backup].spec.name)
        .map(|n| n.priority)
        .unwrap_or(100);
    let window = vrrp_takeover_window_secs(lb.advert_int.into(), backup_priority.into());
    r.line(format!(
        "failover 3: power off the MASTER director {}",
        guests[active].spec.name
    ));
    let watch = VipWatch::start(c.ns(), &vip, port);
    std::thread::sleep(WATCH_LEAD);
    let t = Instant::now();
    let shutdown = power_off(c, active, Duration::from_secs(60), r)?;
    let limit = Duration::from_secs(window + T3_FACT_PERIOD * 2) + shutdown;
    let moved = wait_facts(
        c,
        backup,
        "the BACKUP takes the VIP",
        limit + Duration::from_secs(30),
        |f| holds_vip(f, &vip),
    );
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let w = watch.finish();
    r.timed(
        moved.is_ok() && took <= limit,
        &format!("VIP moved to {}", guests[backup].spec.name),
        took,
        window,
        &format!(
            "3 x advert_int + skew; the {:.1}s shutdown and {}s of fact sampling allowed on top",
            shutdown.as_secs_f64(),
            T3_FACT_PERIOD * 2
        ),
    );
    r.line(format!(
        "  a client connecting to the VIP during the takeover: {} of {} TCP connections unanswered, the longest stretch without one {:.1}s",
        w.unanswered,
        w.attempts,
        w.outage.as_secs_f64()
    ));
    let (through_backup, _, healthy) =
        status_until(c.ns(), opts, Duration::from_secs(120), |s| s.healthy)?;
    r.check(
        healthy,
        format!(
            "habuild status healthy through the BACKUP director{}",
            through_backup
                .parsed
                .as_ref()
                .map(|p| format!(" (behind the VIP: {:?})", p.observed.behind_vip))
                .unwrap_or_default()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests;
