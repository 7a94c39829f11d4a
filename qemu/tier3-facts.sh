#!/bin/sh
# Runs inside a tier-3 test guest (habuild test --tier 3: the real
# Kubernetes cluster) from habuild-t3-facts.service, added to a throw-away
# copy of the image only. Every few seconds it prints what the harness needs
# between the sentinel lines of tier 2 (the harness reads both with
# builder/src/qemu/tier2/facts.rs); it judges nothing itself. Lines: "<key> <value...>".
#
# The observer must not starve what it observes: under TCG every program
# started costs the guest tens of milliseconds, and the first version of
# this loop (about 40 programs a block, a block every 5 s) took a director
# about a quarter of a host core doing nothing else. So a block starts few
# programs (one systemctl for all units, one awk per journal), the slow
# questions (kubectl, crictl, container logs, ps) come every few blocks,
# and a control plane's blocks are 15 s apart; a director's are too until
# IPVS has listed every control plane for 2 minutes, then 5 s apart, as the
# failovers' timing reads its IPVS table (T3_FACT_PERIOD in
# builder/src/qemu/tier3/failover.rs).
#
# A test runs it on the host against stand-in programs: HABUILD_T3_ROOT
# prefixes the guest's files it reads, HABUILD_T3_RUN is where it keeps its
# state (/run), HABUILD_T3_BLOCKS stops it after that many blocks,
# HABUILD_T3_PERIOD replaces the seconds between two and HABUILD_T3_SETTLE
# a director's 120 s of full IPVS listing before its blocks speed up.
#
# The harness may give a control plane more vCPUs for its first boot than
# for the rest of the run (habuild test --init-node-cpus): the kernel
# command line's habuild.t3_cpus_after_first_boot=N. Once first boot is
# done this script takes every vCPU from the N-th on offline, so that the
# node leaves the host's cores to the joiners as a node of N vCPUs would
# (an idle vCPU costs the host nothing, a busy one competes for a core).
# shellcheck source=seal.sh
. "$(dirname "$0")/seal.sh"
root=${HABUILD_T3_ROOT:-}
run=${HABUILD_T3_RUN:-/run}
blocks=${HABUILD_T3_BLOCKS:-0}
dmesg -n 1 2>/dev/null || :
vip=$(sed -n 's/^HABUILD_VIP=//p' "$root/etc/habuild/firstboot.env" 2>/dev/null)
read -r hostname <"$root/etc/hostname"
admin=$root/etc/kubernetes/admin.conf
if command -v ipvsadm >/dev/null 2>&1; then
    director=yes
    # 15 s until IPVS lists every real server keepalived.conf names, 5 s
    # from then on (see fast_once_all_listed).
    period=15
    # the slow questions every this many blocks (for a director: its
    # state and keepalived's journal)
    every=6
    real_servers=$(grep -c '^[[:space:]]*real_server ' "$root/etc/keepalived/keepalived.conf" 2>/dev/null)
else
    director=no
    period=15
    every=3
fi
# This unit's own CPU time so far, from its cgroup (cgroup v2), so that the
# report can say what observing cost the guest.
observer_cgroup=$root/sys/fs/cgroup/system.slice/habuild-t3-facts.service
cpus=$root/sys/devices/system/cpu
cpus_after=$(sed -n 's/.*habuild\.t3_cpus_after_first_boot=\([0-9][0-9]*\).*/\1/p' "$root/proc/cmdline" 2>/dev/null)
# The journals are read from where the last block stopped (a cursor file),
# not from the boot's start every time. Each keeps its last lines in a file.
fblog=$run/habuild-t3-fblog
fberr=$run/habuild-t3-fberr
klog=$run/habuild-t3-klog
fbtail=$run/habuild-t3-fbtail
kubectl_said=$run/habuild-t3-kubectl
ctr_said=$run/habuild-t3-containers
ctr_log=$run/habuild-t3-container-logs
kubelet_tail=$run/habuild-t3-kubelet-tail
cpu_said=$run/habuild-t3-cpu
system_state=$run/habuild-t3-state
rm -f "$system_state"
rm -f "$fblog" "$fberr" "$fbtail" "$klog" "$kubectl_said".* "$ctr_said" "$ctr_log" "$kubelet_tail" "$cpu_said" "$run"/habuild-t3-*.cursor
touch "$fblog" "$fberr" "$fbtail" "$klog" "$kubelet_tail"

