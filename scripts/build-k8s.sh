#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd of the release pinned in controlplane/go.mod, from the
# Go module proxy, into a per-user cache shared by every clone and CI run:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/netpol-enforcer/k8s/<version>/
# then link them into .venv/bin. A cache hit costs a hash and three symlinks.
#
# Environment: NETPOL_K8S_JOBS (go build -p, default 2: the machine is shared),
#              NETPOL_K8S_CACHE (overrides the cache root).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod="$root/controlplane"
if ! command -v go >/dev/null 2>&1; then
    echo "build-k8s: Go is not installed (https://go.dev/dl); the API server tests will be skipped" >&2
    exit 1
fi

version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$mod/go.mod")
[[ -n "$version" ]] || { echo "build-k8s: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
cache_root=${NETPOL_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netpol-enforcer/k8s}
dest="$cache_root/$version"
# The stamp ties the cached binaries to the exact module graph (an etcd bump under the same
# Kubernetes version must rebuild, not silently reuse).
stamp=$(cat "$mod/go.mod" "$mod/go.sum" "$mod/etcd/main.go" | sha256sum | cut -c1-16)
bins=(kube-apiserver kubectl etcd)

have_all() {
    [[ "$(cat "$dest/STAMP" 2>/dev/null)" == "$stamp" ]] || return 1
    for b in "${bins[@]}"; do [[ -x "$dest/$b" ]] || return 1; done
}

mkdir -p "$cache_root"
# Two clones (or CI jobs) building at once would waste an hour of CPU: one waits for the other.
exec 9>"$cache_root/.lock"
flock 9

if have_all; then
    echo "build-k8s: $version cached in $dest"
else
    echo "build-k8s: building Kubernetes $version (kube-apiserver, kubectl) and etcd into $dest"
    echo "build-k8s: a cold build takes 10-30 min on 2 cores; later runs reuse the cache"
    start=$(date +%s)
    tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
    chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    cd "$mod"
    export GOFLAGS="${GOFLAGS:-} -buildvcs=false -mod=readonly"
    # The toolchain on PATH builds; never download another one behind the user's back.
    export GOTOOLCHAIN=local
    flags=(-p "${NETPOL_K8S_JOBS:-2}" -trimpath -ldflags='-s -w')
    nice -n 10 go build "${flags[@]}" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    nice -n 10 go build "${flags[@]}" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
    nice -n 10 go build "${flags[@]}" -o "$tmp/etcd" ./etcd
    echo "$stamp" >"$tmp/STAMP"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    trap - EXIT
    echo "build-k8s: built in $(( $(date +%s) - start ))s, $(du -sh "$dest" | cut -f1) on disk"
fi

if [[ -d "$root/.venv/bin" ]]; then
    for b in "${bins[@]}"; do ln -sfn "$dest/$b" "$root/.venv/bin/$b"; done
    echo "build-k8s: linked into .venv/bin"
fi
