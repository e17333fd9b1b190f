#!/usr/bin/env bash
# Turn a plain Linux host into a kybernetes node, without Kubernetes: install the package in a
# virtualenv, write /etc/kybernetes (kyb.env, nats.conf, credentials) and the systemd units,
# and enable them.
#
#   bootstrap.sh --role control-plane|worker [--root DIR] [--nats-url URL] [--node-name N]
#                [--prefix /opt/kybernetes] [--venv DIR] [--source PATH|SPEC] [--no-install]
#                [--runtime docker|process] [--creds-dir DIR] [--nats-listen HOST:PORT]
#                [--services "api scheduler ..."] [--no-enable]
#                [--network cni|loopback] [--node-ip IP] [--backend host-gw|vxlan]
#
# control-plane: NATS + every service (kyb@NAME) + a kubelet. worker: a kubelet + its node's
# agents, joining the control plane named by --nats-url. The pod network (default cni): Debian's
# containernetworking-plugins, nftables and conntrack (apt), /etc/cni/net.d, the kubelet in
# network cni, and on every host the node agents kyb-node@netagent (routes to the other nodes'
# pods), @netpol, @proxy and @dns; nodeipam runs with the control plane. loopback: 127.x pods,
# the userspace proxy (kyb@proxy). With --root other than /, files go under DIR (an image or
# chroot being prepared) and neither apt-get nor systemctl is run: their commands are printed.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "bootstrap: $*" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROLE=""
ROOT="/"
NATS_URL=""
NODE_NAME="$(hostname -s 2>/dev/null || hostname)"
PREFIX="/opt/kybernetes"
VENV=""
SOURCE="$(cd "$HERE/.." && pwd)"
INSTALL=1
RUNTIME=""
CREDS_DIR=""
NATS_LISTEN="0.0.0.0:4222"
NATS_MONITOR="127.0.0.1:8222"
SERVICES=""
ENABLE=1
NETWORK=cni
NODE_IP=""
BACKEND=host-gw
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
# Agents of one node's network (kyb-node@NAME: the node's name, CAP_NET_ADMIN) in network cni.
NODE_AGENTS="netagent netpol proxy dns"
CNI_PLUGINS="bridge host-local portmap firewall loopback"
PACKAGES="containernetworking-plugins nftables conntrack"
# Used when the installed package cannot be asked (--no-install without a virtualenv).
DEFAULT_SERVICES="api scheduler replication deployment job cronjob daemonset statefulset disruption clusterroleaggregation resourcequota gc endpoints nodelifecycle nodeipam netagent netpol hpa volumebinder ingress proxy dns apiserver"

while [ $# -gt 0 ]; do
  case "$1" in
    --role) ROLE="${2:-}"; shift 2 ;;
    --root) ROOT="${2:-}"; shift 2 ;;
    --nats-url) NATS_URL="${2:-}"; shift 2 ;;
    --node-name) NODE_NAME="${2:-}"; shift 2 ;;
    --prefix) PREFIX="${2:-}"; shift 2 ;;
    --venv) VENV="${2:-}"; shift 2 ;;
    --source) SOURCE="${2:-}"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --runtime) RUNTIME="${2:-}"; shift 2 ;;
    --creds-dir) CREDS_DIR="${2:-}"; shift 2 ;;
    --nats-listen) NATS_LISTEN="${2:-}"; shift 2 ;;
    --services) SERVICES="${2:-}"; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --network) NETWORK="${2:-}"; shift 2 ;;
    --node-ip) NODE_IP="${2:-}"; shift 2 ;;
    --backend) BACKEND="${2:-}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "bootstrap: unknown argument: $1" >&2; usage 2 ;;
  esac
done

case "$ROLE" in
  control-plane|worker) ;;
  "") die "--role control-plane|worker is required" ;;
  *) die "unknown role '$ROLE' (expected control-plane or worker)" ;;
