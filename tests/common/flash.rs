//! Helpers for tests/flash.rs: a small partitioned test image (made in
//! seconds with sfdisk, mkfs.vfat and mke2fs, never a real OS image), and
//! guards that detach loop devices, unmount and swapoff even when a test
//! fails.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use habuild::util::CommandExt;

pub const MIB: u64 = 1 << 20;
/// Test image: 40 MiB, MBR, FAT32-ish boot at 1 MiB (8 MiB), ext4 at 10 MiB.
pub const IMAGE_SIZE: u64 = 40 * MIB;
pub const NODE: &str = "master-arm-1";

pub fn run(cmd: &mut Command) -> String {
    cmd.output_checked()
        .unwrap_or_else(|e| panic!("{}: {e:#}", cmd.display()))
}

/// Deterministic, incompressible-looking bytes.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The pristine image, built once per test binary.
fn pristine() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        build_image(dir.path());
        dir
    })
    .path()
}

fn build_image(dir: &Path) {
    let img = dir.join(format!("{NODE}.img"));
    File::create(&img).unwrap().set_len(IMAGE_SIZE).unwrap();
    let layout = "label: dos\nstart=2048, size=16384, type=c, bootable\nstart=20480, type=83\n";
    let mut sfdisk = Command::new("sfdisk");
    sfdisk.arg("--quiet").arg(&img);
    run_with_stdin(&mut sfdisk, layout);

    let boot = dir.join("boot.fat");
    run(Command::new("mkfs.vfat")
        .args(["-n", "BOOT", "-C"])
        .arg(&boot)
        .arg("8192"));
    let cfg = dir.join("config.txt");
    std::fs::write(&cfg, "arm_64bit=1\nkernel=vmlinuz\n").unwrap();
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&boot)
        .arg(&cfg)
        .arg("::config.txt"));
    run(Command::new("dd")
        .arg(format!("if={}", boot.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));

    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), format!("{NODE}\n")).unwrap();
    std::fs::write(root.join("payload.bin"), noise(12 * MIB as usize, 7)).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg(format!("offset={},nodiscard", 10 * MIB))
        .arg("-d")
        .arg(&root)
        .arg(&img)
        .arg("30M"));
    std::fs::remove_file(&boot).unwrap();
    std::fs::remove_file(&cfg).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    write_artifacts(dir);
}

/// The bmap and SHA256SUMS for the image in `dir`, as the pipeline writes them.
pub fn write_artifacts(dir: &Path) {
    let img = dir.join(format!("{NODE}.img"));
    habuild::artifact::bmap::write_bmap(&img, &dir.join(format!("{NODE}.img.bmap"))).unwrap();
    habuild::artifact::checksums::write_sha256sums(
        dir,
        &[&format!("{NODE}.img"), &format!("{NODE}.img.bmap")],
    )
    .unwrap();
}

pub fn run_with_stdin(cmd: &mut Command, input: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{cmd:?}");
}

/// A private copy of the test image, bmap and SHA256SUMS.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn fresh() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            format!("{NODE}.img"),
            format!("{NODE}.img.bmap"),
            "SHA256SUMS".to_string(),
        ] {
            // cp keeps the holes, so the copy has the same block map.
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(pristine().join(&name))
                .arg(dir.path().join(&name)));
        }
        Fixture { dir }
    }
    pub fn image(&self) -> PathBuf {
        self.dir.path().join(format!("{NODE}.img"))
    }
    pub fn bmap_path(&self) -> PathBuf {
        self.dir.path().join(format!("{NODE}.img.bmap"))
    }
    pub fn sums(&self) -> PathBuf {
        self.dir.path().join("SHA256SUMS")
    }
    pub fn bmap(&self) -> habuild::artifact::bmap::Bmap {
        habuild::artifact::bmap::read(&self.bmap_path()).unwrap()
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `count` bytes of `path` from `offset`.
pub fn read_at(path: &Path, offset: u64, count: u64) -> Vec<u8> {
    let mut buf = vec![0u8; count as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// The first mapped range (as "blocks A-B") where `a` and `b` differ.
pub fn first_difference(
    bmap: &habuild::artifact::bmap::Bmap,
    a: &Path,
    b: &Path,
) -> Option<String> {
    for r in &bmap.ranges {
        let span = bmap.byte_range(r);
        if read_at(a, span.start, span.end - span.start)
            != read_at(b, span.start, span.end - span.start)
        {
            return Some(bmap.describe(r));
        }
    }
    None
}

/// A file of `size` bytes filled with a recognisable "old card" pattern.
pub fn old_card(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    let chunk = vec![0x5au8; MIB as usize];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(MIB);
        f.write_all_at(&chunk[..n as usize], off).unwrap();
        off += n;
    }
}

/// True when loop devices can be attached here (root in a VM, not a
/// restricted container).
pub fn loop_devices_work() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("probe");
        File::create(&f).unwrap().set_len(MIB).unwrap();
        match LoopDev::attach(&f, false) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("loop devices unavailable, skipping block-device tests: {e:#}");
                false
            }
        }
    })
}

/// An attached loop device, detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn attach(file: &Path, partscan: bool) -> anyhow::Result<LoopDev> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        if partscan {
            cmd.arg("--partscan");
        }
        let out = cmd.arg(file).output_checked()?;
        let dev = LoopDev {
            dev: PathBuf::from(out.trim()),
        };
        if partscan {
            // Partition nodes appear through udev; wait for them.
            let _ = Command::new("udevadm").arg("settle").output();
        }
        Ok(dev)
    }
    /// "/dev/loop3p2", once the kernel has made it (None if it never does).
    pub fn part(&self, n: u32) -> Option<PathBuf> {
        let p = PathBuf::from(format!("{}p{n}", self.dev.display()));
        for _ in 0..40 {
            if habuild::flash::sysfs::block_dev_of(&p).is_some() {
                return Some(p);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if let Err(e) = Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .run_checked()
        {
            eprintln!("could not detach {}: {e:#}", self.dev.display());
        }
    }
}

/// A mount, unmounted on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(dev: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-o", "ro"])
            .arg(dev)
            .arg(dir.path()));
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).run_checked();
    }
}

/// Active swap on a device, turned off on drop.
pub struct SwapOn(pub PathBuf);

impl SwapOn {
    pub fn new(dev: &Path) -> SwapOn {
        run(Command::new("mkswap").arg(dev));
        run(Command::new("swapon").arg(dev));
        SwapOn(dev.to_path_buf())
    }
}

impl Drop for SwapOn {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).run_checked();
    }
}

/// A device-mapper linear device over `dev`, removed on drop.
pub struct DmLinear(pub String);

impl DmLinear {
    /// None where the kernel has no device-mapper.
    pub fn new(dev: &Path, sectors: u64, name: &str) -> Option<DmLinear> {
        use std::io::Write;
        use std::process::Stdio;
        let table = format!("0 {sectors} linear {} 0\n", dev.display());
        let mut child = Command::new("dmsetup")
            .args(["create", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(table.as_bytes()).ok()?;
        child
            .wait()
            .ok()?
            .success()
            .then(|| DmLinear(name.to_string()))
    }
}

impl Drop for DmLinear {
    fn drop(&mut self) {
        let _ = Command::new("dmsetup")
            .args(["remove", &self.0])
            .run_checked();
    }
}
