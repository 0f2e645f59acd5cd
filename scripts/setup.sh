#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine: the system tools the enforcer drives
# (nftables, iptables, ipset, conntrack, iproute2, graphviz) and a .venv with the package.
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
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  touch "$stamp"
fi