esac
[ "$ROLE" = worker ] && [ -z "$NATS_URL" ] && die "a worker joins a control plane: give --nats-url nats://HOST:4222"
[ -n "$NATS_URL" ] || NATS_URL="nats://127.0.0.1:${NATS_LISTEN##*:}"
case "$NODE_NAME" in
  ""|*[!a-z0-9.-]*) die "node name '$NODE_NAME' must be a DNS name (lower-case letters, digits, '-', '.')" ;;
esac
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
ROOT="${ROOT%/}"
[ -n "$ROOT" ] && [ ! -d "$ROOT" ] && die "--root $ROOT is not a directory"
[ -n "$VENV" ] || VENV="$PREFIX/venv"
if [ -z "$RUNTIME" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then RUNTIME=docker; else RUNTIME=process; fi
fi
case "$RUNTIME" in docker|process) ;; *) die "unknown runtime '$RUNTIME' (docker or process)" ;; esac
case "$NETWORK" in cni|loopback) ;; *) die "unknown network '$NETWORK' (cni or loopback)" ;; esac
case "$BACKEND" in host-gw|vxlan) ;; *) die "unknown backend '$BACKEND' (host-gw or vxlan)" ;; esac
if [ "$NETWORK" = cni ] && [ -z "$NODE_IP" ]; then
  # The address other nodes reach this one at (host-gw's next hop, vxlan's tunnel end): the
  # first global address of the interface of this host's default route.
  [ -n "$ROOT" ] && die "--node-ip is required with --root: the address the other nodes reach this host at"
  dev="$(ip -4 -o route show default 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)"
  [ -n "$dev" ] && NODE_IP="$(ip -4 -o addr show dev "$dev" scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)"
  [ -n "$NODE_IP" ] || die "cannot tell this host's address (no default route): give --node-ip"
fi
case "$NODE_IP" in
  "") ;;
  *[!0-9.]*|*.*.*.*.*|.*|*.|*..*) die "--node-ip '$NODE_IP' is not an IPv4 address" ;;
  *.*.*.*) ;;
  *) die "--node-ip '$NODE_IP' is not an IPv4 address" ;;
esac

ETC="$ROOT/etc/kybernetes"
UNITS="$ROOT/etc/systemd/system"
say() { echo "bootstrap: $*"; }

# -- packages of the pod network -----------------------------------------------------------------
# CNI mode needs the standard CNI plugins (Debian: containernetworking-plugins, into /usr/lib/cni;
# /opt/cni/bin is looked in too), nft (nftables: the proxy and netpol) and conntrack (the proxy
# flushes UDP entries of endpoints that left). On this host they are installed with apt-get when
# missing; under --root the command is printed for the target.
missing_packages() {
  local p d found
  for p in $CNI_PLUGINS; do
    found=0
    for d in /usr/lib/cni /opt/cni/bin; do [ -x "$ROOT$d/$p" ] && found=1; done
    [ "$found" = 1 ] || { echo containernetworking-plugins; break; }
  done
  [ -x "$ROOT/usr/sbin/nft" ] || echo nftables
  [ -x "$ROOT/usr/sbin/conntrack" ] || echo conntrack
}
if [ "$NETWORK" = cni ]; then
  WANTED="$(missing_packages | tr '\n' ' ')"
  WANTED="${WANTED% }"
  if [ -z "$WANTED" ]; then
    :
  elif [ -n "$ROOT" ]; then
    say "packages missing under $ROOT: on the target run: apt-get install -y --no-install-recommends $WANTED"
  elif command -v apt-get >/dev/null 2>&1; then
    say "installing $WANTED (apt-get)"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $WANTED
  else
    die "network cni needs $PACKAGES (the CNI plugins $CNI_PLUGINS in /usr/lib/cni or /opt/cni/bin, nft, conntrack); install them or give --network loopback"
  fi
fi

# -- install -----------------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
  say "installing kybernetes from $SOURCE into $VENV"
  [ -x "$ROOT$VENV/bin/python" ] || python3 -m venv "$ROOT$VENV"
  # The versions CI tested: the lock beside the source, hashes checked; then the package itself.
  if [ -f "$SOURCE/requirements.lock" ]; then
    "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
      -r "$SOURCE/requirements.lock"
    "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "$SOURCE"
  else
    "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SOURCE"
  fi
