#!/bin/sh
# Runs inside a test guest (habuild test, tier 1) from habuild-check.service.
# It judges nothing itself: it prints facts between sentinel lines and the
# harness compares them with the manifest and <node>.json.
echo HABUILD-BEGIN
echo "state $(systemctl is-system-running --wait)"
systemctl --failed --plain --no-legend | while read -r unit _; do echo "failed $unit"; done
echo "hostname $(cat /etc/hostname)"
for u in $(systemctl list-unit-files --plain --no-legend | cut -d' ' -f1); do
  case $u in realServer.service|kubelet.service|crio.service|keepalived.service|systemd-networkd.service|habuild-*.service)
    echo "unit $u $(systemctl is-enabled "$u" 2>/dev/null) $(systemctl is-active "$u" 2>/dev/null)";;
  esac
done
ip -o -4 addr show | while read -r _ dev _ cidr _; do echo "addr $dev $cidr"; done
find /etc /usr/local /root /usr/lib/systemd/system -type f ! -path '*/habuild-check*' 2>/dev/null | sort | xargs -r sha256sum | sed 's/^/sha256 /'
echo "target $(systemctl is-active multi-user.target)"
echo HABUILD-END