# first boot's new journal lines (short-unix) on stdin: keeps the last 8
# kubeadm/VIP lines (with their times), the last 12 complaints and the last
# 4 lines whatever they say, and prints the three.
first_boot_lines() {
    awk -v fblog="$fblog" -v fberr="$fberr" -v fbtail="$fbtail" '
        function keep(file, n, pre,    i, m, line, kept) {
            m = 0
            while ((getline line < file) > 0) kept[++m] = line
            close(file)
            for (i = 1; i <= added[file]; i++) kept[++m] = new[file, i]
            printf "" > file
            for (i = (m > n ? m - n + 1 : 1); i <= m; i++) {
                print kept[i] > file
                print pre kept[i]
            }
            close(file)
        }
        function add(file, line) { new[file, ++added[file]] = line }
        /^-- / { next }
        {
            text = $0
            sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", text)
            if ($0 ~ /running: kubeadm|succeeded|failed|VIP/) add(fblog, $0)
            if (tolower(text) ~ /error|timed out|unhealthy|could not/) add(fberr, substr(text, 1, 400))
            add(fbtail, substr(text, 1, 300))
        }
        END {
            keep(fblog, 8, "fblog ")
            keep(fbtail, 4, "fbtail ")
            keep(fberr, 12, "fberr ")
        }'
}

