#!/bin/sh
# Installed by habuild; run by habuild-firstboot.service at boot until it has
# succeeded once. Forms the HA control plane in the seed document's order:
#
#   init node (first control plane of the manifest): realServer up (the VIP
#     on lo) BEFORE `kubeadm init`, so this node reaches the VIP, through the
#     director, at itself;
#   every other control plane: wait until the VIP answers on the API port,
#     `kubeadm join --control-plane`, and only THEN realServer up (with the
#     VIP on lo before the join, the join's requests to the VIP would stay on
#     this node, where no API server runs yet).
#
# Runs once: $STATE_DIR/firstboot.done marks success. A power cut part-way
# is recovered on the next boot: after kubeadm finished, the remaining steps
# run; during kubeadm, the node is reset (`kubeadm reset -f`, then the baked
# PKI restored, which the reset deletes) and kubeadm runs again.
# Every step is logged (stdout: the journal); $STATE_DIR/firstboot.status
# says where the node stands: starting, initialising, initialised,
# waiting-for-vip, joining, joined, or "failed: <reason>".
#
# Every path and command can be replaced through the environment (the
# defaults are the image's), so the script runs on a build host against
# test doubles of kubeadm, systemctl and the VIP probe.
set -u

: "${HABUILD_ACTION:=}"
: "${HABUILD_VIP:=}"
: "${HABUILD_API_PORT:=6443}"
: "${HABUILD_STATE_DIR:=/var/lib/habuild}"
: "${HABUILD_KUBEADM_DIR:=/etc/habuild/kubeadm}"
: "${HABUILD_PKI_DIR:=/etc/kubernetes/pki}"
: "${HABUILD_RUN_DIR:=/run/habuild}"
: "${HABUILD_KUBEADM:=kubeadm}"
: "${HABUILD_SYSTEMCTL:=systemctl}"
: "${HABUILD_KUBECTL:=kubectl}"
: "${HABUILD_KUBE_DIR:=/etc/kubernetes}"
: "${HABUILD_KUBELET_DIR:=/var/lib/kubelet}"
: "${HABUILD_VIP_PROBE:=/usr/local/lib/habuild/vip-probe}"
: "${HABUILD_SLEEP:=sleep}"
: "${HABUILD_IP:=ip}"
# The directors' addresses (space-separated): a joiner's API port does not
# answer them until it is joined (hold_out_of_pool).
: "${HABUILD_DIRECTORS=}"
# VIP probes: bounded, with a delay doubling from VIP_DELAY up to
# VIP_MAX_DELAY seconds (90 tries: about 40 minutes, time for the init node
# to pull its images). The unit restarts the script after a failure.
: "${HABUILD_VIP_TRIES:=90}"
: "${HABUILD_VIP_DELAY:=2}"
: "${HABUILD_VIP_MAX_DELAY:=30}"
# kubeadm init/join attempts per run, with a reset and a pause between.
: "${HABUILD_ATTEMPTS:=3}"
: "${HABUILD_RETRY_DELAY:=30}"
# The init node's add-ons (CoreDNS, kube-proxy) are a phase of their own,
# retried alone: kubeadm creates them with 10 s requests, which a busy API
# server on an SD card (or under emulation) can miss, and a failure there
# must not reset a control plane that works.
: "${HABUILD_ADDON_ATTEMPTS:=10}"
# The kubeadm add-on phases the manifest's [addons] turn on (empty: none).
: "${HABUILD_ADDONS=coredns kube-proxy}"
# A join that failed from its etcd-join phase on: tries (RETRY_DELAY
# apart) to finish it from that phase; after adding this node to etcd,
# then tries (about 10 minutes) for the cluster to answer before the reset.
# The node's own API server, asked for /readyz (LOCAL_API_TRIES times,
# LOCAL_API_DELAY seconds apart) before its controller-manager and
# scheduler start (join_after_etcd).
: "${HABUILD_NODE_ADDRESS:=}"
: "${HABUILD_LOCAL_API_TRIES:=60}"
: "${HABUILD_LOCAL_API_DELAY:=15}"
: "${HABUILD_FINISH_TRIES:=5}"
: "${HABUILD_MEMBER_TRIES:=20}"

