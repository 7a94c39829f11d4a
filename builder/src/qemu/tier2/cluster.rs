//! Tier 2: the seed's cluster on one closed virtual L2 segment, and its
//! failover test. A network namespace made by this process (see
//! [`super::netns`]) holds a bridge, one tap per guest, and the test's
//! client address; every QEMU process runs inside it (`ip netns exec`), so
//! nothing the guests send can leave the machine. The control planes run
//! the root filesystem of their SD images on `-M virt` (kernel and initrd
//! from the image's boot partition), the directors boot their images under
//! OVMF. Guests report through the serial console (qemu/tier2-facts.sh, a
//! test-only unit added to throw-away copies). Kubernetes is replaced by
//! TEST DOUBLES (tests/doubles): the `kubeadm` test double starts a
//! stand-in API server that answers :6443 with the node's name.
//!
//! [`Cluster`] is the guard: dropping it (success, error or panic) kills
//! every QEMU process and then deletes the namespace.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::facts::{last_block, Facts};
use super::netns::Netns;
use crate::util::CommandExt;

/// The test's client on the segment (an address no node of the seed uses).
pub const CLIENT_CIDR: &str = "10.10.197.50/24";

/// How one guest is started (kept, to power it on again).
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub name: String,
    pub program: String,
    pub args: Vec<OsString>,
    pub qmp: PathBuf,
    pub log: PathBuf,
}

/// A running guest and its serial console.
pub struct Guest {
    pub spec: GuestSpec,
    child: Option<Child>,
    /// The console's bytes as QEMU wrote them: decoded whole, so that a
    /// character split between two reads is not lost (see [`pump`]).
    console: Arc<Mutex<Vec<u8>>>,
    pub started: Instant,
}

impl Guest {
    /// The console text so far (of this power-on).
    pub fn console(&self) -> String {
        self.console
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last complete fact block the guest printed.
    pub fn facts(&self) -> Option<Facts> {
        last_block(&self.console())
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cluster guard: guests and the namespace they run in.
pub struct Cluster {
    pub guests: Vec<Guest>,
    ns: Option<Netns>,
}

impl Cluster {
    pub fn new(ns: Netns) -> Self {
        Cluster {
            guests: Vec::new(),
            ns: Some(ns),
        }
    }

    pub fn ns(&self) -> &Netns {
        self.ns
            .as_ref()
            .expect("the namespace lives as long as the guard")
    }

    /// Starts `spec` inside the namespace, its console going to `spec.log`
    /// (appended: a guest powered on again keeps one log).
    pub fn start(&mut self, spec: GuestSpec) -> Result<usize> {
        let (child, console) = spawn(self.ns(), &spec)?;
        self.guests.push(Guest {
            spec,
            child: Some(child),
            console,
            started: Instant::now(),
        });
        Ok(self.guests.len() - 1)
    }

    /// Powers guest `i` on again with the same disk and NIC.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.guests[i].kill();
        let (child, console) = spawn(self.ns(), &self.guests[i].spec)?;
        let g = &mut self.guests[i];
        g.child = Some(child);
        g.console = console;
        g.started = Instant::now();
        Ok(())
    }

    /// Kills guest `i`'s QEMU (a power cut).
    pub fn kill(&mut self, i: usize) {
        self.guests[i].kill();
    }

    pub fn guest(&self, name: &str) -> Option<usize> {
        self.guests.iter().position(|g| g.spec.name == name)
    }

    /// Kills every guest, then deletes the namespace (reporting failures).
    pub fn shutdown(mut self) -> Result<()> {
        for g in &mut self.guests {
            g.kill();
        }
        match self.ns.take() {
            Some(ns) => ns.delete(),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for g in &mut self.guests {
            g.kill();
        }
        // Netns's own Drop deletes the namespace after the guests are gone.
        self.ns.take();
    }
}

fn spawn(ns: &Netns, spec: &GuestSpec) -> Result<(Child, Arc<Mutex<Vec<u8>>>)> {
    let mut cmd = ns.command(&spec.program);
    cmd.args(&spec.args);
    let shown = cmd.display();
    log::debug!("running: {shown}");
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let err_path = spec.log.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path)
        .with_context(|| format!("creating {}", err_path.display()))?;
    let _ = std::fs::remove_file(&spec.qmp);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_file));
    let mut child =
        crate::util::children::spawn(&mut cmd).with_context(|| format!("starting `{shown}`"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let console = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&console);
    std::thread::spawn(move || pump(&mut stdout, &mut log_file, &sink));
    Ok((child, console))
}

/// Copies a guest's console from `from` to its log file and to `sink` until
/// QEMU closes it. The bytes are kept as they came: a read often ends inside
/// a multi-byte character (systemd's "→" and "…"), and decoding each read
/// on its own turned such a character into replacement characters, which
/// broke the seal of the fact block it was in (stop 32: an arm64 init
/// node's `initialised` was seen 2.5 minutes late).
fn pump(from: &mut impl Read, log_file: &mut impl Write, sink: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = log_file.write_all(&buf[..n]);
        if let Ok(mut s) = sink.lock() {
            s.extend_from_slice(&buf[..n]);
        }
    }
}

