//! The README's quick start, as a newcomer runs it: the main job's line
//! (an SSH key if there is none, `doctor --install`, `secrets init`, the
//! first control plane's image without Kubernetes), then the lines the
//! README shows next (the boot test, a flash to a file, verify), each read
//! from README.md and run in that order from a directory outside the
//! checkout, with the data the binary carries: nothing here knows the
//! commands except the README. `cargo run --release --` is the binary
//! under test. Bootstraps the seed's arm64 base on a cold cache (about 10
//! minutes under emulation: 692 s for the whole test on 2026-12-05, 206 s
//! with the base cached), then one tier-1 boot.

mod common;

use std::path::Path;
use std::process::Command;

use common::{repo_root, test_cache, Run};

const CARGO_RUN: &str = "cargo run --release -- ";

/// The quick start's main line, split at `&&`, and the lines after the
/// `quickstart-next` marker.
fn readme_steps() -> (Vec<String>, Vec<String>) {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("a quick start section");
    let section = &readme[start..];
    let main = section
        .lines()
        .find(|l| l.starts_with("    ") && l.contains(&format!("{CARGO_RUN}image")))
        .expect("the quick start's image line");
    let next_at = section
        .find("<!-- quickstart-next")
        .expect("the quickstart-next marker");
    let next: Vec<String> = section[next_at..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .collect();
    assert!(
        !next.is_empty(),
        "no lines after the quickstart-next marker"
    );
    (main.trim().split(" && ").map(String::from).collect(), next)
}

fn run_step(step: &str, cwd: &Path, home: &Path, xdg_cache: &Path) -> Run {
    let mut cmd = if let Some(args) = step.strip_prefix(CARGO_RUN) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_habuild"));
        c.args(args.split_whitespace().map(|w| match w.strip_prefix("~/") {
            Some(rest) => home.join(rest).to_string_lossy().into_owned(),
            None => w.to_string(),
        }));
        c
    } else {
        // The line's own shell part (making an SSH key when there is none).
        let mut c = Command::new("bash");
        c.args(["-c", step]);
        c
    };
    common::output_of(
        cmd.current_dir(cwd)
            .env("HOME", home)
            .env("XDG_CACHE_HOME", xdg_cache)
            .env_remove("HABUILD_ROOT"),
        &format!("$ {step}"),
    )
}

#[test]
fn the_readme_quick_start_holds_end_to_end() {
    let (main, next) = readme_steps();
    let t = tempfile::tempdir().unwrap();
    let (cwd, home) = (t.path().join("work"), t.path().join("home"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    // Bases persist between local runs; CI starts cold anyway.
    let xdg_cache = test_cache().join("quickstart-xdg");
    for step in main.iter().chain(&next) {
        let run = run_step(step, &cwd, &home, &xdg_cache);
        assert!(
            run.status.success(),
            "README step failed: {step}\n{}",
            run.stderr
        );
    }
    // What the steps claim, checked apart from habuild's own word.
    assert!(home.join(".ssh/id_ed25519.pub").is_file());
    let out = cwd.join("out/seed");
    let img = out.join("master-arm-1.img");
    assert!(img.is_file() && cwd.join("seed.secrets.toml").is_file());
    let report = std::fs::read_to_string(out.join("test/master-arm-1-tier1.txt")).unwrap();
    assert!(
        report.contains("[ok] first boot skipped by its unit's condition")
            && report.contains("[ok] system state \"running\""),
        "the first boot was skipped as documented:\n{report}"
    );
    let node_json = std::fs::read_to_string(out.join("master-arm-1.json")).unwrap();
    assert!(
        node_json.contains("\"packages_included\": false"),
        "{node_json}"
    );
    // cmp, not habuild: the written file holds the image byte for byte.
    let cmp = Command::new("cmp")
        .arg(&img)
        .arg(cwd.join("card.img"))
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}