STATUS=$HABUILD_STATE_DIR/firstboot.status
DONE=$HABUILD_STATE_DIR/firstboot.done
# "kubeadm-started" while kubeadm may have changed the node, "kubeadm-done"
# once it succeeded; absent before the first attempt and after a reset.
PHASE=$HABUILD_STATE_DIR/firstboot.phase
# The CA material as baked into the image: `kubeadm reset` empties the PKI
# directory, and a retry needs the cluster's CAs back, not new ones.
SAVED_PKI=$HABUILD_STATE_DIR/firstboot-pki
# Present when a reset could not remove this node's etcd member: joining
# again would bring back, with empty data, a member the cluster still
# counts. A person removes the member, then this file.
MEMBER_LEFT=$HABUILD_STATE_DIR/firstboot.etcd-member-left
MEMBER_LEFT_HELP="remove it by hand (etcdctl member remove on a working control plane), then delete $MEMBER_LEFT"
# Present once this node's etcd member is in (kubeadm's etcd-join phase
# succeeded: added, caught up, promoted, the cluster available); a reset
# removes it.
ETCD_JOINED=$HABUILD_STATE_DIR/firstboot.etcd-joined
# Where first boot keeps the controller-manager's and scheduler's manifests
# while the node's new API server starts alone.
HELD_MANIFESTS=$HABUILD_STATE_DIR/firstboot-held-manifests
LATER_COMPONENTS="kube-controller-manager kube-scheduler"
# This node's JoinConfiguration (a join's only input).
JOIN_CONFIG=$HABUILD_KUBEADM_DIR/kubeadm.yaml
PKI_FILES="ca.crt ca.key sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key"

log() {
    echo "habuild-firstboot: $*"
}

# kubeadm ARGS...: logged, then run (the journal says which step failed).
kubeadm_logged() {
    log "running: $HABUILD_KUBEADM $*"
    "$HABUILD_KUBEADM" "$@"
}

status() {
    printf '%s\n' "$1" >"$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"
    log "status: $1"
}

# fail REASON [EXIT]: exit 2 marks what a restart cannot fix (the unit's
# RestartPreventExitStatus=2); 1 is retried by the unit.
fail() {
    status "failed: $1"
    exit "${2:-1}"
}

phase() {
    printf '%s\n' "$1" >"$PHASE.tmp" && mv -f "$PHASE.tmp" "$PHASE"
}

save_pki() {
    if [ -d "$SAVED_PKI" ]; then
        return 0
    fi
    for f in $PKI_FILES; do
        [ -f "$HABUILD_PKI_DIR/$f" ] ||
            fail "the image lacks $HABUILD_PKI_DIR/$f (was it built with the cluster's secrets?)" 2
    done
    rm -rf "$SAVED_PKI.tmp"
    mkdir -m 700 "$SAVED_PKI.tmp" "$SAVED_PKI.tmp/etcd" || fail "cannot save the PKI to $SAVED_PKI"
    for f in $PKI_FILES; do
        cp -p "$HABUILD_PKI_DIR/$f" "$SAVED_PKI.tmp/$f" || fail "cannot save $HABUILD_PKI_DIR/$f"
    done
    # Complete or absent: a power cut while copying leaves only the .tmp.
    mv "$SAVED_PKI.tmp" "$SAVED_PKI" || fail "cannot save the PKI to $SAVED_PKI"
    sync
    log "saved the baked PKI to $SAVED_PKI"
}

restore_pki() {
    mkdir -p "$HABUILD_PKI_DIR/etcd" || fail "cannot create $HABUILD_PKI_DIR"
    for f in $PKI_FILES; do
        cp -p "$SAVED_PKI/$f" "$HABUILD_PKI_DIR/$f" || fail "cannot restore $HABUILD_PKI_DIR/$f"
    done
    log "restored the cluster's PKI in $HABUILD_PKI_DIR"
}

# A join that got as far as etcd left this node a member of the cluster's
# etcd: `kubeadm reset` removes the member through the API and then wipes
# the member's data whether or not that worked. A member whose data is
# wiped but which the cluster still counts cannot come back (its etcd
# panics on the lost log), and with two members the cluster then has no
# quorum. So the reset waits until the API answers (this node's etcd keeps
# running meanwhile, which is what a two-member etcd needs), and leaves the
# node as it is when it never does.
wait_for_cluster_before_reset() {
    joined_etcd || return 0
    try=1
    while :; do
        if "$HABUILD_KUBECTL" --kubeconfig "$HABUILD_KUBE_DIR/admin.conf" --request-timeout=20s \
            -n kube-system get configmap kubeadm-config -o name >/dev/null; then
            log "the cluster answers: kubeadm reset can remove this node's etcd member"
            return 0
        fi
        if [ "$try" -ge "$HABUILD_MEMBER_TRIES" ]; then
            fail "kubeadm join failed after adding this node to etcd, and the cluster did not answer in $try tries: the node is left as it is, its etcd member still counted (remove it by hand with etcdctl member remove, or power this node off and on to try again)" 2
        fi
        log "the cluster does not answer yet (try $try/$HABUILD_MEMBER_TRIES): waiting before kubeadm reset removes this node's etcd member"
        "$HABUILD_SLEEP" "$HABUILD_RETRY_DELAY"
        try=$((try + 1))
    done
}