/// Sends one QMP command (after the capabilities handshake) to the socket
/// at `path` and returns QEMU's reply line.
pub fn qmp(path: &Path, command: &str) -> Result<String> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let stream = UnixStream::connect(path)
        .with_context(|| format!("connecting to QMP at {}", path.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .context("setting the QMP timeout")?;
    let mut w = stream.try_clone().context("cloning the QMP stream")?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).context("reading the QMP greeting")?;
    let mut ask = |cmd: &str| -> Result<String> {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").context("writing to QMP")?;
        loop {
            let mut reply = String::new();
            if r.read_line(&mut reply).context("reading from QMP")? == 0 {
                bail!("QMP closed the connection");
            }
            // Skip asynchronous events.
            if reply.contains("\"return\"") || reply.contains("\"error\"") {
                return Ok(reply);
            }
        }
    };
    ask("qmp_capabilities")?;
    let reply = ask(command)?;
    if reply.contains("\"error\"") {
        bail!("QMP {command}: {reply}");
    }
    Ok(reply)
}

/// Connects once to `vip:port` from the client inside the namespace and
/// returns the name the stand-in API server (TEST DOUBLE) answered with,
/// or None when nothing answered: TLS first (the double's default; 10 s,
/// as a loaded emulated guest has taken over 5 s to finish a handshake),
/// plain TCP when the double runs without openssl.
pub fn client_probe(ns: &Netns, vip: &str, port: u16) -> Option<String> {
    probe_tls(&ns.name, vip, port, 10).or_else(|| probe_plain(&ns.name, vip, port, 5))
}

fn in_ns(ns_name: &str, timeout_secs: u32, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns_name, "timeout"])
        .arg(timeout_secs.to_string())
        .arg(program);
    c
}

/// The first word-like line the stand-in API server sent: its node name.
fn answered_name(out: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains(' '))
        .map(String::from)
}

/// One TLS connection to `addr:port` from the namespace.
pub fn probe_tls(ns_name: &str, addr: &str, port: u16, timeout_secs: u32) -> Option<String> {
    in_ns(ns_name, timeout_secs, "openssl")
        .args(["s_client", "-quiet", "-verify_quiet", "-connect"])
        .arg(format!("{addr}:{port}"))
        .stderr(Stdio::null())
        .output_checked()
        .ok()
        .as_deref()
        .and_then(answered_name)
}

/// Whether a TCP connection to `addr:port` from the namespace is accepted
/// within the timeout: with LVS-DR, that the director forwarded the SYN and
/// a real server's kernel answered. It does not wait for the stand-in API
/// server's TLS handshake, which a guest under emulation can be slow to
/// give (seconds under load) while the VIP itself answers.
pub fn tcp_connects(ns_name: &str, addr: &str, port: u16, timeout_secs: u32) -> bool {
    in_ns(ns_name, timeout_secs, "bash")
        .args(["-c", "exec 3<>\"/dev/tcp/$0/$1\"", addr, &port.to_string()])
        .stderr(Stdio::null())
        .output_checked()
        .is_ok()
}

