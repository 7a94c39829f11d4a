//! Whether the directors' UEFI guests get KVM. Opening /dev/kvm is not
//! enough: on the nested-virtualisation build machines KVM opens, but OVMF
//! stops at once with "KVM internal error ... emulation failure" (a failed
//! MSR write with `-cpu host`). So habuild boots OVMF under KVM for a few
//! seconds, with no disk and no NIC, and uses KVM only when that works.
//! `HABUILD_QEMU_KVM=0` forces TCG, `=1` forces KVM when /dev/kvm opens.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long OVMF must run under KVM without failing.
const PROBE: Duration = Duration::from_secs(8);

/// KVM for UEFI (OVMF) guests, decided once per process.
pub fn kvm_for_uefi() -> bool {
    static DECISION: OnceLock<bool> = OnceLock::new();
    *DECISION.get_or_init(|| {
        let forced = std::env::var("HABUILD_QEMU_KVM").ok();
        let decision = match forced.as_deref() {
            Some("0") => false,
            Some("1") => kvm_opens(),
            _ => kvm_opens() && ovmf_runs_under_kvm(),
        };
        log::info!(
            "UEFI guests run under {}{}",
            if decision { "KVM" } else { "TCG" },
            if forced.is_some() {
                " (HABUILD_QEMU_KVM)"
            } else {
                ""
            }
        );
        decision
    })
}

/// /dev/kvm can be opened for reading and writing.
pub fn kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn ovmf_runs_under_kvm() -> bool {
    let Some(code) = crate::host::tools::ovmf_code() else {
        return false;
    };
    let mut probe = Command::new("qemu-system-x86_64");
    probe
        .args(["-accel", "kvm", "-M", "q35", "-m", "256", "-drive"])
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .args([
            "-display", "none", "-serial", "null", "-monitor", "none", "-nic", "none",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let Ok(mut child) = crate::util::children::spawn(&mut probe) else {
        return false;
    };
    let start = Instant::now();
    let exited_early = loop {
        match child.try_wait() {
            Ok(None) if start.elapsed() < PROBE => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => break false,
            _ => break true,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    crate::util::children::reaped(child.id());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let ok = !exited_early && !judged_failed(&stderr);
    log::debug!(
        "OVMF under KVM for {PROBE:?}: {}",
        if ok { "ran" } else { "failed" }
    );
    ok
}

/// What QEMU prints when KVM cannot run the guest.
fn judged_failed(stderr: &str) -> bool {
    stderr.contains("KVM internal error") || stderr.contains("failed to initialize kvm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_failures_are_recognised() {
        assert!(judged_failed(
            "warning: host doesn't support requested feature\nKVM internal error. Suberror: 1\nemulation failure\n"
        ));
        assert!(judged_failed(
            "qemu-system-x86_64: failed to initialize kvm: Permission denied"
        ));
        assert!(!judged_failed(
            "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n"
        ));
    }
}
