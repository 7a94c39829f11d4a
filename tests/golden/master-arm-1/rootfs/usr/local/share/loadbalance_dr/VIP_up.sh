#!/bin/sh
# Installed by habuild (the seed's VIP_up.sh); run by realServer.service.
# Makes this control plane an LVS-DR real server: it accepts packets for the
# VIP on lo, but never answers ARP for it, so only the director owns the VIP
# on the LAN.
set -eu

VIP=10.10.197.101

# ARP limits first, so there is no moment when the VIP is up on lo and this
# node would still answer who-has for it:
#   arp_ignore=1   reply only for addresses configured on the receiving NIC;
#   arp_announce=2 always use the outgoing NIC's own address as ARP source.
sysctl -q -w net.ipv4.conf.lo.arp_ignore=1
sysctl -q -w net.ipv4.conf.lo.arp_announce=2
sysctl -q -w net.ipv4.conf.all.arp_ignore=1
sysctl -q -w net.ipv4.conf.all.arp_announce=2

# A /32 on lo also installs the local route the seed added with
# `route add -host`. Added only when missing, so a restart is harmless.
if [ -z "$(ip -4 -o addr show dev lo to "$VIP/32")" ]; then
    ip addr add "$VIP/32" dev lo label lo:0
fi
echo "realServer: VIP $VIP up on lo"
