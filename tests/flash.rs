//! `habuild flash` end to end: to regular files and loop devices, against
//! `bmaptool copy`, every refusal, and interrupted writes. Test images are
//! small partitioned images made in seconds (see common/flash.rs).
//!
//! Block-device tests use only loop devices they attach themselves (and
//! detach through guards); they skip when loop devices are unavailable.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use habuild::flash::{self, FlashOptions, FlashReport, Refusal};
use habuild::util::CommandExt;

use common::flash::*;

fn opts(image: &Path, target: &Path) -> FlashOptions {
    FlashOptions {
        image: image.to_path_buf(),
        bmap: None,
        target: target.to_path_buf(),
        force: false,
        yes: true,
        check_image_hash: false,
        no_bmap: false,
    }
}

fn no_prompt(text: &str) -> anyhow::Result<bool> {
    panic!("unexpected prompt:\n{text}")
}

fn never() -> bool {
    false
}

fn flash_ok(o: &FlashOptions) -> FlashReport {
    flash::flash(o, &mut no_prompt, &never).unwrap_or_else(|e| panic!("{e:#}"))
}

fn refusal(o: &FlashOptions) -> Refusal {
    let err = flash::flash(o, &mut no_prompt, &never).expect_err("flash must refuse");
    err.downcast_ref::<Refusal>()
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"))
        .clone()
}

fn bmaptool_copy(image: &Path, bmap: &Path, target: &Path) {
    run(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(bmap)
        .arg(image)
        .arg(target));
}

#[test]
fn file_target_equals_image_and_bmaptool_copy() {
    let fx = Fixture::fresh();
    let ours = fx.path("ours.img");
    let report = flash_ok(&opts(&fx.image(), &ours));
    let bmap = fx.bmap();
    assert_eq!(
        report.bytes_written,
        bmap.mapped_bytes(),
        "a file target gets only the mapped bytes"
    );
    assert_eq!(report.bytes_verified, bmap.mapped_bytes());
    // The bmap's entry covers every byte written: no whole-image hash.
    assert_eq!(report.sums_bmap.as_deref(), Some("master-arm-1.img.bmap"));
    assert_eq!(report.sums_image, None);
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(fx.image()).unwrap(),
        "flashed file differs from the image"
    );
    let theirs = fx.path("bmaptool.img");
    bmaptool_copy(&fx.image(), &fx.bmap_path(), &theirs);
    assert_eq!(first_difference(&bmap, &ours, &theirs), None);
    // The copy stays sparse: about as many blocks as the bmap maps.
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&ours).unwrap()) * 512;
    assert!(allocated < bmap.mapped_bytes() + 2 * MIB, "{allocated}");
}

#[test]
fn old_larger_file_is_replaced_exactly() {
    let fx = Fixture::fresh();
    let target = fx.path("old.img");
    old_card(&target, IMAGE_SIZE + 8 * MIB);
    flash_ok(&opts(&fx.image(), &target));
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(fx.image()).unwrap(),
        "unmapped ranges must read as zeros and the size must be the image's"
    );
}

#[test]
fn zstd_image_is_streamed() {
    let fx = Fixture::fresh();
    let zst = fx.path("master-arm-1.img.zst");
    let raw = std::fs::read(fx.image()).unwrap();
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let target = fx.path("from-zst.img");
    let report = flash_ok(&opts(&zst, &target));
    assert_eq!(report.sums_image, None);
    assert!(std::fs::read(&target).unwrap() == raw);
    // Asked to, with SHA256SUMS listing only the .img: the decompressed
    // stream is checked.
    let mut o = opts(&zst, &fx.path("hashed.img"));
    o.check_image_hash = true;
    let report = flash_ok(&o);
    assert_eq!(report.sums_image.as_deref(), Some("master-arm-1.img"));

    // Listed under its own name: the compressed file is checked, and a
    // wrong entry is refused.
    let sum = habuild::util::digest::sha256_file(&zst).unwrap();
    let sums = std::fs::read_to_string(fx.sums()).unwrap();
    std::fs::write(fx.sums(), format!("{sums}{sum}  master-arm-1.img.zst\n")).unwrap();
    o.target = fx.path("again.img");
    let report = flash_ok(&o);
    assert_eq!(report.sums_image.as_deref(), Some("master-arm-1.img.zst"));
    std::fs::write(
        fx.sums(),
        format!("{sums}{}  master-arm-1.img.zst\n", "0".repeat(64)),
    )
    .unwrap();
    o.target = fx.path("bad.img");
    assert!(matches!(
        refusal(&o),
        Refusal::SumsMismatch(ref m) if m.file == "master-arm-1.img.zst"
    ));
}

