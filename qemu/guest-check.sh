#!/bin/sh
# Runs inside a test guest (habuild test, tier 1) from habuild-check.service.
# It judges nothing itself: it prints facts between sentinel lines and the
# harness compares them with the manifest and <node>.json.
#
# The serial console is shared with the kernel and getty, whose output can
# land in the middle of a line. So kernel messages are kept off the console
# from here on (they still reach the kernel log and the journal), and the
# report is printed twice, each copy sealed with the sha256 of its lines:
# the harness reads the first copy that matches its seal.
# shellcheck source=seal.sh
. "$(dirname "$0")/seal.sh"
dmesg -n 1 2>/dev/null || :
# The init node's first boot (kubeadm init) runs beside the rest of boot,
# so the system can be up before it is done: wait for it (up to ten
# minutes) and report the state it leaves. A joiner's waits for the VIP,
# which nothing answers in tier 1, so that one is not waited for, unless
# kubeadm is missing (an image built without Kubernetes): then its unit's
# condition skips it at once, and the report must show that it did.
if grep -qx 'HABUILD_ACTION=init' /etc/habuild/firstboot.env 2>/dev/null ||
  { [ -e /etc/habuild/firstboot.env ] && ! command -v kubeadm >/dev/null 2>&1; }; then
  systemctl is-system-running --wait >/dev/null 2>&1 || :
  waited=0
  while [ "$waited" -lt 600 ] && [ ! -e /var/lib/habuild/firstboot.done ] &&
    systemctl is-active --quiet habuild-firstboot.service; do
    sleep 1
    waited=$((waited + 1))
  done
fi
report=$(
  echo "state $(systemctl is-system-running --wait)"
  systemctl --failed --plain --no-legend | while read -r unit _; do echo "failed $unit"; done
  echo "hostname $(cat /etc/hostname)"
  if [ -f /var/lib/habuild/firstboot.status ]; then
    echo "firstboot $(cat /var/lib/habuild/firstboot.status)"
  fi
  if [ -e /etc/habuild/firstboot.env ]; then
    echo "firstboot_condition $(systemctl show -p ConditionResult --value habuild-firstboot.service)"
  fi
  for u in $(systemctl list-unit-files --plain --no-legend | cut -d' ' -f1); do
    case $u in realServer.service|kubelet.service|crio.service|keepalived.service|systemd-networkd.service|habuild-*.service)
      echo "unit $u $(systemctl is-enabled "$u" 2>/dev/null) $(systemctl is-active "$u" 2>/dev/null)";;
    esac
  done
  ip -o -4 addr show | while read -r _ dev _ cidr _; do echo "addr $dev $cidr"; done
  find /etc /usr/local /root /usr/lib/systemd/system -type f ! -path '*/habuild-check*' 2>/dev/null | sort | xargs -r sha256sum | sed 's/^/sha256 /'
  # The root partition and its ext4 after first-boot growth (the harness
  # boots a copy larger than the image). Found by major:minor, as
  # growroot.sh finds it: the mount source may read /dev/root.
  majmin=$(findmnt --noheadings --raw --output MAJ:MIN --mountpoint /)
  rootdev=/dev/$(basename "$(readlink -f "/sys/dev/block/$majmin")")
  super=$(dumpe2fs -h "$rootdev" 2>/dev/null)
  field() { printf '%s\n' "$super" | sed -n "s/^$1: *//p"; }
  echo "rootfs $(blockdev --getsize64 "$rootdev") $(field 'Block count') $(field 'Block size')"
  echo "rootfeatures $(field 'Filesystem features')"
  echo "target $(systemctl is-active multi-user.target)"
)
for copy in 1 2; do
  printf '%s\n' "$report" | seal_block HABUILD-BEGIN HABUILD-END "$copy"
done
echo HABUILD-DONE
