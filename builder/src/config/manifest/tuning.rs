//! Manifest sections for what slow hardware needs (SD cards, a Pi 4's
//! cores, and emulation even more so): kubeadm's v1beta4 timeouts, etcd's
//! heartbeat and election timeouts, and the kube-proxy and CoreDNS
//! add-ons. Each type is what the user writes, is validated here, and goes
//! into the template context unchanged (it derives `Serialize`): a new key
//! is a field with its default, its check, and its use in a template.

use serde::{Deserialize, Serialize};

use super::values::parse_ttl;

/// `[kubeadm]`: v1beta4 `timeouts` (Go durations like "10m", "90s").
/// kubeadm's defaults (4m, 4m, 1m, 2m, 5m, 5m) assume a fast disk; on SD
/// cards the first etcd write and the API server's first start take longer,
/// and a generous timeout only delays the report of a real failure.
/// `kubernetes_api_call` is as long as the health check: `kubeadm init`
/// (1.36) first waits for the API server by retrying the admin
/// ClusterRoleBinding for that long, before its control-plane health
/// check starts; at 5m a slow first start failed there (tier 3, run E).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeadmTuning {
    pub control_plane_component_health_check: String,
    pub kubelet_health_check: String,
    pub kubernetes_api_call: String,
    pub etcd_api_call: String,
    pub discovery: String,
    pub tls_bootstrap: String,
    /// kubeadm preflight checks to report as warnings instead of errors,
    /// by the names kubeadm prints (`[ERROR NumCPU]`), or "all". Empty by
    /// default: a Pi 4 passes them all. For boards kubeadm's floors refuse
    /// (a 1 GB Pi 4: `Mem`) and for emulation on few host cores (`NumCPU`).
    pub ignore_preflight_errors: Vec<String>,
}

impl KubeadmTuning {
    /// Whether kubeadm's preflight check `check` only warns (kubeadm
    /// compares the names without case).
    pub fn ignores_preflight(&self, check: &str) -> bool {
        self.ignore_preflight_errors
            .iter()
            .any(|c| c.eq_ignore_ascii_case(check) || c.eq_ignore_ascii_case("all"))
    }
}

impl Default for KubeadmTuning {
    fn default() -> Self {
        KubeadmTuning {
            control_plane_component_health_check: "15m".into(),
            kubelet_health_check: "15m".into(),
            kubernetes_api_call: "15m".into(),
            etcd_api_call: "5m".into(),
            discovery: "30m".into(),
            tls_bootstrap: "15m".into(),
            ignore_preflight_errors: Vec::new(),
        }
    }
}

/// `[etcd]`: etcd's `heartbeat-interval` and `election-timeout`, in ms.
/// etcd's 100/1000 suit SSDs on one network; a Pi's SD card stalls longer
/// than that under fsync, which costs needless leader elections. etcd's
/// tuning guide: the election timeout at least 10 heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdTuning {
    pub heartbeat_interval_ms: u32,
    pub election_timeout_ms: u32,
}

impl Default for EtcdTuning {
    fn default() -> Self {
        EtcdTuning {
            heartbeat_interval_ms: 250,
            election_timeout_ms: 2500,
        }
    }
}

/// `[addons]`: kubeadm's kube-proxy and CoreDNS add-ons, on by default
/// (without kube-proxy pods reach no Service IP; without CoreDNS there is
/// no cluster DNS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Addons {
    pub kube_proxy: bool,
    pub coredns: bool,
}

impl Default for Addons {
    fn default() -> Self {
        Addons {
            kube_proxy: true,
            coredns: true,
        }
    }
}

/// The three sections together, as the render context carries them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Tuning {
    pub kubeadm: KubeadmTuning,
    pub etcd: EtcdTuning,
    pub addons: Addons,
}

