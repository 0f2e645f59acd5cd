#!/usr/bin/env bash
# Provision a Debian 12 machine (the Vagrant VM, or any Debian 12 host) for netpol-enforcer:
#   1. the same setup as `make demo`: scripts/setup.sh (nftables, iptables, ipset, conntrack,
#      iproute2, graphviz, python3-venv; a .venv with the package)
#   2. the daemon: its systemd unit, /usr/local/bin/netpol, /etc/netpol-enforcer/manifests
#   3. a short guide to the lab, printed at the end
#
# Usage: provision.sh [--dry-run] [--prefix DIR] [--skip-setup] [--no-start|--start] [--demo]
#   --dry-run     print what would be done, change nothing (also: DRY_RUN=1)
#   --prefix DIR  install the unit, the command link and the manifests directory under DIR
#                 instead of / (implies --no-start; for tests and packaging)
#   --skip-setup  do not run scripts/setup.sh (the tools and .venv are there already)
#   --no-start    install and enable nothing in systemd, start nothing
#   --start       enable and start the unit even with --prefix (SYSTEMCTL=cmd to use another
#                 systemctl, e.g. `systemctl --root=DIR` or a test stub)
#   --demo        run `make demo` at the end (about a minute; it prints a lot)
#
# The repository is the directory above this script (in the VM: /opt/netpol-enforcer).
# Idempotent: running it again changes nothing that is already in place. It never touches
# the host's network configuration: the lab and the daemon only work inside network
# namespaces they (or a container runtime) created.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"
PREFIX=""
SETUP=1
START=auto
DEMO=0
SYSTEMCTL="${SYSTEMCTL:-}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--check) DRY_RUN=1 ;;
    --prefix) [ $# -ge 2 ] || { echo "provision: --prefix needs a directory" >&2; exit 2; }
              PREFIX="$(realpath -m "$2")"; shift ;;
    --prefix=*) PREFIX="$(realpath -m "${1#--prefix=}")" ;;
    --skip-setup) SETUP=0 ;;
    --no-start) START=0 ;;
    --start) START=1 ;;
    --demo) DEMO=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "provision: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$START" = auto ]; then
  # Under a prefix the unit is not this machine's: do not start it unless asked.
  if [ -n "$PREFIX" ]; then START=0; else START=1; fi
fi

UNIT_SRC="$REPO/vagrant/netpol-enforcer.service"
UNIT_DIR="$PREFIX/etc/systemd/system"
BIN_DIR="$PREFIX/usr/local/bin"
MANIFESTS="$PREFIX/etc/netpol-enforcer/manifests"

if [ -t 1 ]; then
  say() { printf '\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '== %s\n' "$*"; }
fi
# Every change goes through run: with --dry-run it is printed, not done.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run: %s\n' "$*"
  else
    "$@"
  fi
}

if [ "$DRY_RUN" != 1 ] && [ -z "$PREFIX" ] && [ "$(id -u)" -ne 0 ]; then
  echo "provision: run as root (sudo), or use --dry-run or --prefix DIR" >&2
  exit 1
fi
[ -f "$UNIT_SRC" ] || { echo "provision: $UNIT_SRC is missing" >&2; exit 1; }

# 1. The tools and the virtualenv: exactly what `make demo` runs first (make setup).
if [ "$SETUP" = 1 ]; then
  say "setup: system tools and $REPO/.venv (scripts/setup.sh, as make demo does)"
  if ! command -v make >/dev/null 2>&1; then
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make
  fi
  run "$REPO/scripts/setup.sh"
fi

# 2. The daemon: unit file, command on PATH, the directory it watches.
say "daemon: systemd unit, ${BIN_DIR}/netpol, ${MANIFESTS}"
run install -d -m 755 "$UNIT_DIR" "$BIN_DIR" "$MANIFESTS"
if ! cmp -s "$UNIT_SRC" "$UNIT_DIR/netpol-enforcer.service" 2>/dev/null; then
  run install -m 644 "$UNIT_SRC" "$UNIT_DIR/netpol-enforcer.service"
fi
if [ "$(readlink "$BIN_DIR/netpol" 2>/dev/null)" != "$REPO/.venv/bin/netpol" ]; then
  run ln -sfn "$REPO/.venv/bin/netpol" "$BIN_DIR/netpol"
fi
if [ "$START" = 1 ]; then
  if [ -n "$SYSTEMCTL" ] || { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }; then
    read -r -a sysctl_cmd <<<"${SYSTEMCTL:-systemctl}"
    run "${sysctl_cmd[@]}" daemon-reload
    # Idle until manifests appear in the watched directory (fail-static: never flushes).
    run "${sysctl_cmd[@]}" enable --now netpol-enforcer.service
  elif [ "$DRY_RUN" = 1 ]; then
    echo "would skip: systemctl (no systemd running here)"
  else
    echo "provision: no systemd running here; the unit is installed but not started" >&2
  fi
fi

# 3. Optionally the demo itself.
if [ "$DEMO" = 1 ]; then
  say "demo: make demo"
  run make -C "$REPO" demo
fi

cat <<EOF

netpol-enforcer is ready in $REPO.

  cd $REPO
  sudo make demo                     # the course notes' three-tier scenario, in a minute
  netpol matrix -f examples/three-tier --ports 3306/TCP       # who may talk to the db
  netpol trace  -f examples/three-tier --from prod/web --to prod/db --port 3306/TCP

The lab (root): pods as network namespaces, real servers, real packets
  sudo netpol lab up    -f examples/three-tier/cluster.yaml --name demo --backend nftables
  sudo netpol lab probe --name demo --ports 3306/TCP
  sudo netpol lab apply --name demo -f examples/three-tier      # the policies arrive
  sudo netpol lab probe --name demo --ports 3306/TCP --expect model
  sudo netpol lab down  --name demo

The daemon: systemctl status netpol-enforcer; netpol status
  it enforces the manifests in ${MANIFESTS} (pods need status.podIP)

Docs: $REPO/docs/concepts.md, recipes.md, cli.md, lab.md
EOF
