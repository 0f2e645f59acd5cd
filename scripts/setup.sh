#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine: the system tools the enforcer drives
# (nftables, iptables, ipset, conntrack, iproute2, graphviz; systemd-analyze for the tests)
# and a .venv with the package, at the versions of requirements.lock.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nft >/dev/null       || need+=(nftables)
command -v iptables >/dev/null  || need+=(iptables)
command -v ipset >/dev/null     || need+=(ipset)
command -v conntrack >/dev/null || need+=(conntrack)
command -v ip >/dev/null        || need+=(iproute2)
command -v dot >/dev/null       || need+=(graphviz)
# systemd-analyze verifies the daemon's unit file in the tests (a container may lack it)
command -v systemd-analyze >/dev/null || need+=(systemd)
ldconfig -p 2>/dev/null | grep -q libnftables.so.1 || need+=(libnftables1)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v python3 >/dev/null   || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Python packages: exactly the versions in requirements.lock (`make lock` writes it from
# pyproject.toml), so a fresh clone runs what CI ran. The stamp holds a digest of the lock and
# pyproject.toml: when either changes (a pull, `make lock`), the venv is brought back in line.
lock=requirements.lock
stamp=.venv/.installed
[ -f "$lock" ] || { echo "setup: $lock is missing: run 'make lock'" >&2; exit 1; }
want="$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  py=.venv/bin/python
  pip=("$py" -m pip --disable-pip-version-check --no-input -q)
  locked_for=$(sed -n 's/^# resolved-for: *//p' "$lock")
  have=$("$py" -c 'import platform, sys; print(f"{platform.python_implementation()} {sys.version_info[0]}.{sys.version_info[1]}")')
  case "$locked_for" in
    "$have,"*) ;;
    *) echo "setup: warning: $lock was resolved for $locked_for, this venv is $have" >&2 ;;
  esac
  extras=$(sed -n 's/^# extras: *//p' "$lock")
  mapfile -t build < <("$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
  # pip and the build backend first, at their locked versions; the package is then built
  # with that backend (no build isolation: an isolated build would fetch the newest one).
  "${pip[@]}" install -c "$lock" pip "${build[@]}"
  "${pip[@]}" install -c "$lock" --no-build-isolation -e ".[$extras]"
  echo "$want" > "$stamp"
fi