fi
[ "$INSTALL" = 1 ] && [ ! -x "$ROOT$VENV/bin/kyb" ] && die "$VENV/bin/kyb is missing after the install"

if [ -z "$SERVICES" ]; then
  if [ -x "$ROOT$VENV/bin/python" ]; then
    SERVICES="$("$ROOT$VENV/bin/python" -c 'from kyb.serve import available_services; print(" ".join(n for n in available_services() if n != "kubelet"))')"
  else
    SERVICES="$DEFAULT_SERVICES"
  fi
fi
is_node_agent() { case " $NODE_AGENTS " in *" $1 "*) return 0 ;; esac; return 1; }
ENABLED_UNITS=""
if [ "$NETWORK" = cni ]; then
  # every host runs its node's network agents; the control plane the rest (nodeipam among them)
  if [ "$ROLE" = control-plane ]; then
    ENABLED_UNITS="kyb-nats.service"
    for s in $SERVICES; do is_node_agent "$s" || ENABLED_UNITS="$ENABLED_UNITS kyb@$s.service"; done
  fi
  for s in $NODE_AGENTS; do
    case " $SERVICES " in *" $s "*) ENABLED_UNITS="$ENABLED_UNITS kyb-node@$s.service" ;; esac
  done
  ENABLED_UNITS="${ENABLED_UNITS# }"
else
  case "$ROLE" in
    control-plane) ENABLED_UNITS="kyb-nats.service"; for s in $SERVICES; do ENABLED_UNITS="$ENABLED_UNITS kyb@$s.service"; done ;;
    worker) ENABLED_UNITS="kyb@proxy.service" ;;
  esac
fi
ENABLED_UNITS="$ENABLED_UNITS kyb-kubelet.service"
if [ "$NETWORK" = cni ]; then
  NET_ARGS="--network cni --cluster-cidr $CLUSTER_CIDR --service-cidr $SERVICE_CIDR --backend $BACKEND"
else
  NET_ARGS="--network loopback"
fi

# -- configuration -------------------------------------------------------------------------------
install -d -m 0755 "$ETC" "$UNITS"
umask 022
cat > "$ETC/kyb.env" <<EOF
# Written by k8s-free-bootstrap/bootstrap.sh; read by every kybernetes unit.
KYB_ROLE=$ROLE
KYB_NATS_URL=$NATS_URL
KYB_NODE_NAME=$NODE_NAME
KYB_RUNTIME=$RUNTIME
KYB_PREFIX=$PREFIX
KYB_LOG_LEVEL=INFO
KYB_NETWORK=$NETWORK
KYB_NODE_IP=$NODE_IP
# The pod network's options, the same on every host of the cluster (each unit passes them on).
KYB_NET_ARGS=$NET_ARGS
EOF
chmod 0644 "$ETC/kyb.env"
say "wrote /etc/kybernetes/kyb.env"

# The volume binder keeps local-path volumes in its own state directory, which the kubelet mounts.
if [ "$ROLE" = control-plane ]; then
  echo "KYB_ARGS=--volume-dir /var/lib/kybernetes/volumebinder/volumes" > "$ETC/volumebinder.env"
  cat > "$ETC/nats.conf" <<EOF
# Written by k8s-free-bootstrap/bootstrap.sh; read by kyb-nats.service.
server_name: "$NODE_NAME"
listen: "$NATS_LISTEN"
http: "$NATS_MONITOR"
jetstream {
  store_dir: "/var/lib/kybernetes/nats"
}
EOF
  chmod 0644 "$ETC/nats.conf"
  say "wrote /etc/kybernetes/nats.conf"
fi

