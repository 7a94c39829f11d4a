#!/bin/sh
# Runs inside a tier-3 test guest (habuild test --tier 3: the real
# Kubernetes cluster) from habuild-t3-facts.service, added to a throw-away
# copy of the image only. Every few seconds it prints what the harness needs
# between the sentinel lines of tier 2 (the harness reads both with
# builder/src/qemu/tier2/facts.rs); it judges nothing itself. Lines: "<key> <value...>".
# The real programs are slow under emulation, so the block is cheap: unit
# states and files; kubectl only once the node has an admin kubeconfig.
# shellcheck source=seal.sh
. "$(dirname "$0")/seal.sh"
dmesg -n 1 2>/dev/null || :
vip=$(sed -n 's/^HABUILD_VIP=//p' /etc/habuild/firstboot.env 2>/dev/null)
admin=/etc/kubernetes/admin.conf
# The journals are read from where the last block stopped (a cursor file),
# not from the boot's start every time: under emulation, re-reading a
# growing journal every few seconds took much of an idle guest's CPU.
fblog=/run/habuild-t3-fblog
fberr=/run/habuild-t3-fberr
klog=/run/habuild-t3-klog
fbtail=/run/habuild-t3-fbtail
kubectl_said=/run/habuild-t3-kubectl
ctr_said=/run/habuild-t3-containers
ctr_log=/run/habuild-t3-container-logs
kubelet_tail=/run/habuild-t3-kubelet-tail
cpu_said=/run/habuild-t3-cpu
rm -f "$fblog" "$fberr" "$fbtail" "$klog" "$kubectl_said".* "$ctr_said" "$ctr_log" "$kubelet_tail" "$cpu_said" /run/habuild-t3-*.cursor
# kubectl is a Go program started under emulation and a request to an API
# server that may still be starting: once every this many blocks.
kubectl_every=6
seq=0
while :; do
    seq=$((seq + 1))
    block=$(
        echo "hostname $(cat /etc/hostname)"
        echo "state $(systemctl is-system-running)"
        echo "uptime $(cut -d' ' -f1 /proc/uptime)"
        if [ -f /var/lib/habuild/firstboot.status ]; then
            echo "firstboot $(cat /var/lib/habuild/firstboot.status)"
        fi
        for u in habuild-load-images crio kubelet habuild-firstboot realServer keepalived; do
            s=$(systemctl is-active "$u.service" 2>/dev/null)
            [ "$s" = inactive ] && ! systemctl cat "$u.service" >/dev/null 2>&1 && continue
            echo "unit $u $s"
        done
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
        fi
        # When first boot ran kubeadm: its start and end, and kubeadm's own
        # complaints for a failed attempt's report, from the journal.
        journalctl -b -u habuild-firstboot.service --no-pager -o short-unix \
            --cursor-file=/run/habuild-t3-fb.cursor 2>/dev/null |
            grep -v '^-- ' >/run/habuild-t3-fb.new
        grep -E 'running: kubeadm|succeeded|failed|VIP' /run/habuild-t3-fb.new >>"$fblog"
        cut -d' ' -f4- /run/habuild-t3-fb.new | grep -iE 'error|timed out|unhealthy|could not' |
            cut -c1-400 >>"$fberr"
        tail -n 8 "$fblog" | sed 's/^/fblog /'
        # Where a long kubeadm step stands: the last lines, whatever they say.
        cut -d' ' -f4- /run/habuild-t3-fb.new | cat "$fbtail" - 2>/dev/null | tail -n 4 | cut -c1-300 >"$fbtail.new"
        mv "$fbtail.new" "$fbtail"
        sed 's/^/fbtail /' "$fbtail"
        tail -n 12 "$fberr" | sed 's/^/fberr /'
        # What kubectl last said is repeated in every block until it is asked again.
        if [ -f "$admin" ] && [ $((seq % kubectl_every)) -eq 1 ]; then
            timeout 20 kubectl --kubeconfig "$admin" get nodes --no-headers 2>/dev/null |
                awk '{print "node " $1 " " $2}' >"$kubectl_said.nodes"
            timeout 20 kubectl --kubeconfig "$admin" get pods -n kube-system --no-headers 2>/dev/null |
                awk '{print "pod " $1 " " $2 " " $3 " " $4}' >"$kubectl_said.pods.new"
            # A busy API server that gave no list keeps the last one it gave.
            if [ -s "$kubectl_said.pods.new" ]; then
                mv "$kubectl_said.pods.new" "$kubectl_said.pods"
            fi
        fi
        cat "$kubectl_said.nodes" "$kubectl_said.pods" 2>/dev/null
        # The containers the kubelet started (name, state, restarts) and
        # the kubelet's last complaints: where a join that waits on its own
        # local API server (kubeadm 1.36 bootstraps a joining control
        # plane's kubelet against it) stands.
        if [ $((seq % kubectl_every)) -eq 1 ] && [ "$(systemctl is-active crio.service)" = active ]; then
            # The table's CREATED column has spaces ("2 minutes ago"): the
            # state is found by its value, and NAME and ATTEMPT follow it.
            timeout 20 crictl --runtime-endpoint unix:///var/run/crio/crio.sock ps -a 2>/dev/null |
                awk 'NR > 1 { for (i = 1; i <= NF; i++) if ($i ~ /^(Running|Exited|Created|Unknown)$/) { print "ctr " $(i + 1) " " $i " " $(i + 2); break } }' \
                >"$ctr_said.new"
            mv "$ctr_said.new" "$ctr_said"
            # Why etcd or the API server last stopped or stalls: the last
            # complaints of its newest container, read from the kubelet's
            # log files (no crictl call: every Go program started costs an
            # emulated guest a second or more). etcd logs JSON with a level.
            for c in etcd kube-apiserver; do
                # shellcheck disable=SC2012 # kubelet-made names, no odd characters
                log=$(ls -t /var/log/pods/kube-system_"$c"-*/"$c"/*.log 2>/dev/null | head -n 1)
                [ -n "$log" ] || continue
                tail -n 60 "$log" | cut -d' ' -f4- |
                    grep -E '"level":"(warn|error|fatal|panic)"|^[EF][0-9]' | tail -n 3 | cut -c1-300 |
                    sed "s/^/ctr_log $c /"
            done >"$ctr_log.new"
            mv "$ctr_log.new" "$ctr_log"
        fi
        # Where the guest's CPU goes (under emulation the control plane
        # alone can fill the host's cores): the load and the processes with
        # the most CPU time so far. ps is not a Go program: cheap.
        if [ $((seq % kubectl_every)) -eq 1 ]; then
            {
                echo "cpu load $(cut -d' ' -f1-3 /proc/loadavg)"
                ps -eo comm=,time= --sort=-time 2>/dev/null | head -n 6 |
                    awk '{print "cpu " $1 " " $2}'
            } >"$cpu_said"
        fi
        cat "$ctr_said" "$ctr_log" "$cpu_said" 2>/dev/null
        journalctl -b -u kubelet.service --no-pager -o cat \
            --cursor-file=/run/habuild-t3-kubelet.cursor 2>/dev/null | grep -v '^-- ' |
            grep -E '^E[0-9]|error|failed' | cut -c1-300 | cat "$kubelet_tail" - 2>/dev/null |
            tail -n 4 >"$kubelet_tail.new"
        mv "$kubelet_tail.new" "$kubelet_tail"
        sed 's/^/kubelet_tail /' "$kubelet_tail"
        if command -v ipvsadm >/dev/null 2>&1; then
            ipvsadm -L -n 2>&1 | sed 's/^/ipvs /'
            echo "keepalived $(systemctl is-active keepalived.service)"
            ip -4 -o addr show | awk '{print "addr " $2 " " $4}'
            journalctl -b -u keepalived.service --no-pager -o short-unix \
                --cursor-file=/run/habuild-t3-klog.cursor 2>/dev/null |
                grep -E 'TCP_CHECK|Removing service|Adding service|Entering (MASTER|BACKUP)|TCP connection' |
                sed 's/^/klog /' >>"$klog"
            cat "$klog"
        fi
        case $(cat /var/lib/habuild/firstboot.status 2>/dev/null) in
            failed*)
                journalctl -b --no-pager -n 40 -u habuild-firstboot -u kubelet -u crio -u habuild-load-images 2>/dev/null |
                    cut -c1-300 | sed 's/^/journal /'
                ;;
        esac
    )
    printf '%s\n' "$block" | seal_block HABUILD-T2-BEGIN HABUILD-T2-END "$seq"
    sleep 5
done