fn probe_plain(ns_name: &str, addr: &str, port: u16, timeout_secs: u32) -> Option<String> {
    in_ns(ns_name, timeout_secs, "bash")
        .args([
            "-c",
            "exec 3<>\"/dev/tcp/$0/$1\" && cat <&3",
            addr,
            &port.to_string(),
        ])
        .output_checked()
        .ok()
        .as_deref()
        .and_then(answered_name)
}

/// Waits until `pred` holds on guest `i`'s facts, polling every second;
/// returns the time it took, or an error naming `what` and the console tail.
pub fn wait_facts(
    cluster: &mut Cluster,
    i: usize,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&Facts) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Some(f) = cluster.guests[i].facts() {
            if pred(&f) {
                return Ok(start.elapsed());
            }
        }
        if let Some(e) = waited_in_vain(cluster, i, what, start, timeout) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The error for guest `i` when `timeout` since `start` has passed, or its
/// QEMU has exited (unless that is what was waited for); None otherwise.
fn waited_in_vain(
    cluster: &mut Cluster,
    i: usize,
    what: &str,
    start: Instant,
    timeout: Duration,
) -> Option<anyhow::Error> {
    let g = &mut cluster.guests[i];
    if start.elapsed() > timeout {
        return Some(anyhow::anyhow!(
            "{}: {what}: not within {}s; console log {}\n--- last console lines ---\n{}",
            g.spec.name,
            timeout.as_secs(),
            g.spec.log.display(),
            crate::qemu::console::tail(&g.console(), 30)
        ));
    }
    if !g.running() && what != "powered off" {
        return Some(anyhow::anyhow!(
            "{}: QEMU exited while waiting for: {what}; see {} and {}\n{}",
            g.spec.name,
            g.spec.log.display(),
            g.spec.log.with_extension("stderr").display(),
            crate::qemu::console::tail(&g.console(), 30)
        ));
    }
    None
}

/// Waits until `pred(i, facts)` holds on every guest `i` of `guests`,
/// polling them all every second, and returns for each the time since
/// `since` at which it was first seen to hold (so that guests that get
/// there at different times get different times). On timeout or a QEMU
/// exit, the error names the first guest still waiting.
pub fn wait_all_facts(
    cluster: &mut Cluster,
    guests: &[usize],
    what: &str,
    since: Instant,
    timeout: Duration,
    pred: impl Fn(usize, &Facts) -> bool,
) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; guests.len()];
    loop {
        for (k, &i) in guests.iter().enumerate() {
            if seen[k].is_none() && cluster.guests[i].facts().is_some_and(|f| pred(i, &f)) {
                seen[k] = Some(since.elapsed());
            }
        }
        if let Some(waiting) = seen.iter().position(Option::is_none) {
            let i = guests[waiting];
            if let Some(e) = waited_in_vain(cluster, i, what, start, timeout) {
                return Err(e);
            }
            std::thread::sleep(Duration::from_secs(1));
        } else {
            return Ok(seen.into_iter().flatten().collect());
        }
    }
}

/// The QEMU arguments of a control plane on `-M virt`: the image's kernel
/// and initrd, the copy as a virtio disk, one virtio NIC on `tap`.
#[allow(clippy::too_many_arguments)]
pub fn control_plane_args(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    disk: &Path,
    tap: &str,
    mac: &str,
    qmp: &Path,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-m",
        "1G",
        "-smp",
        "1",
        "-kernel",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    a.push(kernel.into());
    a.push("-initrd".into());
    a.push(initrd.into());
    a.push("-append".into());
    a.push(append.into());
    a.extend(common_args(disk, tap, mac, qmp));
    a
}

/// The QEMU arguments of a director: OVMF, the copy as a virtio disk, KVM
/// when usable.
pub fn director_args(
    ovmf: &Path,
    machine: &str,
    kvm: bool,
    disk: &Path,
    tap: &str,
    mac: &str,
    qmp: &Path,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "-M".into(),
        machine.into(),
        "-m".into(),
        "1G".into(),
        "-smp".into(),
        "1".into(),
        "-accel".into(),
        if kvm { "kvm" } else { "tcg" }.into(),
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={}", ovmf.display()).into(),
    ];
    a.extend(common_args(disk, tap, mac, qmp));
    a
}

