//! The seed's failover test, one function per scenario, run in the order
//! of [`SCENARIOS`] after [`boot`]. Each prints its heading and checks;
//! each timed check states the window the manifest implies.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cluster::{wait_all_facts, wait_facts, CLIENT_CIDR};
use super::facts::{
    ipvs_service, judge_first_boot, readd_window_secs, removal_window_secs,
    vrrp_takeover_window_secs, Facts,
};
use super::session::{
    holds_vip, listed, poll_probe, wait_active_director, PoweredOff, Run, FACT_PERIOD,
};
use super::watch::{VipWatch, WATCH_LEAD, WATCH_TIMEOUT_SECS};
use crate::config::manifest::Role;

/// A named step of the failover test.
pub type Scenario = fn(&mut Run) -> Result<()>;

/// The scenarios, in order; later ones rely on what earlier ones found
/// (scenario 2 finds the director that holds the VIP).
pub const SCENARIOS: &[Scenario] = &[
    first_boot_order,
    lvs_dr,
    init_node_powered_off,
    init_node_powered_on_again,
    master_director_stopped,
];

/// Boot: every guest prints facts; first boot finishes on every control plane.
pub fn boot(run: &mut Run) -> Result<()> {
    run.r.line("boot".into());
    let everyone: Vec<usize> = (0..run.guests.len()).collect();
    let (t0, deadline) = (run.t0, run.deadline());
    let booted = wait_all_facts(
        &mut run.c,
        &everyone,
        "boot to the first fact block",
        t0,
        deadline,
        |_, _| true,
    )?;
    for (p, took) in run.guests.iter().zip(&booted) {
        run.r.line(format!(
            "  {}: booted (first fact block) {:.0}s after start",
            p.spec.name,
            took.as_secs_f64()
        ));
    }
    let cps = run.of_role(Role::ControlPlane);
    let init_name = run.m.init_node().name.clone();
    let wants: Vec<&str> = run
        .guests
        .iter()
        .map(|g| {
            if g.spec.name == init_name {
                "initialised"
            } else {
                "joined"
            }
        })
        .collect();
    let deadline = run.deadline();
    let done = wait_all_facts(
        &mut run.c,
        &cps,
        "first boot (kubeadm init or join) finished",
        t0,
        deadline,
        |i, f| f.firstboot == wants[i] || f.firstboot.starts_with("failed"),
    )?;
    for (&i, took) in cps.iter().zip(&done) {
        let state = run.c.guests[i]
            .facts()
            .map(|f| f.firstboot)
            .unwrap_or_default();
        run.r.line(format!(
            "  {}: first boot {state} {:.0}s after start",
            run.guests[i].spec.name,
            took.as_secs_f64()
        ));
    }
    Ok(())
}

/// Scenario 1: First-boot order, from the `kubeadm` test double's records.
fn first_boot_order(run: &mut Run) -> Result<()> {
    run.r
        .line("1. first-boot order (kubeadm TEST DOUBLE's records)".into());
    for i in run.of_role(Role::ControlPlane) {
        let f = run.c.guests[i].facts().unwrap_or_default();
        let p = &run.guests[i];
        let init = p.spec.name == run.m.init_node().name;
        let verdicts = judge_first_boot(&f, init, p.config_sha.as_deref());
        run.r.verdicts(&verdicts);
    }
    Ok(())
}

/// Scenario 2: The director lists every control plane; the client meets them all.
fn lvs_dr(run: &mut Run) -> Result<()> {
    run.r.line("2. LVS-DR through the director".into());
    let (vip, port, lb) = (run.vip.clone(), run.port, &run.m.loadbalancer);
    let mut all_rs: Vec<String> = run
        .of_role(Role::ControlPlane)
        .into_iter()
        .map(|i| format!("{}:{port}", run.guests[i].address))
        .collect();
    all_rs.sort();
    let t = Instant::now();
    let deadline = run.deadline();
    let directors = run.of_role(Role::Director);
    let active = wait_active_director(&mut run.c, &directors, &vip, deadline)?;
    run.active = Some(active);
    let deadline = run.deadline();
    wait_facts(
        &mut run.c,
        active,
        "ipvsadm lists every control plane",
        deadline,
        |f| listed(f, &vip, port) == all_rs,
    )?;
    run.r.line(format!(
        "  {} holds the VIP; all real servers listed {:.1}s after every first boot finished",
        run.c.guests[active].spec.name,
        t.elapsed().as_secs_f64()
    ));
    let f = run.c.guests[active].facts().unwrap_or_default();
    let (sched, rs) = ipvs_service(&f.ipvs, &vip, port).unwrap_or_default();
    run.r.check(
        sched == lb.lvs_scheduler,
        format!(
            "ipvsadm -L -n: {vip}:{port} scheduler {sched:?} (manifest: {})",
            lb.lvs_scheduler
        ),
    );
    for s in &rs {
        run.r.check(
            s.forward == "Route" && s.weight == lb.weight,
            format!("  -> {} {} weight {}", s.addr, s.forward, s.weight),
        );
    }
    let names = run.control_plane_names();
    run.check_vip_answers(
        3 * names.len() + 3,
        &format!("client {CLIENT_CIDR} -> {vip}:{port}, answered by"),
        |seen| names.iter().all(|n| seen.contains(n)),
    );
    Ok(())
}

