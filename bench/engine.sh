#!/usr/bin/env bash
# Keel vs ansible-playbook on the same hosts, role and inventory.
#
#   bench/engine.sh [N...]        default: 1 10 100, then Keel alone at 1000
#
# Starts N real sshd hosts in network namespaces (setup_hosts.sh), installs
# ansible-core in a virtualenv from PyPI, and runs the two tools alternately
# (A B A B), each a first run (changes) and a second run (no changes), under
# /usr/bin/time -v. After each pair it compares the trees both tools left on
# the hosts and fails loudly if they differ. Results: bench/results/<date>/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export BENCH_DIR=${BENCH_DIR:-/tmp/keel-bench}
export BENCH_NS=${BENCH_NS:-kb}

command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || { apt-get update -qq; apt-get install -y -qq openssh-server; }
[ -x /usr/bin/time ] || { apt-get update -qq; apt-get install -y -qq time; }

cargo build --release -p keel-engine --bin keel --manifest-path "$root/Cargo.toml"
venv=${ANSIBLE_VENV:-$BENCH_DIR/venv}
if [ ! -x "$venv/bin/ansible-playbook" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ansible-core
fi
exec python3 "$here/engine.py" --keel "$root/target/release/keel" --ansible "$venv/bin/ansible-playbook" "$@"