fn common_args(disk: &Path, tap: &str, mac: &str, qmp: &Path) -> Vec<OsString> {
    [
        "-drive".to_string(),
        format!("file={},if=none,id=d0,format=raw", disk.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d0".into(),
        "-netdev".into(),
        // A tap inside the test's namespace; no helper scripts.
        format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={mac}"),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
        "-no-reboot".into(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A console that hands out its bytes in fixed, small reads.
    struct Chunks(Vec<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let c = self.0.remove(0);
            buf[..c.len()].copy_from_slice(&c);
            Ok(c.len())
        }
    }

    #[test]
    fn a_character_split_between_two_reads_keeps_its_block_intact() {
        let body = "firstboot initialised\nfbtail Created symlink a \u{2192} b\n";
        let block = format!(
            "HABUILD-T2-BEGIN 7\n{body}HABUILD-T2-END 7 {}\n",
            crate::qemu::sealed::seal_of(&body.lines().collect::<Vec<_>>())
        );
        let bytes = block.as_bytes();
        // Cut inside the arrow's three bytes.
        let cut = block.find('\u{2192}').unwrap() + 1;
        let mut console = Chunks(vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()]);
        let mut log = Vec::new();
        let sink = Mutex::new(Vec::new());
        pump(&mut console, &mut log, &sink);
        assert_eq!(log, bytes);
        let text = String::from_utf8_lossy(&sink.lock().unwrap()).into_owned();
        let f = super::super::facts::last_block(&text).expect("the block is intact");
        assert_eq!(f.seq, 7);
        assert_eq!(f.firstboot, "initialised");
        assert_eq!(f.fbtail, ["Created symlink a \u{2192} b"]);
    }

    #[test]
    fn guests_use_only_taps_in_the_namespace() {
        let a = control_plane_args(
            Path::new("k"),
            Path::new("i"),
            "root=LABEL=root",
            Path::new("d.img"),
            "t2tap1",
            "52:54:00:0a:c5:62",
            Path::new("q.sock"),
        );
        let s: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        let joined = s.join(" ");
        assert!(joined.contains("-netdev tap,id=n0,ifname=t2tap1,script=no,downscript=no"));
        // Never user-mode networking, never a multicast socket.
        assert!(
            !joined.contains("user,") && !joined.contains("mcast"),
            "{joined}"
        );
        assert!(joined.contains("-M virt -cpu cortex-a72 -m 1G -smp 1"));
        let d = director_args(
            Path::new("OVMF.fd"),
            "q35",
            false,
            Path::new("d.img"),
            "t2tap0",
            "52:54:00:0a:c5:60",
            Path::new("q.sock"),
        );
        let joined: Vec<String> = d.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert!(joined.join(" ").contains("-accel tcg"));
    }

    /// The guard kills its processes and removes the namespace on panic.
    #[test]
    fn guard_cleans_up_on_panic() {
        if !crate::qemu::tier2::netns::available() {
            eprintln!("skipped: cannot create network namespaces here (not root?)");
            return;
        }
        let name = crate::qemu::tier2::netns::name_for(std::process::id()) + "-guard";
        let t = tempfile::tempdir().unwrap();
        let pid_file = t.path().join("pid");
        let name2 = name.clone();
        let pid_file2 = pid_file.clone();
        let log = t.path().join("g.log");
        // Paths only go into the closure: the temporary directory must
        // outlive it, or unwinding removes the pid file this test reads.
        let qmp = t.path().join("q.sock");
        let r = std::panic::catch_unwind(move || {
            let ns = Netns::create(&name2, CLIENT_CIDR).unwrap();
            let mut c = Cluster::new(ns);
            c.start(GuestSpec {
                name: "sleeper".into(),
                program: "sh".into(),
                args: vec![
                    "-c".into(),
                    format!("echo $$ > {}; exec sleep 300", pid_file2.display()).into(),
                ],
                qmp,
                log,
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            panic!("a scenario failed");
        });
        assert!(r.is_err());
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the guest process outlived the guard"
        );
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output_checked()
            .unwrap();
        assert!(!list.contains(&name), "the namespace outlived the guard");
    }
}
