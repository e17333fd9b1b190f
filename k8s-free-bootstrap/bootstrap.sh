#!/usr/bin/env bash
# Turn a plain Linux host into a kybernetes node, without Kubernetes: install the package in a
# virtualenv, write /etc/kybernetes (kyb.env, nats.conf, credentials) and the systemd units,
# and enable them.
#
#   bootstrap.sh --role control-plane|worker [--root DIR] [--nats-url URL] [--node-name N]
#                [--prefix /opt/kybernetes] [--venv DIR] [--source PATH|SPEC] [--no-install]
#                [--runtime docker|process] [--creds-dir DIR] [--nats-listen HOST:PORT]
#                [--services "api scheduler ..."] [--no-enable]
#
# control-plane: NATS + every service (kyb@NAME) + a kubelet. worker: a kubelet + kyb@proxy,
# joining the control plane named by --nats-url. With --root other than /, files go under DIR
# (an image or chroot being prepared) and systemctl is not run: its commands are printed.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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
# Used when the installed package cannot be asked (--no-install without a virtualenv).
DEFAULT_SERVICES="api scheduler replication deployment job cronjob daemonset statefulset gc endpoints nodelifecycle nodeipam netagent netpol hpa volumebinder ingress proxy dns apiserver"

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

ETC="$ROOT/etc/kybernetes"
UNITS="$ROOT/etc/systemd/system"
say() { echo "bootstrap: $*"; }

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
case "$ROLE" in
  control-plane) ENABLED_UNITS="kyb-nats.service"; for s in $SERVICES; do ENABLED_UNITS="$ENABLED_UNITS kyb@$s.service"; done ;;
  worker) ENABLED_UNITS="kyb@proxy.service" ;;
esac
ENABLED_UNITS="$ENABLED_UNITS kyb-kubelet.service"

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
for unit in kyb-nats.service kyb@.service kyb-kubelet.service; do
  sed "s#/opt/kybernetes/venv#$VENV#g" "$HERE/systemd/$unit" > "$UNITS/$unit"
  chmod 0644 "$UNITS/$unit"
done
say "wrote units to /etc/systemd/system: kyb-nats.service kyb@.service kyb-kubelet.service"

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
say "done: $ROLE node $NODE_NAME, NATS at $NATS_URL, runtime $RUNTIME"