# The phases of `kubeadm join` that come before etcd-join: done once the
# join reached it, and not to be run twice (preflight refuses a node that
# has them).
JOIN_PHASES_BEFORE_ETCD=preflight,control-plane-prepare,check-etcd,kubelet-start
# kubeadm writes a joiner's API server, controller-manager and scheduler
# manifests before its etcd member exists, and the kubelet runs them while
# the member is added and catches up as a learner: an API server whose only
# etcd is that learner fails and relists all the while. First boot writes
# them once the member is promoted, so that the new member and the cluster
# it joins have the node's cores to themselves (under emulation and on slow
# boards that window is what fails). The phases after etcd-join follow.
JOIN_CONTROL_PLANE=control-plane-prepare/control-plane
JOIN_PHASES_AFTER_ETCD=kubelet-wait-bootstrap,control-plane-join,wait-control-plane

# The join up to and with its etcd member: every phase but the control
# plane's manifests and what comes after etcd-join.
join_to_etcd() {
    log "running: $HABUILD_KUBEADM join --config $JOIN_CONFIG --skip-phases=$JOIN_CONTROL_PLANE,$JOIN_PHASES_AFTER_ETCD (attempt $attempt/$HABUILD_ATTEMPTS)"
    "$HABUILD_KUBEADM" join --config "$JOIN_CONFIG" --skip-phases="$JOIN_CONTROL_PLANE,$JOIN_PHASES_AFTER_ETCD" &&
        touch "$ETCD_JOINED"
}

# kubeadm's etcd-join phase alone, unless it already succeeded: run again
# on a member that is in, it still makes its single 2 s member lookup and
# waits for the cluster, which is what a busy two-member cluster fails.
etcd_join() {
    if [ -f "$ETCD_JOINED" ]; then
        log "this node's etcd member is in already (kubeadm's etcd-join phase succeeded)"
        return 0
    fi
    kubeadm_logged join phase etcd-join --config "$JOIN_CONFIG" && touch "$ETCD_JOINED"
}

# kubeadm writes the API server's, controller-manager's and scheduler's
# manifests together. The new API server's start is the join's heaviest
# step (it exits when its post-start hooks take over a minute), and the
# other two, started beside it, only retry against it meanwhile: under
# emulation a joiner's scheduler took 5 minutes of CPU in 30 that way
# while its API server restarted four times (benchmarks/README.md). So
# they wait, kept aside, until the API server answers /readyz, or until
# LOCAL_API_TRIES have passed.
#
# The kubelet must not see them meanwhile: it starts a static pod as soon
# as the manifest appears, and until it has reached the API server (a
# joiner's has not yet) it skips deletions ("sources aren't ready"), so a
# manifest moved away then leaves its pod running. So the kubelet is
# stopped while kubeadm writes them and started once the two are aside;
# the pods it runs (etcd's) go on running meanwhile.
api_server_first() {
    "$HABUILD_SYSTEMCTL" stop kubelet.service ||
        log "systemctl stop kubelet.service failed; going on (the kubelet may start the controller-manager and scheduler at once)"
    written=no
    held=no
    if kubeadm_logged join phase control-plane-prepare control-plane --config "$JOIN_CONFIG"; then
        written=yes
        if hold_back_later_components; then
            held=yes
        fi
    fi
    if ! "$HABUILD_SYSTEMCTL" start kubelet.service; then
        log "systemctl start kubelet.service failed"
        return 1
    fi
    [ "$written" = yes ] || return 1
    if [ "$held" = yes ]; then
        wait_for_local_api
    fi
}

hold_back_later_components() {
    mkdir -p "$HELD_MANIFESTS" || return 1
    for c in $LATER_COMPONENTS; do
        if [ -f "$HABUILD_KUBE_DIR/manifests/$c.yaml" ]; then
            mv -f "$HABUILD_KUBE_DIR/manifests/$c.yaml" "$HELD_MANIFESTS/$c.yaml" || return 1
        fi
    done
    log "the API server starts alone: $LATER_COMPONENTS wait until it is ready"
}

