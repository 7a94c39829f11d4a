//! Tools habuild runs die with it. Each runs in a process group of its
//! own (so a tool's own children, such as mmdebstrap's apt and dpkg, go
//! with it), registered here by leader pid and start time.
//!
//! - Ctrl-C or SIGTERM to habuild: the interrupt handler stops every
//!   registered group ([`stop_all`]) before it removes anything.
//! - SIGKILL, or any death that runs no code of habuild's: a watchdog
//!   process (`habuild internal-reaper`, started with the first tool when
//!   [`enable_reaper`] was called) holds the read end of a pipe only
//!   habuild writes to; at end of file it stops every group habuild told
//!   it about. It sits in a process group of its own, so a Ctrl-C at the
//!   terminal does not stop it first.
//!
//! A group is only signalled while it is provably the one habuild started:
//! its leader still has the recorded start time, or the leader is gone
//! but the group lives on (the kernel does not reuse a pid that still
//! names a process group).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};

/// A registered group: leader pid → its start time (clock ticks after boot).
type Groups = BTreeMap<u32, Option<u64>>;

fn groups() -> &'static Mutex<Groups> {
    static GROUPS: OnceLock<Mutex<Groups>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static REAPER_ENABLED: AtomicBool = AtomicBool::new(false);
/// Set while the interrupt handler stops the tools and exits.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn reaper() -> &'static Mutex<Option<ChildStdin>> {
    static REAPER: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    REAPER.get_or_init(|| Mutex::new(start_reaper()))
}

/// Lets the first spawned tool start the watchdog (the habuild binary
/// calls this; library users and unit tests have no `internal-reaper`).
pub fn enable_reaper() {
    REAPER_ENABLED.store(true, Ordering::SeqCst);
}

/// Spawns `cmd` in a process group of its own and registers it. Call
/// [`reaped`] once it has been waited for.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id();
    let start = start_time(pid);
    groups()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, start);
    if REAPER_ENABLED.load(Ordering::SeqCst) {
        tell_reaper(&format!("+{pid} {}\n", start.unwrap_or(0)));
    }
    Ok(child)
}

/// Forgets a child that has been waited for. While the interrupt handler
/// is stopping everything, the calling thread waits here for the exit
/// instead of acting on the tool's failure (and racing the handler's
/// cleanup).
pub fn reaped(pid: u32) {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
    }
    groups()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
    if REAPER_ENABLED.load(Ordering::SeqCst) {
        tell_reaper(&format!("-{pid}\n"));
    }
}

fn tell_reaper(line: &str) {
    let mut r = reaper().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = r.as_mut() {
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            log::debug!(
                "the watchdog is gone ({e}); tools will not be stopped if habuild is killed"
            );
            *r = None;
        }
    }
}

fn start_reaper() -> Option<ChildStdin> {
    // /proc/self/exe runs this very binary even if it was replaced on disk.
    let spawned = Command::new("/proc/self/exe")
        .arg("internal-reaper")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut c) => c.stdin.take(),
        Err(e) => {
            log::warn!(
                "could not start the watchdog that stops habuild's tools if habuild is killed: {e}"
            );
            None
        }
    }
}

/// Stops every registered group: SIGTERM, then SIGKILL for those still
/// there after `grace`. Returns how many groups were signalled. For the
/// interrupt handler: the process is to exit afterwards.
pub fn stop_all(grace: Duration) -> usize {
    STOPPING.store(true, Ordering::SeqCst);
    let groups = groups().lock().map(|g| g.clone()).unwrap_or_default();
    stop(&groups, grace)
}

fn stop(groups: &Groups, grace: Duration) -> usize {
    let ours: Vec<Pid> = groups
        .iter()
        .filter(|(pid, start)| is_ours(**pid, **start))
        .filter_map(|(pid, _)| Pid::from_raw(*pid as i32))
        .collect();
    for pid in &ours {
        let _ = kill_process_group(*pid, Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && ours.iter().any(|p| test_kill_process_group(*p).is_ok()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &ours {
        if test_kill_process_group(*pid).is_ok() {
            let _ = kill_process_group(*pid, Signal::KILL);
        }
    }
    ours.len()
}

/// Whether group `pid` is still the one started with leader start time `start`.
fn is_ours(pid: u32, start: Option<u64>) -> bool {
    let Some(p) = Pid::from_raw(pid as i32) else {
        return false;
    };
    if test_kill_process_group(p).is_err() {
        return false;
    }
    match (start_time(pid), start) {
        // The leader is gone and the group lives: the pid is not reusable yet.
        (None, _) => true,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => false,
    }
}

/// Field 22 of /proc/<pid>/stat (after the command name, which may hold
/// spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// `habuild internal-reaper`: reads `+PID START` / `-PID` lines until end
/// of file (habuild is gone), then stops the groups still registered.
pub fn reaper_main(input: impl BufRead) {
    let mut groups = Groups::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix('+') {
            let mut f = rest.split_whitespace();
            if let (Some(Ok(pid)), Some(Ok(start))) =
                (f.next().map(str::parse), f.next().map(str::parse::<u64>))
            {
                groups.insert(pid, (start != 0).then_some(start));
            }
        } else if let Some(Ok(pid)) = line.strip_prefix('-').map(str::parse::<u32>) {
            groups.remove(&pid);
        }
    }
    let n = stop(&groups, Duration::from_secs(5));
    if n > 0 {
        eprintln!("habuild is gone: stopped {n} of its tools that were still running");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn a_group_and_its_children_are_stopped_and_forgotten_once_reaped() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & wait"]);
        let mut child = spawn(&mut cmd).unwrap();
        let pid = child.id();
        assert!(is_ours(pid, start_time(pid)));
        assert!(
            !is_ours(pid, Some(1)),
            "another start time is another process"
        );
        let one = Groups::from([(pid, start_time(pid))]);
        // The shell and its sleep, both in the group.
        let waiter = std::thread::spawn(move || child.wait().unwrap());
        assert_eq!(stop(&one, Duration::from_secs(5)), 1);
        assert!(!waiter.join().unwrap().success());
        let gone = Pid::from_raw(pid as i32).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while test_kill_process_group(gone).is_ok() {
            assert!(Instant::now() < deadline, "the group's sleep survived");
            std::thread::sleep(Duration::from_millis(20));
        }
        reaped(pid);
        assert!(!groups().lock().unwrap().contains_key(&pid));
        assert_eq!(stop(&one, Duration::ZERO), 0, "nothing left to stop");
    }

    #[test]
    fn the_reaper_stops_what_is_still_registered_at_end_of_input() {
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        let mut child = spawn(&mut cmd).unwrap();
        let pid = child.id();
        let input = format!("+{pid} {}\n+1 5\n-1\n", start_time(pid).unwrap());
        reaper_main(std::io::Cursor::new(input));
        assert!(!child.wait().unwrap().success());
        reaped(pid);
    }
}