# -- the host's pod network ----------------------------------------------------------------------
# The CNI directory (the kubelet writes its bridge configuration 10-kyb.conflist there once its
# Node has a podCIDR, unless another plugin's configuration is there first), host-local's store,
# and what the kernel needs at every boot: br_netfilter (bridged pod traffic meets netpol's
# rules) and forwarding, as kubeadm's install guide sets them.
if [ "$NETWORK" = cni ]; then
  install -d -m 0755 "$ROOT/etc/cni/net.d" "$ROOT/var/lib/cni" "$ROOT/etc/netns" \
    "$ROOT/etc/modules-load.d" "$ROOT/etc/sysctl.d"
  printf '# Written by k8s-free-bootstrap/bootstrap.sh: the pod network (CNI bridge + netpol).\nbr_netfilter\n' \
    > "$ROOT/etc/modules-load.d/kybernetes.conf"
  cat > "$ROOT/etc/sysctl.d/90-kybernetes.conf" <<EOF
# Written by k8s-free-bootstrap/bootstrap.sh: the pod network routes between nodes and filters
# bridged pod traffic in nftables.
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
EOF
  chmod 0644 "$ROOT/etc/modules-load.d/kybernetes.conf" "$ROOT/etc/sysctl.d/90-kybernetes.conf"
  say "wrote /etc/cni/net.d, /etc/modules-load.d/kybernetes.conf, /etc/sysctl.d/90-kybernetes.conf"
  if [ -z "$ROOT" ]; then
    modprobe br_netfilter 2>/dev/null || say "could not load br_netfilter now (it loads at boot)"
    sysctl -q -p /etc/sysctl.d/90-kybernetes.conf >/dev/null 2>&1 || say "could not apply 90-kybernetes.conf now (it applies at boot)"
  fi
fi

# -- credentials ---------------------------------------------------------------------------------
# Pluggable: whatever issues NATS credentials puts <component>.creds files (KEY=value lines such as
# KYB_NATS_USER / KYB_NATS_PASSWORD, or KYB_NATS_CREDS=<nkey file>) in a directory; they are copied
# with mode 0600 and each unit reads its own as an EnvironmentFile. nats-auth.conf, if present,
# is the server's authorization block and is included from nats.conf.
if [ -n "$CREDS_DIR" ]; then
  [ -d "$CREDS_DIR" ] || die "--creds-dir $CREDS_DIR is not a directory"
  install -d -m 0700 "$ETC/creds"
  for f in "$CREDS_DIR"/*.creds; do
    [ -e "$f" ] || continue
    install -m 0600 "$f" "$ETC/creds/$(basename "$f")"
    say "installed credentials /etc/kybernetes/creds/$(basename "$f")"
  done
  if [ "$ROLE" = control-plane ] && [ -f "$CREDS_DIR/nats-auth.conf" ]; then
    install -m 0600 "$CREDS_DIR/nats-auth.conf" "$ETC/nats-auth.conf"
    echo 'include "nats-auth.conf"' >> "$ETC/nats.conf"
    say "nats.conf includes nats-auth.conf"
  fi
fi

# -- units ---------------------------------------------------------------------------------------
for unit in kyb-nats.service kyb@.service kyb-node@.service kyb-kubelet.service; do
  sed "s#/opt/kybernetes/venv#$VENV#g" "$HERE/systemd/$unit" > "$UNITS/$unit"
  chmod 0644 "$UNITS/$unit"
done
say "wrote units to /etc/systemd/system: kyb-nats.service kyb@.service kyb-node@.service kyb-kubelet.service"

if [ "$ENABLE" = 0 ]; then
  say "not enabling (--no-enable); to start: systemctl enable --now $ENABLED_UNITS"
elif [ -n "$ROOT" ] || [ ! -d /run/systemd/system ]; then
  say "systemd is not running this root; run on the target: systemctl daemon-reload && systemctl enable --now $ENABLED_UNITS"
else
  systemctl daemon-reload
  # shellcheck disable=SC2086
  systemctl enable --now $ENABLED_UNITS
  say "enabled and started: $ENABLED_UNITS"
fi
echo "$ENABLED_UNITS" > "$ETC/units"
say "done: $ROLE node $NODE_NAME, NATS at $NATS_URL, runtime $RUNTIME, network $NETWORK${NODE_IP:+ (node IP $NODE_IP)}"
