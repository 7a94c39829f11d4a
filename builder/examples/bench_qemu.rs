//! QEMU benchmark (not a test): boot time of every image under tier 1 and
//! the timings of tier 2's scenarios, from images `habuild image --all`
//! already built. Prints a Markdown table for benchmarks/README.md.
//!
//!     cargo run --release --example bench_qemu -- MANIFEST OUT_DIR
//!
//! OUT_DIR is what `habuild image --out` was given (images in
//! OUT_DIR/<cluster>/). Needs root (tier 2 makes a network namespace).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use habuild::config::Project;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 3, "usage: bench_qemu MANIFEST OUT_DIR");
    let project = Project::locate()?;
    let cluster = project.manifest(Some(Path::new(&args[1])))?;
    let out_dir = Path::new(&args[2]).join(&cluster.name);
    let load = |when: &str| {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "load average {when}: {}",
            l.split_whitespace().next().unwrap_or("?")
        );
    };
    load("at the start");

    println!("\n| image | machine | kernel | systemd | multi-user + check | verdict |");
    println!("|---|---|---:|---:|---:|---|");
    let all = Instant::now();
    for node in &cluster.nodes {
        let board = project.board(&node.board)?;
        let r = habuild::qemu::tier1::run(&out_dir, &cluster, node, &board, &project.root)?;
        let at = |i: usize| {
            r.reached
                .get(i)
                .map_or("-".to_string(), |(_, s)| format!("{s:.1} s"))
        };
        let machine = board.qemu.as_ref().map_or("", |q| q.machine.as_str());
        println!(
            "| {} | {machine} | {} | {} | {} | {} |",
            node.name,
            at(0),
            at(1),
            at(2),
            if r.passed { "PASS" } else { "FAIL" }
        );
    }
    println!("\ntier 1, all images: {:.0} s", all.elapsed().as_secs_f64());
    load("after tier 1");

    let t2 = habuild::qemu::tier2::run(&project, &cluster, &out_dir, Duration::from_secs(600))?;
    println!("\ntier 2 ({}):\n", if t2.passed { "PASS" } else { "FAIL" });
    for line in t2.text.lines().filter(|l| {
        l.contains("took ")
            || l.contains("after start")
            || l.contains("total")
            || l.contains("answered at")
    }) {
        println!("    {}", line.trim());
    }
    load("at the end");
    Ok(())
}
