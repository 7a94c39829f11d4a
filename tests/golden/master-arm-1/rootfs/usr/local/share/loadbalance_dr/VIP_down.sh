#!/bin/sh
# Installed by habuild (the seed's VIP_down.sh); run when realServer.service
# stops. Undoes VIP_up.sh in reverse order: the VIP leaves lo before the ARP
# limits are lifted.
set -eu

VIP=10.10.197.101

if [ -n "$(ip -4 -o addr show dev lo to "$VIP/32")" ]; then
    ip addr del "$VIP/32" dev lo
fi

sysctl -q -w net.ipv4.conf.lo.arp_ignore=0
sysctl -q -w net.ipv4.conf.lo.arp_announce=0
sysctl -q -w net.ipv4.conf.all.arp_ignore=0
sysctl -q -w net.ipv4.conf.all.arp_announce=0
echo "realServer: VIP $VIP down"
