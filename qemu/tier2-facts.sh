#!/bin/sh
# Runs inside a tier-2 test guest (habuild test --tier 2) from
# habuild-t2-facts.service, added to a throw-away copy of the image only.
# Every few seconds it prints what the harness needs between sentinel
# lines; it judges nothing itself. Lines: "<key> <value...>".
# Kernel messages are kept off the shared console (they can land inside a
# line), and each block ends with the sha256 of its lines so that the
# harness can tell an intact block from a garbled one.
# shellcheck source=seal.sh
. "$(dirname "$0")/seal.sh"
dmesg -n 1 2>/dev/null || :
vip=$(sed -n 's/^HABUILD_VIP=//p' /etc/habuild/firstboot.env 2>/dev/null)
klog=/run/habuild-t2-klog
klog_cursor=/run/habuild-t2-klog.cursor
rm -f "$klog" "$klog_cursor"
seq=0
while :; do
    seq=$((seq + 1))
    block=$(
        echo "hostname $(cat /etc/hostname)"
        echo "state $(systemctl is-system-running)"
        if [ -f /var/lib/habuild-test-doubles/kubeadm.log ]; then
            sed 's/^/kubeadm /' /var/lib/habuild-test-doubles/kubeadm.log
        fi
        if [ -f /var/lib/habuild-test-doubles/kubelet.log ]; then
            sed 's/^/kubelet /' /var/lib/habuild-test-doubles/kubelet.log
        fi
        if [ -f /var/lib/habuild/firstboot.status ]; then
            echo "firstboot $(cat /var/lib/habuild/firstboot.status)"
        fi
        if [ -n "$vip" ]; then
            if [ -n "$(ip -4 -o addr show dev lo to "$vip/32")" ]; then
                echo "vip_on_lo yes"
            else
                echo "vip_on_lo no"
            fi
            since=$(systemctl show -p ActiveEnterTimestamp --value realServer.service)
            if [ -n "$since" ]; then
                echo "realserver_since $(date -d "$since" +%s)"
            fi
            echo "apiserver_double $(systemctl is-active habuild-test-double-apiserver.service)"
        fi
        if command -v ipvsadm >/dev/null 2>&1; then
            ipvsadm -L -n 2>&1 | sed 's/^/ipvs /'
            echo "keepalived $(systemctl is-active keepalived.service)"
            ip -4 -o addr show | awk '{print "addr " $2 " " $4}'
            # Only the entries since the last block are read (reading the
            # whole boot's journal every few seconds was most of what an
            # emulated guest spent its time on); the lines kept so far are
            # repeated, as the harness compares counts across blocks.
            journalctl -b -u keepalived.service --no-pager -o short-unix \
                --cursor-file="$klog_cursor" 2>/dev/null |
                grep -E 'TCP_CHECK|Removing service|Adding service|Entering (MASTER|BACKUP)|TCP connection' |
                sed 's/^/klog /' >>"$klog"
            cat "$klog"
        fi
    )
    printf '%s\n' "$block" | seal_block HABUILD-T2-BEGIN HABUILD-T2-END "$seq"
    sleep 3
done