release_later_components() {
    for c in $LATER_COMPONENTS; do
        if [ -f "$HELD_MANIFESTS/$c.yaml" ]; then
            mv -f "$HELD_MANIFESTS/$c.yaml" "$HABUILD_KUBE_DIR/manifests/$c.yaml" || return 1
        fi
    done
}

# Its own counter: it runs inside finish_join, whose $try it must not change.
wait_for_local_api() {
    api_try=1
    while :; do
        if "$HABUILD_KUBECTL" --kubeconfig "$HABUILD_KUBE_DIR/admin.conf" \
            --server "https://$HABUILD_NODE_ADDRESS:$HABUILD_API_PORT" --request-timeout=20s \
            get --raw /readyz >/dev/null; then
            log "this node's API server is ready (try $api_try): starting $LATER_COMPONENTS"
            return 0
        fi
        if [ "$api_try" -ge "$HABUILD_LOCAL_API_TRIES" ]; then
            log "this node's API server is not ready after $api_try tries: starting $LATER_COMPONENTS anyway"
            return 0
        fi
        api_try=$((api_try + 1))
        "$HABUILD_SLEEP" "$HABUILD_LOCAL_API_DELAY"
    done
}

# The rest of a join whose etcd member is in: the control plane's
# manifests (the API server's first), then kubeadm's phases after
# etcd-join.
join_after_etcd() {
    if [ -n "$HABUILD_NODE_ADDRESS" ]; then
        api_server_first || return 1
    else
        kubeadm_logged join phase control-plane-prepare control-plane --config "$JOIN_CONFIG" || return 1
    fi
    release_later_components || return 1
    kubeadm_logged join --config "$JOIN_CONFIG" --skip-phases="$JOIN_PHASES_BEFORE_ETCD,etcd-join"
}

# This node's etcd member was announced: kubeadm writes the manifest
# right after.
joined_etcd() {
    [ "$HABUILD_ACTION" = join ] && [ -f "$HABUILD_KUBE_DIR/manifests/etcd.yaml" ]
}

# The join got to its etcd-join phase: the kubelet-start phase before it
# wrote the kubelet's configuration (absent before a join, and removed by
# `kubeadm reset`).
reached_etcd_join() {
    [ "$HABUILD_ACTION" = join ] &&
        { joined_etcd || [ -f "$HABUILD_KUBELET_DIR/config.yaml" ]; }
}

# A join that failed from its etcd-join phase on: that phase is idempotent
# (it adds the member, or finds an announced one by its peer URL, and
# leaves a promoted one as it is), and so are the phases after it.
# Finishing the join needs only what the join had, where a reset needs the
# cluster to remove an announced member. Under load kubeadm gives up early
# here: its etcd client must connect within 2 s before it adds the member,
# and it looks the new member up with a single 2 s call after.
finish_join() {
    reached_etcd_join || return 1
    try=1
    while :; do
        log "finishing the join from its etcd-join phase (try $try/$HABUILD_FINISH_TRIES)"
        if etcd_join && join_after_etcd; then
            log "the join is finished"
            return 0
        fi
        if [ "$try" -ge "$HABUILD_FINISH_TRIES" ]; then
            log "could not finish the join in $try tries: resetting the node"
            return 1
        fi
        try=$((try + 1))
        "$HABUILD_SLEEP" "$HABUILD_RETRY_DELAY"
    done
}

# Undoes a partial kubeadm run so that the next one starts clean.
reset_node() {
    wait_for_cluster_before_reset
    log "running: $HABUILD_KUBEADM reset -f"
    reset_log=$HABUILD_RUN_DIR/kubeadm-reset.log
    mkdir -p "$HABUILD_RUN_DIR" || fail "cannot create $HABUILD_RUN_DIR"
    if ! "$HABUILD_KUBEADM" reset -f >"$reset_log" 2>&1; then
        log "kubeadm reset failed; going on (the next kubeadm run will say what is left)"
    fi
    cat "$reset_log"
    if grep -q 'Failed to remove etcd member' "$reset_log"; then
        touch "$MEMBER_LEFT"
        fail "kubeadm reset could not remove this node's etcd member (see above): $MEMBER_LEFT_HELP" 2
    fi
    restore_pki
    rm -rf "$PHASE" "$ETCD_JOINED" "$HELD_MANIFESTS"
}

