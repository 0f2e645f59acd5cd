#!/usr/bin/env bash
# The course notes' scenario on the bundled example (examples/three-tier).
set -euo pipefail
cd "$(dirname "$0")/.."
NETPOL=.venv/bin/netpol
EX=examples/three-tier
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "1. No policy yet: Kubernetes allows everything (the model's matrix)"
run $NETPOL matrix -f $EX/cluster.yaml --ports 3306/TCP

say "2. The db policy of the course notes, explained"
run $NETPOL explain -f $EX

say "3. With the policy: only prod/api and the backup server reach prod/db on 3306"
run $NETPOL matrix -f $EX --ports 3306/TCP

say "4. Why can't prod/web reach the db?"
run $NETPOL trace -f $EX --from prod/web --to prod/db --port 3306/TCP || echo "(exit code $?: denied)"

say "5. And why can prod/api?"
run $NETPOL trace -f $EX --from prod/api --to prod/db --port 3306/TCP

say "6. The rules installed in prod/db's network namespace, nftables and iptables side by side"
COLUMNS=${COLUMNS:-180} run $NETPOL render -f $EX --pod prod/db --backend all

say "7. An application as it is shipped (examples/shop): Deployments and Services"
run $NETPOL matrix -f examples/shop --by workload --ports 9090/TCP
SHOWN="grep -E '^Service|^  backend|^    shop/'"
printf '$ %s\n' "netpol trace -f examples/shop --from shop/frontend --to svc:shop/cart --port 80/TCP | $SHOWN"
$NETPOL trace -f examples/shop --from shop/frontend --to svc:shop/cart --port 80/TCP 2>/dev/null |
  grep -E '^Service|^  backend|^    shop/'

# `lab drops` in the background until it has seen 4 drops; a quiet probe makes them.
stream_drops() {
  local err pid
  err=$(mktemp)
  printf '$ %s\n' "$NETPOL lab drops --name $LAB --count 4 --timeout 10"
  $NETPOL lab drops --name "$LAB" --count 4 --timeout 10 2>"$err" &
  pid=$!
  for _ in $(seq 50); do grep -q watching "$err" && break; sleep 0.1; done  # sockets bound
  $NETPOL lab probe --name "$LAB" --ports 3306/TCP --timeout 0.3 >/dev/null
  wait "$pid"
  rm -f "$err"
}

if [ "$(id -u)" -eq 0 ] && $NETPOL lab --help >/dev/null 2>&1; then
  say "8. Real packets: a lab of 9 pods and the backup host, probed before and after"
  LAB=demo$$
  trap '$NETPOL lab down --name $LAB >/dev/null 2>&1' EXIT
  run $NETPOL lab up -f $EX/cluster.yaml --name $LAB --backend nftables &&
  run $NETPOL lab probe --name $LAB --ports 3306/TCP &&
  run $NETPOL lab apply --name $LAB -f $EX &&
  run $NETPOL lab probe --name $LAB --ports 3306/TCP --expect model
  say "9. Stream a few drops (while a probe runs): pod, direction, peer and the isolating policy"
  stream_drops
  say "10. Which rule of prod/db matched how many packets"
  run $NETPOL lab stats --name $LAB --pod prod/db --nonzero
  run $NETPOL lab down --name $LAB
  trap - EXIT
fi
