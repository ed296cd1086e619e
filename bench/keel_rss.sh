#!/usr/bin/env bash
# Keel alone at N inventory hosts over S sshds: wall time and peak RSS of a
# first run (changes) and a second run (no changes), as engine.sh's Keel-only
# row measures them, without the Ansible pairs.
#
#   bench/keel_rss.sh [N=1000] [S=min(N,100)]      KEEL=path/to/keel (default:
#                                                  target/release/keel)
#
# Entry i uses sshd ((i-1) % S)+1 with its own host_root, so N may exceed
# the sshds the machine can hold; every entry still opens its own SSH
# connection. Uses $BENCH_DIR and $BENCH_NS like setup_hosts.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export BENCH_DIR=${BENCH_DIR:-/tmp/keel-bench}
export BENCH_NS=${BENCH_NS:-kb}
n=${1:-1000}
s=${2:-$(( n < 100 ? n : 100 ))}
keel=${KEEL:-$root/target/release/keel}
"$here/setup_hosts.sh" "$s" >/dev/null
inv=$(python3 - "$n" "$s" <<EOF
import sys
sys.path.insert(0, "$here")
import engine
print(engine.inventory(int(sys.argv[1]), int(sys.argv[2])))
engine.clean_roots(int(sys.argv[1]))
EOF
)
for run in first second; do
  out=$(mktemp)
  ip netns exec "${BENCH_NS}ctl" /usr/bin/time -v "$keel" play -f 50 -i "$inv" "$here/bench.yml" >"$out" 2>"$out.time" \
    || { echo "keel failed, see $out" >&2; exit 1; }
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$out.time")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out.time")
  hosts=$(grep -cE '^h[0-9]+ +: .*unreachable=0 +failed=0' "$out" || true)
  echo "$run run: $n hosts ($s sshds), wall $wall, peak RSS $((rss / 1024)) MB, hosts ok $hosts/$n"
  rm -f "$out" "$out.time"
done