# Takes vCPU $1 and every one after it offline.
offline_cpus_from() {
    for c in "$cpus"/cpu[0-9]*; do
        n=${c##*/cpu}
        if [ "$n" -ge "$1" ] && [ -e "$c/online" ]; then
            echo 0 >"$c/online" || echo "could not take vCPU $n offline" >&2
        fi
    done
}

# A director's blocks come every 15 s while the control planes form (no
# timing is read from them then, and a director idling under TCG takes CPU
# from the joins) and every 5 s once IPVS has listed every real server for
# $settle seconds: the failovers' timing reads its IPVS table and VRRP
# state. keepalived lists every real server when it starts, before its
# first checks (no "alpha"), and takes a dead one out only after its
# TCP_CHECK window (about a minute), hence the wait. Once fast, it stays
# fast (a failover takes a real server out).
settle=${HABUILD_T3_SETTLE:-120}
all_listed_since=
fast_once_all_listed() {
    [ "$director" = yes ] && [ "$period" != 5 ] || return 0
    # Counted in the block just printed, not by asking ipvsadm again.
    listed=0
    while read -r key arrow _ method _; do
        [ "$key $arrow $method" = "ipvs -> Route" ] && listed=$((listed + 1))
    done <<EOF_BLOCK
$block
EOF_BLOCK
    read -r now _ </proc/uptime
    now=${now%.*}
    if [ -n "$real_servers" ] && [ "$real_servers" -gt 0 ] && [ "$listed" -ge "$real_servers" ]; then
        all_listed_since=${all_listed_since:-$now}
        [ $((now - all_listed_since)) -ge "$settle" ] && period=5
    else
        all_listed_since=
    fi
}

# Once a control plane's first boot is done, its journal has nothing new
# for the harness, which then reads the cluster through the VIP: the slow
# questions come every 8th block instead of every 3rd, and first boot's
# journal is read once more and then no longer (its kept lines are
# repeated).
first_boot_done=no
fb_journal_read_after_done=no
last_slow=-1000
seq=0
while :; do
    seq=$((seq + 1))
    done_state=
    if [ -f "$root/var/lib/habuild/firstboot.status" ]; then
        read -r done_state <"$root/var/lib/habuild/firstboot.status"
    fi
    case $done_state in
        initialised | joined)
            [ "$first_boot_done" = yes ] && fb_journal_read_after_done=yes
            first_boot_done=yes
            [ "$director" = no ] && every=8
            if [ -n "$cpus_after" ]; then
                offline_cpus_from "$cpus_after"
                cpus_after=
            fi
            ;;
    esac
    slow=no
    if [ $((seq - last_slow)) -ge "$every" ]; then
        slow=yes
        last_slow=$seq
    fi
    read -r uptime _ </proc/uptime
    block=$(
        echo "hostname $hostname"
        # The manager's state (a D-Bus round trip) with the slow questions.
        if [ "$slow" = yes ] || [ ! -s "$system_state" ]; then
            systemctl is-system-running >"$system_state" 2>/dev/null
        fi
        read -r state <"$system_state"
        echo "state $state"
        echo "uptime $uptime"
        if [ -f "$root/var/lib/habuild/firstboot.status" ]; then
            read -r status <"$root/var/lib/habuild/firstboot.status"
            echo "firstboot $status"
        fi
        # One systemctl for every unit: "unit NAME STATE" for the ones the
        # image has, and realServer's start (epoch seconds) once it started.
        systemctl show --timestamp=unix -p Id -p LoadState -p ActiveState -p ActiveEnterTimestamp \
            habuild-load-images.service crio.service kubelet.service habuild-firstboot.service \
            realServer.service keepalived.service 2>/dev/null |
            awk -F= -v vip="$vip" '
                function done() {
                    if (id != "" && load != "not-found") {
                        name = id; sub(/\.service$/, "", name)
                        print "unit " name " " state
                        if (name == "keepalived") print "keepalived " state
                        if (name == "realServer" && vip != "" && since ~ /^@[0-9]+$/)
                            print "realserver_since " substr(since, 2)
                    }
                    id = load = state = since = ""
                }
                /^$/ { done(); next }
                $1 == "Id" { id = $2 }
                $1 == "LoadState" { load = $2 }
                $1 == "ActiveState" { state = $2 }
                $1 == "ActiveEnterTimestamp" { since = $2 }
                END { done() }'
        echo "fact_period $period"
        if [ -r "$observer_cgroup/cpu.stat" ]; then
            while read -r stat value; do
                [ "$stat" = usage_usec ] && echo "observer_cpu_usec $value"
            done <"$observer_cgroup/cpu.stat"
        fi
        if [ -r "$cpus/online" ]; then
            read -r online <"$cpus/online"
            echo "cpus_online $online"
        fi
        if [ -n "$vip" ]; then
            if [ -n "$(ip -4 -o addr show dev lo to "$vip/32")" ]; then
                echo "vip_on_lo yes"
            else
                echo "vip_on_lo no"
            fi
        fi
        if [ "$director" = no ] && [ "$fb_journal_read_after_done" = yes ]; then
            first_boot_lines </dev/null
        elif [ "$director" = no ]; then
            journalctl -b -u habuild-firstboot.service --no-pager -o short-unix \
                --cursor-file="$run/habuild-t3-fb.cursor" 2>/dev/null | first_boot_lines
        fi
        # The slow questions: kubectl (a Go program, and a request to an API
        # server that may still be starting), crictl, the containers' and
        # the kubelet's last complaints, and where the guest's CPU goes.
        # What they said is repeated in every block until they are asked again.
        if [ "$slow" = yes ] && [ "$director" = no ]; then
            if [ -f "$admin" ]; then
                # One kubectl for both lists (each start costs a TCG guest
                # about a second): asked for two kinds, it names each row
                # "node/NAME" or "pod/NAME".
                timeout 30 kubectl --kubeconfig "$admin" get nodes,pods -n kube-system --no-headers 2>/dev/null |
                    awk -v nodes="$kubectl_said.nodes" -v pods="$kubectl_said.pods.new" '
                        BEGIN { printf "" > nodes; printf "" > pods }
                        $1 ~ /^node\// { sub(/^node\//, "", $1); print "node " $1 " " $2 > nodes }
                        $1 ~ /^pod\// { sub(/^pod\//, "", $1); print "pod " $1 " " $2 " " $3 " " $4 > pods }'
                # A busy API server that gave no list keeps the last one it gave.
                if [ -s "$kubectl_said.pods.new" ]; then
                    mv "$kubectl_said.pods.new" "$kubectl_said.pods"
                fi
            fi
            if [ "$(systemctl is-active crio.service)" = active ]; then
                # The table's CREATED column has spaces ("2 minutes ago"): the
                # state is found by its value, and NAME and ATTEMPT follow it.
                timeout 20 crictl --runtime-endpoint unix:///var/run/crio/crio.sock ps -a 2>/dev/null |
                    awk 'NR > 1 { for (i = 1; i <= NF; i++) if ($i ~ /^(Running|Exited|Created|Unknown)$/) { print "ctr " $(i + 1) " " $i " " $(i + 2); break } }' \
                        >"$ctr_said"
                # Why etcd or the API server last stopped or stalls: the last
                # complaints of its newest container, from the kubelet's log
                # files. etcd logs JSON with a level.
                for c in etcd kube-apiserver; do
                    # shellcheck disable=SC2012 # kubelet-made names, no odd characters
                    log=$(ls -t "$root"/var/log/pods/kube-system_"$c"-*/"$c"/*.log 2>/dev/null | head -n 1)
                    [ -n "$log" ] || continue
                    tail -n 60 "$log" | awk -v c="$c" '
                        { sub(/^[^ ]+ [^ ]+ [^ ]+ /, "") }
                        /"level":"(warn|error|fatal|panic)"|^[EF][0-9]/ { l[++n] = substr($0, 1, 300) }
                        END { for (i = (n > 3 ? n - 2 : 1); i <= n; i++) print "ctr_log " c " " l[i] }'
                done >"$ctr_log"
            fi
            {
                echo "cpu load $(cut -d' ' -f1-3 /proc/loadavg)"
                ps -eo comm=,time= --sort=-time 2>/dev/null | awk 'NR <= 6 {print "cpu " $1 " " $2}'
            } >"$cpu_said"
            journalctl -b -u kubelet.service --no-pager -o cat \
                --cursor-file="$run/habuild-t3-kubelet.cursor" 2>/dev/null |
                awk -v f="$kubelet_tail" '
                    !/^-- / && (/^E[0-9]/ || /error|failed/) { l[++n] = substr($0, 1, 300) }
                    END {
                        while ((getline line < f) > 0) old[++m] = line
                        close(f)
                        for (i = 1; i <= n; i++) old[++m] = l[i]
                        printf "" > f
                        for (i = (m > 4 ? m - 3 : 1); i <= m; i++) print old[i] > f
                    }'
        fi
        if [ "$director" = no ]; then
            cat "$kubectl_said.nodes" "$kubectl_said.pods" "$ctr_said" "$ctr_log" "$cpu_said" 2>/dev/null
            sed 's/^/kubelet_tail /' "$kubelet_tail"
        else
            ipvsadm -L -n 2>&1 | sed 's/^/ipvs /'
            ip -4 -o addr show | awk '{print "addr " $2 " " $4}'
            # keepalived's new journal lines with the slow questions; the
            # kept ones in every block.
            if [ "$slow" = yes ]; then
                journalctl -b -u keepalived.service --no-pager -o short-unix \
                    --cursor-file="$run/habuild-t3-klog.cursor" 2>/dev/null
            fi </dev/null |
                awk -v f="$klog" '
                    /TCP_CHECK|Removing service|Adding service|Entering (MASTER|BACKUP)|TCP connection/ { l[++n] = $0 }
                    END {
                        for (i = 1; i <= n; i++) print l[i] >> f
                        close(f)
                        while ((getline line < f) > 0) print "klog " line
                    }'
        fi
        case $status in
            failed*)
                journalctl -b --no-pager -n 40 -u habuild-firstboot -u kubelet -u crio -u habuild-load-images 2>/dev/null |
                    cut -c1-300 | sed 's/^/journal /'
                ;;
        esac
    )
    printf '%s\n' "$block" | seal_block HABUILD-T2-BEGIN HABUILD-T2-END "$seq"
    [ "$seq" = "$blocks" ] && exit 0
    fast_once_all_listed
    sleep "${HABUILD_T3_PERIOD:-$period}"
done