# LVS direct routing hands a connection to a control plane that holds the
# VIP on lo, and a joiner puts it there only once joined. Its API server,
# though, starts listening part-way through the join: the directors' TCP
# check then finds the port open and adds the node to the VIP's pool, and
# from then on about one in two of the join's own requests to the VIP is
# handed back to this node, which drops it (it does not hold the VIP).
# kubeadm's single 10 s fetch of the kubelet's configuration failed that
# way. So until the VIP is on lo, the API port does not answer the
# directors: a policy rule per director prohibits the port's replies to it
# (nothing else of this node's traffic to the director is touched), and
# their checks keep the node out of the pool. The rules live until the
# join is done or the next boot.
release_to_pool() {
    for director in $HABUILD_DIRECTORS; do
        while "$HABUILD_IP" -4 rule del to "$director" ipproto tcp sport "$HABUILD_API_PORT" prohibit 2>/dev/null; do
            :
        done
    done
}

hold_out_of_pool() {
    [ -n "$HABUILD_DIRECTORS" ] || return 0
    release_to_pool
    for director in $HABUILD_DIRECTORS; do
        if "$HABUILD_IP" -4 rule add to "$director" ipproto tcp sport "$HABUILD_API_PORT" prohibit; then
            log "until joined, the API port does not answer the director $director: it keeps this node out of the VIP's pool"
        else
            log "cannot keep the API port from answering the director $director (ip rule add failed); going on: the join's requests to the VIP may be handed back to this node"
        fi
    done
}

wait_for_vip() {
    status waiting-for-vip
    try=1
    delay=$HABUILD_VIP_DELAY
    while :; do
        if "$HABUILD_VIP_PROBE" "$HABUILD_VIP" "$HABUILD_API_PORT"; then
            log "the VIP $HABUILD_VIP:$HABUILD_API_PORT answers (attempt $try/$HABUILD_VIP_TRIES)"
            return 0
        fi
        if [ "$try" -ge "$HABUILD_VIP_TRIES" ]; then
            fail "the VIP $HABUILD_VIP:$HABUILD_API_PORT did not answer after $try attempts"
        fi
        log "the VIP $HABUILD_VIP:$HABUILD_API_PORT does not answer (attempt $try/$HABUILD_VIP_TRIES); next try in ${delay}s"
        "$HABUILD_SLEEP" "$delay"
        try=$((try + 1))
        delay=$((delay * 2))
        if [ "$delay" -gt "$HABUILD_VIP_MAX_DELAY" ]; then
            delay=$HABUILD_VIP_MAX_DELAY
        fi
    done
}

# kubeadm init reads one file: this node's InitConfiguration and
# ClusterConfiguration, and the KubeletConfiguration (cgroupDriver: systemd).
init_config() {
    config=$HABUILD_RUN_DIR/kubeadm-init.yaml
    (
        umask 077
        mkdir -p "$HABUILD_RUN_DIR" &&
            {
                cat "$HABUILD_KUBEADM_DIR/kubeadm.yaml" &&
                    printf '\n---\n' &&
                    cat "$HABUILD_KUBEADM_DIR/kubelet.yaml"
            } >"$config"
    ) || fail "cannot write $config"
}

# One `kubeadm init`, or one join in first boot's order (join_to_etcd).
kubeadm_once() {
    if [ "$HABUILD_ACTION" = join ]; then
        join_to_etcd && join_after_etcd
    else
        log "running: $HABUILD_KUBEADM init --config $config --skip-phases=addon (attempt $attempt/$HABUILD_ATTEMPTS)"
        "$HABUILD_KUBEADM" init --config "$config" --skip-phases=addon
    fi
}

run_kubeadm() {
    attempt=1
    while :; do
        if [ "$HABUILD_ACTION" = join ]; then
            wait_for_vip
            status joining
        else
            status initialising
            init_config
        fi
        phase kubeadm-started
        if kubeadm_once; then
            phase kubeadm-done
            log "kubeadm $HABUILD_ACTION succeeded"
            return 0
        fi
        log "kubeadm $HABUILD_ACTION failed (attempt $attempt/$HABUILD_ATTEMPTS)"
        if finish_join; then
            phase kubeadm-done
            log "kubeadm $HABUILD_ACTION succeeded (finished from its etcd-join phase)"
            return 0
        fi
        reset_node
        if [ "$attempt" -ge "$HABUILD_ATTEMPTS" ]; then
            fail "kubeadm $HABUILD_ACTION failed $attempt times (see the journal: journalctl -u habuild-firstboot)"
        fi
        attempt=$((attempt + 1))
        log "retrying in ${HABUILD_RETRY_DELAY}s"
        "$HABUILD_SLEEP" "$HABUILD_RETRY_DELAY"
    done
}