/// Scenario 3: Power off the init node: keepalived removes it; the VIP keeps answering.
fn init_node_powered_off(run: &mut Run) -> Result<()> {
    let (vip, port, active) = (run.vip.clone(), run.port, run.active());
    let lb = run.m.loadbalancer.clone();
    let victim = run.victim()?;
    let window = removal_window_secs(
        lb.delay_loop.into(),
        lb.connect_timeout.into(),
        lb.retry.into(),
        lb.delay_before_retry.into(),
    );
    // keepalived also logged removals while the cluster formed: only
    // removal lines that appear after the power-off count.
    let removals = |f: &Facts| {
        f.klog
            .iter()
            .filter(|l| l.contains("Removing service") && l.contains(&format!("[{}]", victim.ip)))
            .count()
    };
    let removals_before = run.c.guests[active]
        .facts()
        .map(|f| removals(&f))
        .unwrap_or(0);
    run.r.line(format!("3. power off {}", victim.name));
    let PoweredOff {
        took,
        in_time,
        shutdown,
    } = run.power_off_until(
        victim.index,
        Duration::from_secs(120),
        active,
        window,
        "keepalived removes the powered-off node",
        |f| !listed(f, &vip, port).contains(&victim.rs),
    )?;
    run.r.timed(
        in_time,
        &format!("{} removed from {vip}:{port} after system_powerdown", victim.rs),
        took,
        window,
        &format!(
            "delay_loop {} + connect_timeout {} x (retry {} + 1) + delay_before_retry {} x retry; counted from the powerdown request, so the {:.1}s shutdown and {}s of fact sampling are allowed on top",
            lb.delay_loop, lb.connect_timeout, lb.retry, lb.delay_before_retry, shutdown.as_secs_f64(), FACT_PERIOD * 2
        ),
    );
    let f = run.c.guests[active].facts().unwrap_or_default();
    run.r.check(
        removals(&f) > removals_before,
        format!(
            "keepalived logged the removal of {} after the power-off ({} removal line(s) before, {} after)",
            victim.ip,
            removals_before,
            removals(&f)
        ),
    );
    let others: Vec<String> = run
        .control_plane_names()
        .into_iter()
        .filter(|n| *n != victim.name)
        .collect();
    run.check_vip_answers(3 * others.len(), "VIP still answers, from", |seen| {
        others.iter().all(|n| seen.contains(n)) && !seen.contains(&victim.name)
    });
    Ok(())
}

