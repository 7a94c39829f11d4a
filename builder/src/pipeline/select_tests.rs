//! Which nodes `habuild image` builds, and the usage errors (exit status 2)
//! for a node or board that is not there, each listing what is.

use super::{check_board, select_nodes, Selection};
use crate::config::{Project, UsageError};
use crate::test_support::{repo_root, SEED};

fn seed() -> crate::config::Cluster {
    let root = repo_root();
    Project::at(&root)
        .unwrap()
        .manifest(Some(&root.join(SEED)))
        .unwrap()
}

fn usage(e: anyhow::Error) -> String {
    e.downcast_ref::<UsageError>()
        .unwrap_or_else(|| panic!("not a usage error: {e:#}"))
        .to_string()
}

#[test]
fn a_bad_board_lists_the_known_boards() {
    let known = vec!["amd64".to_string(), "rpi4".to_string()];
    assert!(check_board("rpi4", &known).is_ok());
    let e = check_board("rpi5", &known).unwrap_err().to_string();
    assert!(e.contains("\"rpi5\""), "{e}");
    assert!(e.contains("known boards: amd64, rpi4"), "{e}");
}

#[test]
fn a_bad_node_lists_the_manifests_nodes() {
    let c = seed();
    let e = usage(select_nodes(&c, &Selection::Node("master-arm-9".into()), None).unwrap_err());
    assert!(e.contains("\"master-arm-9\""), "{e}");
    for n in &c.nodes {
        assert!(e.contains(&format!("{} ({})", n.name, n.board)), "{e}");
    }
}

#[test]
fn selections() {
    let c = seed();
    let first = select_nodes(&c, &Selection::FirstOnBoard("rpi4".into()), None).unwrap();
    assert_eq!(first[0].name, "master-arm-1");
    assert_eq!(
        select_nodes(&c, &Selection::All, None).unwrap().len(),
        c.nodes.len()
    );
    let e = usage(
        select_nodes(&c, &Selection::Node("master-arm-1".into()), Some("amd64")).unwrap_err(),
    );
    assert!(e.contains("on board rpi4, not amd64"), "{e}");
}
