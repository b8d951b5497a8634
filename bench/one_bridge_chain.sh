#!/bin/bash
# Where the userspace datapath spends a hop: ONE netdev bridge, two namespaces joined by a
# chain of K veth links inside it (static OpenFlow rules), plus EXTRA idle veth pairs in the
# same bridge standing for the rest of a fabric. Prints the ping RTT across the K hops.
# Compare with bench/fabric_rtt.py (one bridge per node). Cleans up after itself.
# Usage: bash bench/one_bridge_chain.sh [K=7] [EXTRA=200]
trap "bash $(dirname "$0")/one_bridge_chain.sh --clean" EXIT
if [ "${1:-}" = "--clean" ]; then
  ovs-vsctl --if-exists del-br tbxone
  for d in $(ip -o link | grep -o 'tbx[hle][0-9A-Za-z]*' | sort -u); do ip link del $d 2>/dev/null; done
  ip netns del tbxA 2>/dev/null; ip netns del tbxB 2>/dev/null; true
  trap - EXIT; exit 0
fi

K=${1:-7}; EXTRA=${2:-200}
BR=tbxone
ip netns add tbxA; ip netns add tbxB
ip link add tbxhA type veth peer name eth0 netns tbxA
ip link add tbxhB type veth peer name eth0 netns tbxB
ip -n tbxA addr add 10.99.0.1/24 dev eth0; ip -n tbxA link set eth0 up; ip -n tbxA link set lo up
ip -n tbxB addr add 10.99.0.2/24 dev eth0; ip -n tbxB link set eth0 up; ip -n tbxB link set lo up
args="-- add-br $BR -- set bridge $BR datapath_type=netdev fail_mode=secure -- add-port $BR tbxhA -- set interface tbxhA ofport_request=1 -- add-port $BR tbxhB -- set interface tbxhB ofport_request=2"
for i in $(seq 1 $K); do
  ip link add tbxl${i}a type veth peer name tbxl${i}b
  args="$args -- add-port $BR tbxl${i}a -- set interface tbxl${i}a ofport_request=$((10+2*i)) -- add-port $BR tbxl${i}b -- set interface tbxl${i}b ofport_request=$((11+2*i))"
done
for i in $(seq 1 $EXTRA); do
  ip link add tbxe${i}a type veth peer name tbxe${i}b
  args="$args -- add-port $BR tbxe${i}a -- add-port $BR tbxe${i}b"
done
for d in tbxhA tbxhB $(ip -o link | grep -o 'tbx[le][0-9]*[ab]' | sort -u); do ip link set $d up; ethtool -K $d tx off >/dev/null 2>&1 || true; done
ip netns exec tbxA ethtool -K eth0 tx off >/dev/null; ip netns exec tbxB ethtool -K eth0 tx off >/dev/null
ovs-vsctl $args
# forward: A(1) -> l1a ; l1b -> l2a ; ... ; lKb -> B(2); and back
rules="in_port=1,actions=output:12"
for i in $(seq 1 $((K-1))); do rules="$rules
in_port=$((11+2*i)),actions=output:$((10+2*(i+1)))"; done
rules="$rules
in_port=$((11+2*K)),actions=output:2
in_port=2,actions=output:$((11+2*K))"
for i in $(seq $K -1 2); do rules="$rules
in_port=$((10+2*i)),actions=output:$((11+2*(i-1)))"; done
rules="$rules
in_port=12,actions=output:1"
echo "$rules" > /tmp/onebridge.rules
ovs-ofctl add-flows $BR /tmp/onebridge.rules
sleep 4
ip netns exec tbxA ping -c 20 -i 0.05 -q 10.99.0.2 | tail -1