/// Every problem of the three sections, as (key, message).
pub fn validate(t: &Tuning) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let k = &t.kubeadm;
    for (key, value) in [
        (
            "control_plane_component_health_check",
            &k.control_plane_component_health_check,
        ),
        ("kubelet_health_check", &k.kubelet_health_check),
        ("kubernetes_api_call", &k.kubernetes_api_call),
        ("etcd_api_call", &k.etcd_api_call),
        ("discovery", &k.discovery),
        ("tls_bootstrap", &k.tls_bootstrap),
    ] {
        match parse_ttl(value) {
            Err(e) => problems.push((format!("kubeadm.{key}"), e)),
            Ok(0) => problems.push((format!("kubeadm.{key}"), "must be longer than 0s".into())),
            Ok(_) => {}
        }
    }
    problems.extend(
        preflight_problems(&k.ignore_preflight_errors)
            .into_iter()
            .map(|m| ("kubeadm.ignore_preflight_errors".to_string(), m)),
    );
    let e = &t.etcd;
    if !(10..=10_000).contains(&e.heartbeat_interval_ms) {
        problems.push((
            "etcd.heartbeat_interval_ms".into(),
            format!("{} is outside 10..=10000 ms", e.heartbeat_interval_ms),
        ));
    }
    if e.election_timeout_ms > 50_000 {
        // etcd refuses election timeouts above 50 s.
        problems.push((
            "etcd.election_timeout_ms".into(),
            format!(
                "{} is above etcd's limit of 50000 ms",
                e.election_timeout_ms
            ),
        ));
    } else if u64::from(e.election_timeout_ms) < 5 * u64::from(e.heartbeat_interval_ms) {
        problems.push((
            "etcd.election_timeout_ms".into(),
            format!(
                "{} ms is less than 5 heartbeats ({} ms each): etcd refuses it, and its tuning guide asks for 10",
                e.election_timeout_ms, e.heartbeat_interval_ms
            ),
        ));
    }
    problems
}

/// The names' problems: kubeadm's check names are letters, digits, `.`,
/// `_` and `-` (`Port-6443`, `FileAvailable--etc-kubernetes-manifests-etcd.yaml`);
/// kubeadm itself refuses "all" beside other names, and a name twice is a
/// mistake.
fn preflight_problems(names: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        let well_formed = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !well_formed {
            problems.push(format!(
                "{n:?} is not a kubeadm preflight check name (as kubeadm prints them, e.g. \"NumCPU\", \"Mem\", \"Port-6443\")"
            ));
        }
        let lower = n.to_ascii_lowercase();
        if seen.contains(&lower) {
            problems.push(format!("{n:?} is listed twice"));
        }
        seen.push(lower);
    }
    if seen.iter().any(|n| n == "all") && seen.len() > 1 {
        problems.push(
            "\"all\" ignores every check: list it alone (kubeadm refuses it beside other names)"
                .into(),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_generous() {
        assert!(validate(&Tuning::default()).is_empty());
        let d = KubeadmTuning::default();
        assert!(parse_ttl(&d.control_plane_component_health_check).unwrap() >= 4 * 60);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut t = Tuning::default();
        t.kubeadm.etcd_api_call = "5 minutes".into();
        t.kubeadm.discovery = "0s".into();
        t.etcd.election_timeout_ms = 400;
        let keys: Vec<String> = validate(&t).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "kubeadm.etcd_api_call",
                "kubeadm.discovery",
                "etcd.election_timeout_ms"
            ]
        );
        let mut t = Tuning::default();
        t.etcd.heartbeat_interval_ms = 5;
        assert_eq!(validate(&t)[0].0, "etcd.heartbeat_interval_ms");
    }

    #[test]
    fn preflight_names_are_checked_and_matched_without_case() {
        let mut t = Tuning::default();
        assert!(!t.kubeadm.ignores_preflight("NumCPU"));
        t.kubeadm.ignore_preflight_errors = vec!["numcpu".into(), "Port-6443".into()];
        assert!(validate(&t).is_empty(), "{:?}", validate(&t));
        assert!(t.kubeadm.ignores_preflight("NumCPU"));
        assert!(!t.kubeadm.ignores_preflight("Mem"));
        t.kubeadm.ignore_preflight_errors = vec!["all".into()];
        assert!(validate(&t).is_empty());
        assert!(t.kubeadm.ignores_preflight("Mem"));
        for bad in [
            vec!["NumCPU".to_string(), "NUMCPU".into()],
            vec!["all".into(), "Mem".into()],
            vec!["".into()],
            vec!["Num CPU".into()],
            vec!["--all".into()],
        ] {
            t.kubeadm.ignore_preflight_errors = bad.clone();
            let problems = validate(&t);
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            assert_eq!(problems[0].0, "kubeadm.ignore_preflight_errors");
        }
    }

    #[test]
    fn sections_parse_from_toml_with_defaults_for_what_is_left_out() {
        let k: KubeadmTuning = toml::from_str("discovery = \"1h\"").unwrap();
        assert_eq!(k.discovery, "1h");
        assert_eq!(k.etcd_api_call, KubeadmTuning::default().etcd_api_call);
        assert!(toml::from_str::<Addons>("kube_proxy = false\nfoo = 1").is_err());
    }
}
