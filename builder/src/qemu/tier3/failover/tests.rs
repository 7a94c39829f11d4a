use super::*;
use crate::status::tests::{healthy, seed};
use crate::status::EtcdMember;

/// The seed's cluster seen with master-arm-1 powered off and the others
/// carrying on, as a quorate cluster looks.
fn one_down(m: &Manifest) -> Observed {
    let mut o = healthy(m);
    let down = &mut o.control_planes[0];
    assert_eq!(down.name, "master-arm-1");
    down.readyz = Seen::Failed("connection refused".into());
    down.etcd_health = Seen::Failed("connection refused".into());
    o.behind_vip.remove("master-arm-1");
    o.behind_vip.insert("master-arm-2".into(), 6);
    o.behind_vip.insert("master-arm-3".into(), 6);
    o
}

fn all_ok(v: &[(bool, String)]) -> bool {
    v.iter().all(|(ok, _)| *ok)
}

#[test]
fn a_quorate_cluster_with_the_init_node_down_passes() {
    let m = seed();
    let v = judge_degraded(&m, &one_down(&m), "master-arm-1");
    assert!(all_ok(&v), "{v:?}");
    assert!(v.iter().any(|(_, w)| w.contains("3 voting member(s)")));
}

#[test]
fn each_sign_of_a_broken_failover_fails_it() {
    let m = seed();
    type Spoil = fn(&mut Observed);
    let spoils: [(&str, Spoil); 6] = [
        ("VIP", |o| o.vip_readyz = Seen::Failed("timeout".into())),
        ("a survivor's API server", |o| {
            o.control_planes[1].readyz = Seen::Failed("503".into())
        }),
        ("a survivor's etcd", |o| {
            o.control_planes[2].etcd_health = Seen::Ok(false)
        }),
        ("a member removed", |o| {
            if let Seen::Ok(ms) = &mut o.etcd_members {
                ms.retain(|mb| mb.name != "master-arm-1");
            }
        }),
        ("a learner", |o| {
            o.etcd_members = Seen::Ok(vec![EtcdMember {
                name: "master-arm-2".into(),
                id: "1".into(),
                is_learner: true,
                client_urls: Vec::new(),
            }])
        }),
        ("the down node still behind the VIP", |o| {
            o.behind_vip.insert("master-arm-1".into(), 1);
        }),
    ];
    for (what, spoil) in spoils {
        let mut o = one_down(&m);
        spoil(&mut o);
        assert!(
            !all_ok(&judge_degraded(&m, &o, "master-arm-1")),
            "{what} went unnoticed"
        );
    }
    // Most connections through the VIP lost: not a failover that held.
    let mut o = one_down(&m);
    o.behind_vip.insert("master-arm-2".into(), 1);
    o.behind_vip.insert("master-arm-3".into(), 1);
    assert!(!all_ok(&judge_degraded(&m, &o, "master-arm-1")));
}

#[test]
fn the_failover_needs_three_control_planes_and_a_director() {
    let mut m = seed();
    assert!(can_fail_over(&m).is_ok());
    let third = m
        .nodes
        .iter()
        .rposition(|n| n.role == Role::ControlPlane)
        .unwrap();
    m.nodes.remove(third);
    assert!(can_fail_over(&m).unwrap_err().contains("quorum"));
    let mut m = seed();
    m.nodes.retain(|n| n.role != Role::Director);
    assert_eq!(can_fail_over(&m).unwrap_err(), "no director");
}

#[test]
fn the_vip_moves_only_between_two_directors() {
    let mut m = seed();
    assert_eq!(m.directors().count(), 1);
    assert!(can_move_vip(&m).unwrap_err().contains("1 director(s)"));
    let mut backup = m.directors().next().unwrap().clone();
    backup.name = "master-x86-2".into();
    m.nodes.push(backup);
    assert!(can_move_vip(&m).is_ok());
    // The director failover does not need three control planes.
    m.nodes
        .retain(|n| n.role == Role::Director || n.name == "master-arm-1");
    assert!(can_move_vip(&m).is_ok());
    assert!(can_fail_over(&m).is_err());
}

#[test]
fn a_failover_is_timed_only_from_blocks_at_its_sampling_period() {
    let at = |p| Facts {
        fact_period: p,
        ..Facts::default()
    };
    assert!(sampled_fast(&at(Some(5))));
    assert!(!sampled_fast(&at(Some(15))), "a director still forming");
    assert!(!sampled_fast(&at(None)), "a block that does not say");
}
