//! What the guest reports (qemu/guest-check.sh) and how it is judged
//! against the manifest and `<node>.json`. Pure: text in, verdict out.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::qemu::sealed::sealed_blocks;

/// Facts printed by the guest between HABUILD-BEGIN and HABUILD-END.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    pub state: String,
    pub failed_units: Vec<String>,
    pub hostname: String,
    /// unit → (is-enabled, is-active)
    pub units: BTreeMap<String, (String, String)>,
    /// path → sha256
    pub files: BTreeMap<String, String>,
    /// (interface, address/prefix) of every IPv4 address
    pub addresses: Vec<(String, String)>,
    /// The root partition and its filesystem as the guest sees them.
    pub root: Option<RootFs>,
    pub target: String,
    /// /var/lib/habuild/firstboot.status, on control planes.
    pub firstboot: Option<String>,
    /// Whether the first-boot unit's conditions held when it was last
    /// considered (`ConditionResult`: "yes" or "no"), on control planes.
    pub firstboot_condition: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RootFs {
    pub partition_bytes: u64,
    pub fs_bytes: u64,
    /// ext4 features (dumpe2fs), e.g. `meta_bg` once growth converted to it.
    pub features: Vec<String>,
}

/// Reads the first intact copy of the report in a serial log (the guest
/// prints it twice, sealed; see qemu/sealed.rs).
pub fn parse_report(log: &str) -> Result<GuestReport> {
    let copies = sealed_blocks(log, "HABUILD-BEGIN", "HABUILD-END");
    let Some(copy) = copies.iter().find(|c| c.intact) else {
        if copies.is_empty() {
            bail!("the guest printed no complete report");
        }
        bail!(
            "all {} copies of the guest's report were garbled on the serial console (their lines do not hash to their seal)",
            copies.len()
        );
    };
    let mut r = GuestReport::default();
    for line in &copy.lines {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "state" => r.state = rest.trim().to_string(),
            "failed" => r.failed_units.push(rest.trim().to_string()),
            "hostname" => r.hostname = rest.trim().to_string(),
            "firstboot" => r.firstboot = Some(rest.trim().to_string()),
            "firstboot_condition" => r.firstboot_condition = Some(rest.trim().to_string()),
            "target" => r.target = rest.trim().to_string(),
            "unit" => {
                let mut p = rest.split_whitespace();
                if let (Some(u), Some(en)) = (p.next(), p.next()) {
                    r.units.insert(
                        u.to_string(),
                        (en.to_string(), p.next().unwrap_or("").to_string()),
                    );
                }
            }
            "addr" => {
                let mut p = rest.split_whitespace();
                if let (Some(dev), Some(cidr)) = (p.next(), p.next()) {
                    r.addresses.push((dev.to_string(), cidr.to_string()));
                }
            }
            "rootfs" => {
                let n: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect();
                if let [partition_bytes, blocks, block_size] = n[..] {
                    let features = r.root.take().map(|f| f.features).unwrap_or_default();
                    r.root = Some(RootFs {
                        partition_bytes,
                        fs_bytes: blocks * block_size,
                        features,
                    });
                }
            }
            "rootfeatures" => {
                r.root.get_or_insert_with(RootFs::default).features =
                    rest.split_whitespace().map(String::from).collect();
            }
            "sha256" => {
                if let Some((sha, path)) = rest.split_once("  ") {
                    r.files.insert(path.trim().to_string(), sha.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// What the image is expected to show when it runs.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub hostname: String,
    /// unit → expected is-enabled value ("enabled", "disabled").
    pub unit_enablement: Vec<(String, String)>,
    /// unit → expected is-active value ("active").
    pub unit_activity: Vec<(String, String)>,
    /// (interface, address/prefix) the running system must have.
    pub addresses: Vec<(String, String)>,
    /// Files habuild rendered (path, sha256), from `<node>.json`.
    pub files: Vec<(String, String)>,
    /// The guest booted a disk larger than its image: the least size its
    /// root partition must have grown to at first boot.
    pub root_grown_to: Option<u64>,
    /// The first boot must have been skipped by its unit's condition (no
    /// kubeadm in the image), never run: no status file.
    pub firstboot_skipped: bool,
}

/// The most an ext4 may stay short of its partition after resize2fs: one
/// block group (128 MiB at 4 KiB blocks), which it drops when too small.
const ROOT_FS_SLACK: u64 = 128 << 20;

/// One line of evidence: what was checked and whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

pub fn judge(r: &GuestReport, e: &Expectations) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |ok: bool, what: String| checks.push(Check { ok, what });
    check(
        r.target == "active",
        format!("multi-user.target is {}", r.target),
    );
    // Nothing fails on purpose: an image without kubeadm skips its first
    // boot (firstboot_skipped) rather than failing it.
    check(
        r.state == "running",
        format!("system state {:?} (expected \"running\")", r.state),
    );
    let failed = if r.failed_units.is_empty() {
        "none".to_string()
    } else {
        r.failed_units.join(", ")
    };
    check(
        r.failed_units.is_empty(),
        format!("failed units: {failed} (expected none)"),
    );
    if e.firstboot_skipped {
        let condition = r.firstboot_condition.as_deref().unwrap_or("(not reported)");
        check(
            condition == "no" && r.firstboot.is_none(),
            format!(
                "first boot skipped by its unit's condition (no /usr/bin/kubeadm): ConditionResult {condition:?}, status {:?}",
                r.firstboot.as_deref().unwrap_or("(no status file)")
            ),
        );
    }
    check(
        r.hostname == e.hostname,
        format!("hostname {:?} (expected {:?})", r.hostname, e.hostname),
    );
    for (unit, want) in &e.unit_enablement {
        let got = r
            .units
            .get(unit)
            .map(|(en, _)| en.as_str())
            .unwrap_or("not-found");
        check(got == want, format!("{unit} is {got} (expected {want})"));
    }
    for (unit, want) in &e.unit_activity {
        let got = r
            .units
            .get(unit)
            .map(|(_, active)| active.as_str())
            .filter(|a| !a.is_empty())
            .unwrap_or("not-found");
        check(got == want, format!("{unit} is {got} (expected {want})"));
    }
    for (dev, cidr) in &e.addresses {
        let got: Vec<&str> = r
            .addresses
            .iter()
            .filter(|(d, _)| d == dev)
            .map(|(_, a)| a.as_str())
            .collect();
        check(
            got.contains(&cidr.as_str()),
            format!("{dev} has {cidr} (found {got:?})"),
        );
    }
    if let Some(least) = e.root_grown_to {
        match &r.root {
            Some(root) => {
                check(
                    root.partition_bytes >= least,
                    format!(
                        "root partition grew to {} bytes (expected at least {least})",
                        root.partition_bytes
                    ),
                );
                check(
                    root.fs_bytes + ROOT_FS_SLACK > root.partition_bytes
                        && root.fs_bytes <= root.partition_bytes,
                    format!(
                        "root ext4 fills its partition: {} of {} bytes (features: {})",
                        root.fs_bytes,
                        root.partition_bytes,
                        root.features.join(" ")
                    ),
                );
            }
            None => check(false, "the guest reported no root filesystem".into()),
        }
    }
    let mut matched = 0;
    for (path, sha) in &e.files {
        match r.files.get(path) {
            Some(s) if s == sha => matched += 1,
            Some(_) => check(false, format!("{path} differs from what habuild rendered")),
            None => check(false, format!("{path} is missing in the running system")),
        }
    }
    check(
        matched == e.files.len(),
        format!(
            "{matched}/{} rendered files present with their sha256",
            e.files.len()
        ),
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: [&str; 9] = [
        "state running",
        "rootfs 2146435072 524032 4096",
        "rootfeatures has_journal ext_attr dir_index filetype meta_bg extent",
        "hostname master-arm-1",
        "unit realServer.service disabled inactive",
        "unit habuild-growroot.service enabled inactive",
        "addr lan0 10.10.197.98/24",
        "sha256 abc  /etc/hostname",
        "target active",
    ];

    /// The report as guest-check.sh prints it, through journald, once.
    fn log_of(body: &[&str]) -> String {
        let seal = crate::qemu::sealed::seal_of(body);
        let mut lines = vec!["HABUILD-BEGIN 1".to_string()];
        lines.extend(body.iter().map(|l| l.to_string()));
        lines.push(format!("HABUILD-END 1 {seal}"));
        lines
            .iter()
            .map(|l| format!("[   77.49] sh[463]: {l}\r\n"))
            .collect()
    }

    fn expect() -> Expectations {
        Expectations {
            hostname: "master-arm-1".into(),
            unit_enablement: vec![("realServer.service".into(), "disabled".into())],
            unit_activity: vec![("habuild-growroot.service".into(), "inactive".into())],
            addresses: vec![("lan0".into(), "10.10.197.98/24".into())],
            files: vec![("/etc/hostname".into(), "abc".into())],
            root_grown_to: Some(2_000_000_000),
            firstboot_skipped: false,
        }
    }

    /// An image without kubeadm: its first boot must have been skipped by
    /// its unit's condition, never run, and the system must be running.
    #[test]
    fn a_first_boot_without_kubeadm_passes_only_when_skipped() {
        let mut e = expect();
        e.firstboot_skipped = true;
        let body = BODY.join("\n") + "\nfirstboot_condition no";
        let body: Vec<&str> = body.lines().collect();
        let checks = judge(&parse_report(&log_of(&body)).unwrap(), &e);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        // A first boot that ran (and failed), a condition that held, or no
        // report of it at all fails.
        for (from, to) in [
            (
                "state running",
                "state degraded\nfailed habuild-firstboot.service\nfirstboot failed: kubeadm is not installed",
            ),
            ("firstboot_condition no", "firstboot_condition yes"),
            ("firstboot_condition no", ""),
        ] {
            let bad = body.join("\n").replace(from, to);
            let bad: Vec<&str> = bad.lines().collect();
            let checks = judge(&parse_report(&log_of(&bad)).unwrap(), &e);
            assert!(checks.iter().any(|c| !c.ok), "{to}: {checks:?}");
        }
    }

    #[test]
    fn reads_the_sealed_report_and_refuses_a_garbled_one() {
        let r = parse_report(&log_of(&BODY)).unwrap();
        assert_eq!(r.state, "running");
        assert_eq!(
            r.units["realServer.service"],
            ("disabled".into(), "inactive".into())
        );
        assert_eq!(r.files["/etc/hostname"], "abc");
        let root = r.root.as_ref().unwrap();
        assert_eq!(
            (root.partition_bytes, root.fs_bytes),
            (2_146_435_072, 524_032 * 4096)
        );
        assert!(root.features.iter().any(|f| f == "meta_bg"));
        let err = parse_report("no report here").unwrap_err().to_string();
        assert!(err.contains("no complete report"), "{err}");
        let garbled = log_of(&BODY).replace("inactive\r\n", "inactive[  81.0] audit: x\r\n");
        let err = parse_report(&garbled).unwrap_err().to_string();
        assert!(err.contains("garbled"), "{err}");
    }

    #[test]
    fn passes_when_everything_holds() {
        let checks = judge(&parse_report(&log_of(&BODY)).unwrap(), &expect());
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    }

    #[test]
    fn fails_on_degraded_system_changed_file_or_enabled_realserver() {
        let body = BODY
            .join("\n")
            .replace("state running", "state degraded\nfailed foo.service")
            .replace("sha256 abc", "sha256 abd")
            .replace("realServer.service disabled", "realServer.service enabled")
            .replace(
                "growroot.service enabled inactive",
                "growroot.service enabled failed",
            )
            .replace("addr lan0 10.10.197.98/24", "addr eth0 10.10.197.98/24")
            // growpart grew the partition, resize2fs did not grow the ext4
            .replace(" 524032 4096", " 249856 4096");
        let bad = log_of(&body.lines().collect::<Vec<_>>());
        let failed: Vec<String> = judge(&parse_report(&bad).unwrap(), &expect())
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.what)
            .collect();
        assert!(failed.iter().any(|w| w.contains("degraded")), "{failed:?}");
        assert!(
            failed.iter().any(|w| w.contains("foo.service")),
            "{failed:?}"
        );
        assert!(
            failed.iter().any(|w| w.contains("/etc/hostname differs")),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|w| w.contains("realServer.service is enabled")),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|w| w.contains("habuild-growroot.service is failed (expected inactive)")),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|w| w.contains("lan0 has 10.10.197.98/24")),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|w| w.contains("root ext4 fills its partition: 1023410176 of")),
            "{failed:?}"
        );
    }

    #[test]
    fn a_root_partition_that_did_not_grow_fails() {
        let body = BODY
            .join("\n")
            .replace("rootfs 2146435072 524032", "rootfs 1073741824 262144");
        let r = parse_report(&log_of(&body.lines().collect::<Vec<_>>())).unwrap();
        let failed: Vec<String> = judge(&r, &expect())
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.what)
            .collect();
        assert_eq!(
            failed,
            vec!["root partition grew to 1073741824 bytes (expected at least 2000000000)"]
        );
        let without: Vec<&str> = BODY
            .iter()
            .copied()
            .filter(|l| !l.starts_with("root"))
            .collect();
        let r = parse_report(&log_of(&without)).unwrap();
        assert!(judge(&r, &expect())
            .iter()
            .any(|c| !c.ok && c.what == "the guest reported no root filesystem"));
    }
}