# The add-ons the manifest turns on, one `kubeadm init phase addon NAME`
# each: `phase addon all` installs both whatever the configuration's
# dns.disabled and proxy.disabled say. Then the configuration is stored
# again, as `kubeadm init --skip-phases=addon` stored both add-ons as
# disabled in the cluster's kubeadm-config, which `kubeadm upgrade` reads.
# Every step is idempotent, so a failed try is run again whole.
install_addons() {
    for addon in $HABUILD_ADDONS; do
        kubeadm_logged init phase addon "$addon" --config "$config" || return 1
    done
    kubeadm_logged init phase upload-config kubeadm --config "$config"
}

run_addons() {
    init_config
    try=1
    while :; do
        log "installing the add-ons (${HABUILD_ADDONS:-none: the manifest turns them off}) (attempt $try/$HABUILD_ADDON_ATTEMPTS)"
        if install_addons; then
            log "add-ons installed"
            return 0
        fi
        if [ "$try" -ge "$HABUILD_ADDON_ATTEMPTS" ]; then
            fail "the add-ons (${HABUILD_ADDONS:-none}) failed to install $try times (the control plane itself is up; see journalctl -u habuild-firstboot)"
        fi
        try=$((try + 1))
        "$HABUILD_SLEEP" "$HABUILD_RETRY_DELAY"
    done
}

main() {
    mkdir -p "$HABUILD_STATE_DIR" || exit 1
    if [ -e "$DONE" ]; then
        log "already done ($DONE exists): nothing to do"
        exit 0
    fi
    status starting
    if [ -e "$MEMBER_LEFT" ]; then
        fail "an earlier reset left this node's etcd member in the cluster: $MEMBER_LEFT_HELP" 2
    fi
    case $HABUILD_ACTION in
        init | join) ;;
        *) fail "HABUILD_ACTION is \"$HABUILD_ACTION\", not init or join (see /etc/habuild/firstboot.env)" 2 ;;
    esac
    [ -n "$HABUILD_VIP" ] || fail "HABUILD_VIP is not set (see /etc/habuild/firstboot.env)" 2
    command -v "$HABUILD_KUBEADM" >/dev/null 2>&1 ||
        fail "$HABUILD_KUBEADM is not installed (image built with --without-kubernetes?)" 2
    save_pki

    last=$(cat "$PHASE" 2>/dev/null || true)
    if [ "$HABUILD_ACTION" = init ]; then
        # The seed: the VIP on lo of the first control plane before kubeadm init.
        log "starting realServer (the VIP on lo) before kubeadm init"
        "$HABUILD_SYSTEMCTL" start realServer.service || fail "systemctl start realServer.service failed"
    elif [ "$last" != kubeadm-done ]; then
        # Never joined with the VIP on lo (a unit enabled by hand, a retry).
        "$HABUILD_SYSTEMCTL" stop realServer.service ||
            log "systemctl stop realServer.service failed; going on"
        hold_out_of_pool
    fi

    case $last in
        kubeadm-done)
            log "kubeadm $HABUILD_ACTION finished on an earlier boot; finishing"
            ;;
        kubeadm-started)
            log "an earlier boot stopped during kubeadm $HABUILD_ACTION"
            if finish_join; then
                phase kubeadm-done
            else
                log "resetting the node first"
                reset_node
                run_kubeadm
            fi
            ;;
        *)
            run_kubeadm
            ;;
    esac

    if [ "$HABUILD_ACTION" = init ]; then
        run_addons
        # From now on the VIP goes on lo at every boot.
        "$HABUILD_SYSTEMCTL" enable realServer.service || fail "systemctl enable realServer.service failed"
        final=initialised
    else
        log "joined: starting realServer (the VIP on lo) now"
        "$HABUILD_SYSTEMCTL" enable --now realServer.service ||
            fail "systemctl enable --now realServer.service failed"
        # The VIP is on lo: the directors may hand this node connections.
        release_to_pool
        [ -z "$HABUILD_DIRECTORS" ] || log "the API port answers the directors again: they add this node to the VIP's pool"
        final=joined
    fi
    touch "$DONE" || fail "cannot write $DONE"
    rm -rf "$SAVED_PKI" "$PHASE" "$HELD_MANIFESTS"
    status "$final"
}

main "$@"
