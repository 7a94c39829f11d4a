#!/bin/sh
# Installed by habuild; run once by habuild-growroot.service at first boot.
# Grows the partition holding / to the end of its disk (growpart), then the
# ext4 filesystem to the end of the partition (resize2fs, online). Output goes
# to the journal. Safe to run again: growpart reports NOCHANGE and resize2fs
# has nothing to do.
set -eu

MARKER_DIR=/var/lib/habuild
MARKER=$MARKER_DIR/growroot.done

log() {
    echo "habuild-growroot: $*"
}

if [ -e "$MARKER" ]; then
    log "already done ($MARKER exists)"
    exit 0
fi

# Find the root block device by major:minor rather than by the mount source:
# when the kernel mounts root itself the source reads /dev/root, which names
# no device node. sysfs then gives the partition number and the parent disk.
majmin=$(findmnt --noheadings --raw --output MAJ:MIN --mountpoint /)
sys=$(readlink -f "/sys/dev/block/$majmin")
if [ ! -r "$sys/partition" ]; then
    log "root ($majmin) is not on a partition; nothing to grow"
    mkdir -p "$MARKER_DIR"
    touch "$MARKER"
    exit 0
fi
partnum=$(cat "$sys/partition")
part=/dev/$(basename "$sys")
disk=/dev/$(basename "$(dirname "$sys")")

# growpart opens the whole disk for writing and then waits for udev to
# re-probe it, which took over a minute on emulated guests: with less than
# 1 MiB after the partition (a disk the size of the image, as in habuild's
# tier-2 test guests) there is nothing worth growing and it is skipped.
start=$(cat "$sys/start")
size=$(cat "$sys/size")
disk_size=$(cat "/sys/class/block/$(basename "$disk")/size")
if [ $((disk_size - start - size)) -lt 2048 ]; then
    log "partition $partnum already ends within 1 MiB of the end of $disk"
else
    log "growing partition $partnum of $disk ($part)"
    # growpart exits 0 when it grew the partition, 1 with "NOCHANGE" when
    # the partition already ends where the disk does, and 1 or 2 on real
    # errors.
    rc=0
    out=$(growpart "$disk" "$partnum" 2>&1) || rc=$?
    [ -n "$out" ] && log "$out"
    case $rc in
        0)
            log "partition grown"
            ;;
        1)
            case $out in
                *NOCHANGE*)
                    log "partition already fills the disk"
                    ;;
                *)
                    log "growpart failed (exit $rc)"
                    exit 1
                    ;;
            esac
            ;;
        *)
            log "growpart failed (exit $rc)"
            exit 1
            ;;
    esac
fi

# Run even after NOCHANGE: the filesystem may still be smaller than its
# partition (an earlier run that stopped between the two steps).
resize2fs "$part"

mkdir -p "$MARKER_DIR"
touch "$MARKER"
log "done"
