//! Runs a QEMU guest and follows its serial console through named stages,
//! each with its own timeout; the full log is kept on disk. A stage that
//! hangs stops the guest with a message naming the stage and the log tail.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::CommandExt;

/// A point in the boot, recognised by a console line containing `marker`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub marker: &'static str,
    /// Time allowed from the previous stage's end.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct ConsoleRun {
    pub log: String,
    /// (stage, seconds since QEMU started) for each stage reached.
    pub reached: Vec<(&'static str, f64)>,
}

/// Runs `cmd` (whose stdout must be the guest's serial console) until every
/// stage's marker appeared, then stops the guest.
pub fn run_stages(mut cmd: Command, stages: &[Stage], log_path: &Path) -> Result<ConsoleRun> {
    let shown = cmd.display();
    log::debug!("running: {shown}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        crate::util::children::spawn(&mut cmd).with_context(|| format!("starting `{shown}`"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut log_file = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    // `log` is decoded read by read, for the stage markers (ASCII) only; the
    // log returned is `raw` decoded whole, so that a character split between
    // two reads does not break the seal of the block it is in.
    let mut log = String::new();
    let mut raw = Vec::new();
    let mut reached = Vec::new();
    let mut stage_start = Instant::now();
    let mut scanned = 0;
    for stage in stages {
        loop {
            if let Some(pos) = log[scanned..].find(stage.marker) {
                scanned += pos + stage.marker.len();
                reached.push((stage.name, started.elapsed().as_secs_f64()));
                stage_start = Instant::now();
                break;
            }
            let left = stage.timeout.saturating_sub(stage_start.elapsed());
            match rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(chunk) => {
                    log_file
                        .write_all(&chunk)
                        .with_context(|| format!("writing {}", log_path.display()))?;
                    log.push_str(&String::from_utf8_lossy(&chunk));
                    raw.extend_from_slice(&chunk);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if stage_start.elapsed() < stage.timeout => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    crate::util::children::reaped(child.id());
                    let qemu_err = err_thread.join().unwrap_or_default();
                    let why = if matches!(e, mpsc::RecvTimeoutError::Disconnected) {
                        "QEMU exited"
                    } else {
                        "timed out"
                    };
                    bail!(
                        "stage {:?} did not finish ({why} after {:.0}s; allowed {}s); full log: {}\n--- last console lines ---\n{}{}",
                        stage.name,
                        stage_start.elapsed().as_secs_f64(),
                        stage.timeout.as_secs(),
                        log_path.display(),
                        tail(&log, 25),
                        if qemu_err.trim().is_empty() { String::new() } else { format!("\n--- qemu stderr ---\n{}", tail(&qemu_err, 10)) }
                    );
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    crate::util::children::reaped(child.id());
    // Drain what arrived before the kill, so the log on disk is complete.
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
        let _ = log_file.write_all(&chunk);
        raw.extend_from_slice(&chunk);
    }
    Ok(ConsoleRun {
        log: String::from_utf8_lossy(&raw).into_owned(),
        reached,
    })
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_two_reads_is_kept_whole_in_the_log() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        // The arrow's three bytes in two writes, a pause between them.
        cmd.args([
            "-c",
            "printf 'Booting Linux a \\342'; sleep 0.3; printf '\\206\\222 b\\nWelcome\\n'; sleep 30",
        ]);
        let stages = [Stage {
            name: "userspace",
            marker: "Welcome",
            timeout: Duration::from_secs(5),
        }];
        let run = run_stages(cmd, &stages, &t.path().join("a.log")).unwrap();
        assert!(run.log.contains("a \u{2192} b"), "{:?}", run.log);
    }

    #[test]
    fn stages_in_order_and_hang_names_stage() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'Booting Linux'; sleep 0.2; echo 'Welcome'; sleep 30",
        ]);
        let stages = [
            Stage {
                name: "kernel",
                marker: "Booting Linux",
                timeout: Duration::from_secs(5),
            },
            Stage {
                name: "userspace",
                marker: "Welcome",
                timeout: Duration::from_secs(5),
            },
        ];
        let run = run_stages(cmd, &stages, &t.path().join("a.log")).unwrap();
        assert_eq!(
            run.reached.iter().map(|r| r.0).collect::<Vec<_>>(),
            ["kernel", "userspace"]
        );
        assert!(std::fs::read_to_string(t.path().join("a.log"))
            .unwrap()
            .contains("Welcome"));

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'Booting Linux'; echo stuck here; sleep 30"]);
        let stages = [
            stages[0].clone(),
            Stage {
                name: "check",
                marker: "HABUILD-END",
                timeout: Duration::from_secs(1),
            },
        ];
        let err = run_stages(cmd, &stages, &t.path().join("b.log"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stage \"check\"") && err.contains("stuck here"),
            "{err}"
        );
    }
}
