//! The closed virtual L2 segment of tier 2: a network namespace the test
//! creates, one bridge inside it, one tap per guest, and an address on the
//! bridge for the test's client. Nothing in it has a route out of the
//! namespace; dropping the guard deletes the namespace (and with it the
//! bridge and taps).

use std::process::Command;

use anyhow::{Context, Result};

use crate::util::CommandExt;

/// The bridge every tap is a port of.
pub const BRIDGE: &str = "br0";

/// A network namespace owned by this process, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    taps: Vec<String>,
    deleted: bool,
}

/// The namespace name of this process's tier-2 run.
pub fn name_for(pid: u32) -> String {
    format!("habuild-t2-{pid}")
}

/// The pid a tier-2 namespace was named for: `habuild-t2-PID`, with or
/// without the `-suffix` of the unit tests' namespaces.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("habuild-t2-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The tier-2 namespaces in `ip netns list`'s output whose run is gone
/// (pure): their owner pid is not `alive`. A run killed with SIGKILL (or a
/// machine's session ending under it) never reaches its guard's drop.
pub fn stale(list: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| owner_pid(name).is_some_and(|pid| !alive(pid)))
        .map(str::to_string)
        .collect()
}

/// Deletes the namespaces earlier runs left behind (see [`stale`]); a
/// namespace whose run still lives is left alone, whoever started it.
pub fn remove_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output_checked() else {
        return;
    };
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    for name in stale(&list, alive) {
        log::warn!("deleting the network namespace {name}: the run that made it is gone");
        if let Err(e) = Command::new("ip")
            .args(["netns", "delete", &name])
            .run_checked()
        {
            log::warn!("could not delete network namespace {name}: {e:#}");
        }
    }
}

/// The tap device name of guest `index` (at most 15 bytes, as IFNAMSIZ asks).
pub fn tap_name(index: usize) -> String {
    format!("t2tap{index}")
}

impl Netns {
    /// Creates this process's run namespace ([`name_for`] its pid) after
    /// removing the ones killed runs left behind.
    pub fn create_for_this_run(client_cidr: &str) -> Result<Self> {
        remove_stale();
        Self::create(&name_for(std::process::id()), client_cidr)
    }

    /// Creates the namespace, brings up its loopback and the bridge, and
    /// gives the bridge `client_cidr` (the test's client on the segment).
    pub fn create(name: &str, client_cidr: &str) -> Result<Self> {
        Command::new("ip")
            .args(["netns", "add", name])
            .run_checked()
            .with_context(|| format!("creating the network namespace {name}"))?;
        let ns = Netns {
            name: name.to_string(),
            taps: Vec::new(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        // No STP and no forwarding delay: the ports forward at once.
        ns.ip(&["link", "set", BRIDGE, "type", "bridge", "stp_state", "0"])?;
        ns.ip(&[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ns.ip(&["addr", "add", client_cidr, "dev", BRIDGE])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .run_checked()
            .with_context(|| format!("ip {} (in namespace {})", args.join(" "), self.name))
    }

    /// Adds a tap device as a port of the bridge and returns its name.
    pub fn add_tap(&mut self, index: usize) -> Result<String> {
        let tap = tap_name(index);
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip(&["link", "set", &tap, "up"])?;
        self.taps.push(tap.clone());
        Ok(tap)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Deletes the namespace now (also done on drop), reporting failure.
    pub fn delete(mut self) -> Result<()> {
        self.deleted = true;
        Command::new("ip")
            .args(["netns", "delete", &self.name])
            .run_checked()
            .with_context(|| format!("deleting the network namespace {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            if let Err(e) = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .run_checked()
            {
                eprintln!(
                    "warning: could not delete network namespace {}: {e:#}",
                    self.name
                );
            }
        }
    }
}

/// Whether this process may create network namespaces (root, `ip` present).
pub fn available() -> bool {
    let probe = name_for(std::process::id()) + "-probe";
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .run_checked()
        .is_ok();
    if made {
        let _ = Command::new("ip")
            .args(["netns", "delete", &probe])
            .run_checked();
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        assert!(tap_name(99).len() <= 15);
        assert_eq!(name_for(42), "habuild-t2-42");
    }

    #[test]
    fn only_namespaces_of_gone_runs_are_stale() {
        let list = "habuild-t2-100 (id: 3)\nhabuild-t2-200\nhabuild-t2-300-guard\n\
                    habuild-t2-x\nother-400\nhabuild-t2-500-unit (id: 1)\n";
        let alive = |pid: u32| pid == 200 || pid == 500;
        assert_eq!(
            stale(list, alive),
            ["habuild-t2-100", "habuild-t2-300-guard"]
        );
        assert!(stale("", alive).is_empty());
    }

    /// A namespace left by a run that is gone goes; a live run's stays.
    #[test]
    fn remove_stale_deletes_a_killed_runs_namespace() {
        if !available() {
            eprintln!("skipped: cannot create network namespaces here (not root?)");
            return;
        }
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let left = name_for(gone.id()) + "-killed";
        let ours = name_for(std::process::id()) + "-live";
        for n in [&left, &ours] {
            Command::new("ip")
                .args(["netns", "add", n])
                .run_checked()
                .unwrap();
        }
        remove_stale();
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output_checked()
            .unwrap();
        let _ = Command::new("ip").args(["netns", "delete", &ours]).status();
        let _ = Command::new("ip").args(["netns", "delete", &left]).output();
        let names: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(!names.contains(&left.as_str()), "{list}");
        assert!(names.contains(&ours.as_str()), "{list}");
    }

    /// Needs root: creates a namespace with a bridge and a tap, checks that
    /// they exist only inside it, and that drop removes the namespace.
    #[test]
    fn namespace_is_created_and_removed() {
        if !available() {
            eprintln!("skipped: cannot create network namespaces here (not root?)");
            return;
        }
        let name = name_for(std::process::id()) + "-unit";
        {
            let mut ns = Netns::create(&name, "10.10.197.50/24").unwrap();
            let tap = ns.add_tap(0).unwrap();
            let links = ns
                .command("ip")
                .args(["-o", "link"])
                .output_checked()
                .unwrap();
            assert!(links.contains(BRIDGE) && links.contains(&tap), "{links}");
            let host = Command::new("ip")
                .args(["-o", "link"])
                .output_checked()
                .unwrap();
            assert!(
                !host.contains(&format!(" {tap}:")),
                "the tap leaked to the host: {host}"
            );
            let list = Command::new("ip")
                .args(["netns", "list"])
                .output_checked()
                .unwrap();
            assert!(list.contains(&name), "{list}");
        }
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output_checked()
            .unwrap();
        assert!(
            !list.contains(&name),
            "the namespace survived its guard: {list}"
        );
    }
}