/// .img.xz and .img.gz stream like .img.zst; the magic bytes decide, not
/// the name; bmaptool copy takes the same compressed image and bmap.
#[test]
fn xz_and_gzip_images_are_streamed_by_their_magic() {
    use habuild::artifact::compression::{compress_file, Format};
    let fx = Fixture::fresh();
    let raw = std::fs::read(fx.image()).unwrap();
    let xz = fx.path("master-arm-1.img.xz");
    compress_file(&fx.image(), &xz, Format::Xz, 0o644).unwrap();
    let gz = fx.path("master-arm-1.img.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    // zstd data under an .xz name: read as zstd.
    let misnamed = fx.path("misnamed.img.xz");
    std::fs::write(&misnamed, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    for image in [&xz, &gz, &misnamed] {
        let mut o = opts(image, &fx.path("out.img"));
        o.bmap = Some(fx.bmap_path());
        let report = flash_ok(&o);
        assert_eq!(report.bytes_verified, fx.bmap().mapped_bytes());
        assert!(
            std::fs::read(fx.path("out.img")).unwrap() == raw,
            "{}",
            image.display()
        );
        std::fs::remove_file(fx.path("out.img")).unwrap();
    }
    // The real bmaptool accepts the compressed image with the same bmap.
    for image in [&xz, &gz] {
        let theirs = fx.path("bmaptool.img");
        bmaptool_copy(image, &fx.bmap_path(), &theirs);
        assert_eq!(first_difference(&fx.bmap(), &theirs, &fx.image()), None);
        std::fs::remove_file(&theirs).unwrap();
    }
}

/// A missing bmap says how to make one or to go without; --no-bmap
/// writes and checks every byte; a missing image is named, not its bmap.
#[test]
fn missing_bmap_is_explained_and_no_bmap_writes_everything() {
    let fx = Fixture::fresh();
    let raw = std::fs::read(fx.image()).unwrap();
    let zst = fx.path("copy.img.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let err = flash::flash(&opts(&zst, &fx.path("t.img")), &mut no_prompt, &never)
        .expect_err("no bmap beside copy.img.zst");
    let msg = format!("{err:#}");
    assert!(msg.contains("copy.img.bmap"), "{msg}");
    assert!(msg.contains("bmaptool create"), "{msg}");
    assert!(msg.contains("--no-bmap"), "{msg}");
    assert!(!fx.path("t.img").exists(), "nothing written");

    let mut o = opts(&zst, &fx.path("whole.img"));
    o.no_bmap = true;
    let report = flash_ok(&o);
    assert_eq!(report.bytes_written, IMAGE_SIZE, "every byte is written");
    assert_eq!(report.bytes_verified, IMAGE_SIZE, "and read back");
    assert_eq!(report.sums_bmap, None);
    assert!(std::fs::read(fx.path("whole.img")).unwrap() == raw);

    let missing = fx.path("gone.img.xz");
    let err = flash::flash(&opts(&missing, &fx.path("t.img")), &mut no_prompt, &never)
        .expect_err("no image");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no image") && msg.contains("gone.img.xz"),
        "{msg}"
    );
    assert!(
        !msg.contains(".bmap"),
        "names the image, not its bmap: {msg}"
    );
}

#[test]
fn loop_device_equals_bmaptool_copy() {
    if !loop_devices_work() {
        return;
    }
    let fx = Fixture::fresh();
    let (a, b) = (fx.path("card-a"), fx.path("card-b"));
    old_card(&a, 64 * MIB);
    old_card(&b, 64 * MIB);
    let (ours, theirs) = (
        LoopDev::attach(&a, false).unwrap(),
        LoopDev::attach(&b, false).unwrap(),
    );
    let mut o = opts(&fx.image(), &ours.dev);
    o.force = true; // loop devices are not removable
    let report = flash_ok(&o);
    bmaptool_copy(&fx.image(), &fx.bmap_path(), &theirs.dev);
    let bmap = fx.bmap();
    assert_eq!(first_difference(&bmap, &ours.dev, &fx.image()), None);
    assert_eq!(first_difference(&bmap, &ours.dev, &theirs.dev), None);
    assert!(report.block_device);
    // Loop devices zero by punching holes in their file: the old partition
    // table reads as zeros without a byte written, so habuild writes only
    // the mapped bytes, as bmaptool does. Unmapped ranges of the image
    // read as zeros; past the image, the old card is untouched.
    assert_eq!(report.bytes_zeroed, 0);
    assert_eq!(report.bytes_written, bmap.mapped_bytes());
    assert_eq!(report.bytes_discarded, IMAGE_SIZE);
    assert!(
        std::fs::read(&ours.dev).unwrap()[..IMAGE_SIZE as usize]
            == std::fs::read(fx.image()).unwrap()[..],
        "discarded ranges must read as zeros on a loop device"
    );
    assert_eq!(read_at(&ours.dev, IMAGE_SIZE, 16), vec![0x5a; 16]);
}

#[test]
fn refuses_non_removable_without_force_and_too_small() {
    if !loop_devices_work() {
        return;
    }
    let fx = Fixture::fresh();
    let big = fx.path("big");
    old_card(&big, 64 * MIB);
    let dev = LoopDev::attach(&big, false).unwrap();
    let r = refusal(&opts(&fx.image(), &dev.dev));
    assert!(matches!(r, Refusal::NotRemovable { .. }), "{r}");
    assert!(r.to_string().contains("--force"), "{r}");
    assert_eq!(read_at(&dev.dev, 0, 16), vec![0x5a; 16], "nothing written");

    let small = fx.path("small");
    old_card(&small, 16 * MIB);
    let dev = LoopDev::attach(&small, false).unwrap();
    let mut o = opts(&fx.image(), &dev.dev);
    o.force = true;
    let r = refusal(&o);
    assert_eq!(
        r,
        Refusal::TooSmall {
            device: format!("/dev/{}", dev.dev.file_name().unwrap().to_string_lossy()),
            size: 16 * MIB,
            needed: IMAGE_SIZE
        }
    );
}

#[test]
fn refuses_disk_with_mounted_partition_and_a_partition() {
    if !loop_devices_work() {
        return;
    }
    let fx = Fixture::fresh();
    // The card holds an earlier copy of the image; its ext4 gets mounted.
    let card = fx.path("card");
    run(Command::new("cp").arg(fx.image()).arg(&card));
    run(Command::new("truncate").args(["-s", "64M"]).arg(&card));
    let dev = LoopDev::attach(&card, true).unwrap();
    let mut o = opts(&fx.image(), &dev.dev);
    o.force = true;
    let (Some(p1), Some(p2)) = (dev.part(1), dev.part(2)) else {
        // Kernels without partition-table parsers (some VM kernels) make
        // no partition nodes: mount the whole device instead.
        eprintln!(
            "no partition nodes for {}: testing a mounted whole device",
            dev.dev.display()
        );
        run(Command::new("mkfs.ext4").arg("-q").arg(&dev.dev));
        let m = Mounted::new(&dev.dev);
        assert!(matches!(
            refusal(&o),
            Refusal::Mounted { ref mount_point, .. } if Path::new(mount_point) == m.dir.path()
        ));
        return;
    };
    o.target = p1.clone();
    assert!(
        matches!(refusal(&o), Refusal::Partition { .. }),
        "{}",
        p1.display()
    );

    let m = Mounted::new(&p2);
    o.target = dev.dev.clone();
    match refusal(&o) {
        Refusal::Mounted {
            on, mount_point, ..
        } => {
            assert_eq!(Path::new(&on), p2);
            assert_eq!(Path::new(&mount_point), m.dir.path());
        }
        other => panic!("{other}"),
    }
}

#[test]
fn refuses_active_swap_and_held_device() {
    if !loop_devices_work() {
        return;
    }
    let fx = Fixture::fresh();
    let f = fx.path("swap");
    old_card(&f, 64 * MIB);
    let dev = LoopDev::attach(&f, false).unwrap();
    let mut o = opts(&fx.image(), &dev.dev);
    o.force = true;
    {
        let _swap = SwapOn::new(&dev.dev);
        assert!(matches!(refusal(&o), Refusal::Swap { .. }));
    }
    let name = format!("habuild-test-{}", std::process::id());
    let Some(_dm) = DmLinear::new(&dev.dev, 2048, &name) else {
        eprintln!("no device-mapper here: holders are covered by the sysfs fixture tests");
        return;
    };
    match refusal(&o) {
        Refusal::Held { holder, .. } => assert!(holder.starts_with("/dev/dm-"), "{holder}"),
        other => panic!("{other}"),
    }
}

/// The disk holding / is refused. Only read-only inspection runs against
/// the real disk (the same code `flash` runs before opening anything).
#[test]
fn refuses_the_root_disk() {
    use std::os::unix::fs::MetadataExt;
    let host = habuild::flash::sysfs::Host::default();
    let st_dev = std::fs::metadata("/").unwrap().dev();
    let dev = (rustix::fs::major(st_dev), rustix::fs::minor(st_dev));
    let Ok(mut facts) = host.block(dev) else {
        eprintln!("/ is not on a block device here (overlay, tmpfs?); skipping");
        return;
    };
    if let Some(disk) = facts.parent.clone() {
        let text = std::fs::read_to_string(format!("/sys/class/block/{disk}/dev")).unwrap();
        facts = host
            .block(habuild::flash::target::parse_devnum(&text).unwrap())
            .unwrap();
    }
    let r = habuild::flash::target::check_block(
        &facts,
        &host.mounts().unwrap(),
        &host.swaps().unwrap(),
        1,
        true,
    )
    .unwrap_err();
    assert!(matches!(r, Refusal::RootDisk { .. }), "{r}");
}

#[test]
fn refuses_damaged_bmap_and_sums_mismatches() {
    let fx = Fixture::fresh();
    let target = fx.path("t.img");
    let bmap_text = std::fs::read_to_string(fx.bmap_path()).unwrap();

    // SHA256SUMS disagrees with the bmap: refused before anything is written.
    let sums = std::fs::read_to_string(fx.sums()).unwrap();
    let bmap_sum = habuild::util::digest::sha256_file(&fx.bmap_path()).unwrap();
    std::fs::write(fx.sums(), sums.replace(&bmap_sum, &"1".repeat(64))).unwrap();
    assert!(matches!(
        refusal(&opts(&fx.image(), &target)),
        Refusal::SumsMismatch(ref m) if m.file == "master-arm-1.img.bmap"
    ));
    assert!(!target.exists(), "refused before touching the target");

    // The bmap edited (SHA256SUMS gone): its own checksum catches it.
    std::fs::remove_file(fx.sums()).unwrap();
    std::fs::write(
        fx.bmap_path(),
        bmap_text.replacen("<MappedBlocksCount> ", "<MappedBlocksCount> 1", 1),
    )
    .unwrap();
    assert!(matches!(
        refusal(&opts(&fx.image(), &target)),
        Refusal::BmapChecksum { .. }
    ));
    std::fs::write(fx.bmap_path(), &bmap_text).unwrap();

    // The image's SHA256SUMS entry wrong. By default only the bmap's entry
    // is checked (it covers every byte written), so the flash succeeds.
    let img_sum = habuild::util::digest::sha256_file(&fx.image()).unwrap();
    let wrong_image = sums.replace(&img_sum, &"2".repeat(64));
    std::fs::write(fx.sums(), &wrong_image).unwrap();
    flash_ok(&opts(&fx.image(), &target));
    // With --check-image-hash, or when SHA256SUMS does not list the bmap,
    // the whole image is hashed alongside the write, and the mismatch is
    // found before the first MiB is written.
    let mut o = opts(&fx.image(), &target);
    o.check_image_hash = true;
    let without_bmap: String = wrong_image
        .lines()
        .filter(|l| !l.ends_with(".bmap"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (text, o) in [
        (&wrong_image, &o),
        (&without_bmap, &opts(&fx.image(), &target)),
    ] {
        std::fs::write(fx.sums(), text).unwrap();
        old_card(&target, IMAGE_SIZE);
        let r = refusal(o);
        assert!(
            matches!(r, Refusal::SumsMismatch(ref m) if m.file == "master-arm-1.img"),
            "{r}"
        );
        assert_eq!(read_at(&target, 0, MIB), vec![0; MIB as usize]);
    }
}

#[test]
fn refuses_image_that_does_not_match_its_bmap() {
    let fx = Fixture::fresh();
    std::fs::remove_file(fx.sums()).unwrap();
    let bmap = fx.bmap();
    // Corrupt one byte in the middle of the last mapped range.
    let last = bmap.ranges.last().unwrap();
    let span = bmap.byte_range(last);
    let at = (span.start + span.end) / 2;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(fx.image())
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[!read_at(&fx.image(), at, 1)[0]], at).unwrap();
    let target = fx.path("t.img");
    match refusal(&opts(&fx.image(), &target)) {
        Refusal::ImageRange { range, .. } => assert_eq!(range, bmap.describe(last)),
        other => panic!("{other}"),
    }
    assert_eq!(
        read_at(&target, 0, MIB),
        vec![0; MIB as usize],
        "no partition table written"
    );

    // A bmap for a different-size image.
    f.set_len(IMAGE_SIZE + 4096).unwrap();
    assert!(matches!(
        refusal(&opts(&fx.image(), &target)),
        Refusal::ImageSize { .. }
    ));
}

#[test]
fn refuses_the_image_itself_and_non_disks() {
    let fx = Fixture::fresh();
    assert!(matches!(
        refusal(&opts(&fx.image(), &fx.image())),
        Refusal::SameAsSource { .. }
    ));
    assert!(matches!(
        refusal(&opts(&fx.image(), Path::new("/dev/null"))),
        Refusal::NotADisk { .. }
    ));
    let missing = Path::new("/dev/habuild-no-such-card");
    assert!(matches!(
        refusal(&opts(&fx.image(), missing)),
        Refusal::NoSuchDevice { .. }
    ));
    assert!(!missing.exists());
}

/// A regular file in use must not be overwritten: the backing file of a
/// loop device (here with a mounted ext4 on it, the case), a file
/// another process holds open for writing, an active swap file.
#[test]
fn refuses_a_file_that_backs_a_loop_device_is_open_for_writing_or_swap() {
    if !loop_devices_work() {
        return;
    }
    let fx = Fixture::fresh();
    let backing = fx.path("f.raw");
    old_card(&backing, 64 * MIB);
    let before = std::fs::read(&backing).unwrap();
    {
        let dev = LoopDev::attach(&backing, false).unwrap();
        run(Command::new("mkfs.ext4").arg("-q").arg(&dev.dev));
        let _m = Mounted::new(&dev.dev);
        let before = std::fs::read(&backing).unwrap();
        match refusal(&opts(&fx.image(), &backing)) {
            Refusal::LoopBacking { device, .. } => {
                assert_eq!(Path::new(&device), dev.dev.as_path())
            }
            other => panic!("{other}"),
        }
        assert!(
            std::fs::read(&backing).unwrap() == before,
            "the file was written"
        );
    }
    // Detached: a plain file again.
    assert!(std::fs::read(&backing).unwrap() != before, "mkfs wrote it");
    flash_ok(&opts(&fx.image(), &backing));

    let held = fx.path("held.raw");
    old_card(&held, 8 * MIB);
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("exec 3<>\"$0\"; echo ready; exec sleep 60")
        .arg(&held)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(writer.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let refused = refusal(&opts(&fx.image(), &held));
    writer.kill().unwrap();
    writer.wait().unwrap();
    match refused {
        Refusal::OpenForWriting { pid, .. } => assert_eq!(pid, writer.id()),
        other => panic!("{other}"),
    }
    // Open only for reading elsewhere: fine.
    let reader = std::fs::File::open(&held).unwrap();
    flash_ok(&opts(&fx.image(), &held));
    drop(reader);

    let swapfile = fx.path("swapfile");
    old_card(&swapfile, 16 * MIB);
    std::fs::set_permissions(
        &swapfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let _swap = SwapOn::new(&swapfile);
    assert!(matches!(
        refusal(&opts(&fx.image(), &swapfile)),
        Refusal::Swap { .. }
    ));
}

#[test]
fn cli_flashes_a_node_by_name_and_asks_before_a_device() {
    let fx = Fixture::fresh();
    let out = fx.path("out");
    let cluster = out.join("testcluster");
    std::fs::create_dir_all(&cluster).unwrap();
    for n in ["master-arm-1.img", "master-arm-1.img.bmap", "SHA256SUMS"] {
        std::fs::rename(fx.path(n), cluster.join(n)).unwrap();
    }
    let target = fx.path("card.img");
    let root = common::repo_root();
    let o = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(["flash", "--node", "master-arm-1", "--manifest"])
        .arg(root.join("tests/fixtures/test-cluster.toml"))
        .arg("--out")
        .arg(&out)
        .arg(&target)
        .env("HABUILD_ROOT", &root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("wrote") && stderr.contains("verified"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SHA256SUMS entry (master-arm-1.img.bmap)"),
        "{stderr}"
    );
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(cluster.join("master-arm-1.img")).unwrap()
    );

    if !loop_devices_work() {
        return;
    }
    // A block device without --yes and without a terminal: refused, untouched.
    let card = fx.path("dev");
    old_card(&card, 64 * MIB);
    let dev = LoopDev::attach(&card, false).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .arg("flash")
        .arg("--force")
        .arg(cluster.join("master-arm-1.img"))
        .arg(&dev.dev)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--yes") && stderr.contains("NOT removable"),
        "{stderr}"
    );
    assert_eq!(read_at(&dev.dev, 0, 16), vec![0x5a; 16]);
}

/// Starts `habuild flash` paused by the test hook after its first write.
fn start_paused(image: &Path, target: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(["flash", "--yes", "--force"])
        .arg(image)
        .arg(target)
        .env(habuild::flash::writer::PAUSE_ENV, "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("habuild ended before pausing").unwrap();
        if line.contains("habuild-test: paused") {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn assert_not_bootable(target: &Path, image: &Path) {
    let head = read_at(target, 0, MIB);
    assert_ne!(
        head,
        read_at(image, 0, MIB),
        "the new image's first MiB must not be there"
    );
    assert_eq!(
        head,
        vec![0; MIB as usize],
        "neither the old table nor the new one"
    );
}

#[test]
fn killed_flash_leaves_no_partition_table() {
    let fx = Fixture::fresh();
    let target = fx.path("card.img");
    old_card(&target, 64 * MIB);
    let mut child = start_paused(&fx.image(), &target);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_not_bootable(&target, &fx.image());
    // Data past the first MiB did arrive: the kill really was part-way.
    let bmap = fx.bmap();
    assert!(first_difference(&bmap, &target, &fx.image()).is_some());

    if !loop_devices_work() {
        return;
    }
    let card = fx.path("dev");
    old_card(&card, 64 * MIB);
    let dev = LoopDev::attach(&card, false).unwrap();
    let mut child = start_paused(&fx.image(), &dev.dev);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_not_bootable(&dev.dev, &fx.image());
}

#[test]
fn ctrl_c_stops_cleanly_and_says_the_card_is_incomplete() {
    let fx = Fixture::fresh();
    let target = fx.path("card.img");
    let mut child = Command::new(env!("CARGO_BIN_EXE_habuild"))
        .args(["flash", "--yes"])
        .arg(fx.image())
        .arg(&target)
        .env(habuild::flash::writer::PAUSE_ENV, "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("habuild-test: paused") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .run_checked()
        .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("is incomplete") && rest.contains("will not boot"),
        "{rest}"
    );
    assert_not_bootable(&target, &fx.image());
}