/// Scenario 4: Power it on again: re-added, answers again. Both moments are seen
/// from the client on the segment, on the host's clock: when the node's
/// own listener first answers (probed at its real address), and when a
/// connection to the VIP is first answered by it.
fn init_node_powered_on_again(run: &mut Run) -> Result<()> {
    let (vip, port, active) = (run.vip.clone(), run.port, run.active());
    let lb = run.m.loadbalancer.clone();
    let victim = run.victim()?;
    run.r.line(format!("4. power {} on again", victim.name));
    run.c.restart(victim.index)?;
    let listener_up = poll_probe(
        run.c.ns(),
        &victim.ip,
        port,
        // A whole boot again, beside four busy guests: the first one took
        // over 11 minutes in CI, so it gets the boot timeout, not what is
        // left of it.
        run.boot_timeout,
        |a| a == Some(victim.name.as_str()),
    )
    .with_context(|| {
        format!(
            "{}'s stand-in API server (TEST DOUBLE) did not answer at {} after power-on",
            victim.name, victim.rs
        )
    })?;
    run.r.line(format!(
        "  {}: booted again; its stand-in API server answered at {} {:.1}s after power-on",
        victim.name,
        victim.rs,
        listener_up.as_secs_f64()
    ));
    let readd = readd_window_secs(lb.delay_loop.into(), lb.connect_timeout.into());
    // Timed on the director's own table, which is what keepalived's window
    // is about; it reports every FACT_PERIOD, so two reports are allowed on
    // top. Timing the VIP until it answered from the node also timed the
    // client's connections (wrr sends one in three there, and each took
    // seconds beside four other emulated guests: 46 s against 16).
    let allowed = readd + FACT_PERIOD * 2;
    let relisted = wait_facts(
        &mut run.c,
        active,
        "ipvsadm lists the node again",
        Duration::from_secs(allowed + 60),
        |f| listed(f, &vip, port).contains(&victim.rs),
    );
    let took = relisted
        .as_ref()
        .map_or(Duration::from_secs(allowed + 60), |d| *d);
    run.r.timed(
        relisted.is_ok() && took <= Duration::from_secs(allowed),
        &format!(
            "{} re-added to {vip}:{port} on {}",
            victim.rs, run.c.guests[active].spec.name
        ),
        took,
        allowed,
        &format!(
            "delay_loop {} + connect_timeout {}, and {}s of fact sampling; counted from the node's listener answering on the segment",
            lb.delay_loop,
            lb.connect_timeout,
            FACT_PERIOD * 2
        ),
    );
    let n = 3 * run.control_plane_names().len() + 3;
    run.check_vip_answers(n, "VIP answered by", |seen| seen.contains(&victim.name));
    Ok(())
}

/// Scenario 5: Two directors: stop the MASTER; the BACKUP takes the VIP while a
/// client keeps connecting.
fn master_director_stopped(run: &mut Run) -> Result<()> {
    let directors = run.of_role(Role::Director);
    if directors.len() < 2 {
        run.r.line("5. two directors: not run (this manifest has one director; use tests/fixtures/two-directors.toml)".into());
        return Ok(());
    }
    let (vip, port, master) = (run.vip.clone(), run.port, run.active());
    let lb = run.m.loadbalancer.clone();
    let backup_idx = *directors
        .iter()
        .find(|&&d| d != master)
        .expect("two directors");
    let backup_node = run
        .m
        .node(&run.c.guests[backup_idx].spec.name)
        .expect("a manifest node");
    let window = vrrp_takeover_window_secs(lb.advert_int.into(), backup_node.priority.into());
    run.r.line(format!(
        "5. stop the MASTER director {}",
        run.c.guests[master].spec.name
    ));
    let watch = VipWatch::start(run.c.ns(), &vip, port);
    std::thread::sleep(WATCH_LEAD);
    let PoweredOff {
        took,
        in_time,
        shutdown,
    } = run.power_off_until(
        master,
        Duration::from_secs(60),
        backup_idx,
        window,
        "the BACKUP takes the VIP",
        |f| holds_vip(f, &vip),
    )?;
    run.r.timed(
        in_time,
        &format!("VIP moved to {}", run.c.guests[backup_idx].spec.name),
        took,
        window,
        &format!("3 x advert_int {} + skew (256 - priority {})/256 x advert_int; the {:.1}s shutdown and {}s of fact sampling allowed on top", lb.advert_int, backup_node.priority, shutdown.as_secs_f64(), FACT_PERIOD * 2),
    );
    let w = watch.finish();
    run.r.timed(
        w.outage <= Duration::from_secs(window) + w.resolution,
        &format!(
            "longest stretch with the VIP not accepting connections, seen by a client making {} TCP connections during the failover, {} unanswered{} (attempts of at most {WATCH_TIMEOUT_SECS}s; resolution {:.1}s)",
            w.attempts,
            w.unanswered,
            w.first_unanswered_at.map_or(String::new(), |t| format!(
                ", the first {:.1}s after the power button",
                t.as_secs_f64() - WATCH_LEAD.as_secs_f64()
            )),
            w.resolution.as_secs_f64()
        ),
        w.outage,
        window,
        "the takeover window, plus the resolution: a clean shutdown hands the VIP over at once (keepalived sends priority 0), a crash within it",
    );
    let names = run.control_plane_names();
    run.check_vip_answers(
        3 * names.len(),
        "VIP answered through the BACKUP by",
        |seen| names.iter().all(|n| seen.contains(n)),
    );
    Ok(())
}
