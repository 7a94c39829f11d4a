//! What the guest reports (qemu/guest-check.sh) and how it is judged
//! against the manifest and `<node>.json`. Pure: text in, verdict out.

use std::collections::BTreeMap;

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
    pub target: String,
}

/// Finds the report in a serial log. Kernel messages may interleave with
/// it on the console, so only lines with a known keyword are read.
pub fn parse_report(log: &str) -> Option<GuestReport> {
    let start = log.rfind("HABUILD-BEGIN")?;
    let end = start + log[start..].find("HABUILD-END")?;
    let mut r = GuestReport::default();
    for line in log[start..end].lines().map(strip_console_prefix) {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "state" => r.state = rest.trim().to_string(),
            "failed" => r.failed_units.push(rest.trim().to_string()),
            "hostname" => r.hostname = rest.trim().to_string(),
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
            "sha256" => {
                if let Some((sha, path)) = rest.split_once("  ") {
                    r.files.insert(path.trim().to_string(), sha.to_string());
                }
            }
            _ => {}
        }
    }
    Some(r)
}

/// journald forwards the check's output to the console as
/// `[  77.49] sh[463]: state running`: keep what follows the `ident[pid]: `.
fn strip_console_prefix(line: &str) -> &str {
    let line = line.trim_end_matches('\r');
    match line.find("]: ") {
        Some(i) => &line[i + 3..],
        None => line,
    }
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
}

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
    check(r.state == "running", format!("system state {:?}", r.state));
    check(
        r.failed_units.is_empty(),
        format!(
            "failed units: {}",
            if r.failed_units.is_empty() {
                "none".into()
            } else {
                r.failed_units.join(", ")
            }
        ),
    );
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

    const LOG: &str = "[   80.1] random kernel line\r\nHABUILD-BEGIN\r\nstate running\r\nhostname master-arm-1\r\nunit realServer.service disabled inactive\r\n[   81.0] audit: something\r\nunit habuild-growroot.service enabled inactive\r\naddr lan0 10.10.197.98/24\r\nsha256 abc  /etc/hostname\r\ntarget active\r\nHABUILD-END\r\n";

    fn expect() -> Expectations {
        Expectations {
            hostname: "master-arm-1".into(),
            unit_enablement: vec![("realServer.service".into(), "disabled".into())],
            unit_activity: vec![("habuild-growroot.service".into(), "inactive".into())],
            addresses: vec![("lan0".into(), "10.10.197.98/24".into())],
            files: vec![("/etc/hostname".into(), "abc".into())],
        }
    }

    #[test]
    fn parses_through_interleaved_kernel_lines() {
        let r = parse_report(LOG).unwrap();
        assert_eq!(r.state, "running");
        assert_eq!(
            r.units["realServer.service"],
            ("disabled".into(), "inactive".into())
        );
        assert_eq!(r.files["/etc/hostname"], "abc");
        assert!(parse_report("no report here").is_none());
        assert!(
            parse_report("HABUILD-BEGIN\nstate running\n").is_none(),
            "an unfinished report is no report"
        );
    }

    #[test]
    fn reads_lines_forwarded_by_journald() {
        let log = "[   77.49] sh[463]: HABUILD-BEGIN\r\n[   77.50] sh[463]: state running\r\n[   78.00] sh[463]: sha256 abc  /etc/hostname\r\n[   92.60] sh[463]: HABUILD-END\r\n";
        let r = parse_report(log).unwrap();
        assert_eq!(r.state, "running");
        assert_eq!(r.files["/etc/hostname"], "abc");
    }

    #[test]
    fn passes_when_everything_holds() {
        let checks = judge(&parse_report(LOG).unwrap(), &expect());
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    }

    #[test]
    fn fails_on_degraded_system_changed_file_or_enabled_realserver() {
        let bad = LOG
            .replace("state running", "state degraded\r\nfailed foo.service")
            .replace("sha256 abc", "sha256 abd")
            .replace("realServer.service disabled", "realServer.service enabled")
            .replace(
                "growroot.service enabled inactive",
                "growroot.service enabled failed",
            )
            .replace("addr lan0 10.10.197.98/24", "addr eth0 10.10.197.98/24");
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
    }
}
