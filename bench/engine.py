#!/usr/bin/env python3
"""Driver for bench/engine.sh: paired Keel/Ansible runs, tree comparison, table."""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.environ.get("BENCH_DIR", "/tmp/keel-bench")
NS = os.environ.get("BENCH_NS", "kb")
TASKS = 20  # tasks in the webserver role (the handler is extra)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def setup_hosts(n):
    sh([f"{HERE}/setup_hosts.sh", str(n)], stdout=subprocess.DEVNULL)


def inventory(n, sshd_hosts):
    """Inventory of n entries; entry i uses sshd host ((i-1) % sshd_hosts)+1."""
    path = f"{BASE}/inventory/bench_{n}.ini"
    lines = ["[web]"]
    for i in range(1, n + 1):
        s = (i - 1) % sshd_hosts + 1
        addr = f"10.77.{(s - 1) // 250}.{(s - 1) % 250 + 1}"
        lines.append(
            f"h{i} ansible_host={addr} host_root={BASE}/hosts/h{i}/root "
            f"ansible_remote_tmp={BASE}/hosts/h{i}/home/.ansible/tmp"
        )
    lines += [
        "",
        "[web:vars]",
        "ansible_user=root",
        f"ansible_ssh_private_key_file={BASE}/ssh/id_ed25519",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={BASE}/ssh/known_hosts "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'",
        "",
    ]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    for i in range(1, n + 1):
        os.makedirs(f"{BASE}/hosts/h{i}/home", exist_ok=True)
    return path


def clean_roots(n):
    for i in range(1, n + 1):
        r = f"{BASE}/hosts/h{i}/root"
        shutil.rmtree(r, ignore_errors=True)
        os.makedirs(r, exist_ok=True)


def tree(n):
    """A comparable picture of what the play left under every host root."""
    out = {}
    for i in range(1, n + 1):
        r = f"{BASE}/hosts/h{i}/root"
        for d, dirs, files in os.walk(r):
            dirs.sort()
            for name in sorted(files + [x for x in dirs if os.path.islink(os.path.join(d, x))]):
                p = os.path.join(d, name)
                rel = os.path.relpath(p, BASE)
                st = os.lstat(p)
                if os.path.islink(p):
                    out[rel] = ("link", os.readlink(p))
                elif name == "restarts.log":
                    # The handler appends a timestamp: compare the line count.
                    with open(p) as f:
                        out[rel] = ("file", oct(st.st_mode & 0o7777), "lines=%d" % len(f.readlines()))
                else:
                    with open(p, "rb") as f:
                        out[rel] = ("file", oct(st.st_mode & 0o7777), hashlib.sha1(f.read()).hexdigest())
            for x in dirs:
                p = os.path.join(d, x)
                if not os.path.islink(p):
                    out[os.path.relpath(p, BASE) + "/"] = ("dir", oct(os.lstat(p).st_mode & 0o7777))
    return out


def timed(cmd, env, log):
    """Runs cmd in the controller namespace under /usr/bin/time -v."""
    full = ["ip", "netns", "exec", f"{NS}ctl", "/usr/bin/time", "-v"] + cmd
    t0 = time.monotonic()
    p = subprocess.run(full, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{p.stdout}\n{p.stderr}\n")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    rss_mb = int(m.group(1)) / 1024 if m else float("nan")
    recap = [l for l in p.stdout.splitlines() if re.match(r"^h\d+\s+:", l)]
    changed = sum(int(re.search(r"changed=(\d+)", l).group(1)) for l in recap)
    failed = sum(int(re.search(r"failed=(\d+)", l).group(1)) + int(re.search(r"unreachable=(\d+)", l).group(1)) for l in recap)
    if p.returncode != 0 or failed:
        sys.exit(f"run failed (rc={p.returncode}, failed/unreachable={failed}); see {log}")
    return {"wall": wall, "rss_mb": rss_mb, "changed": changed, "hosts": len(recap)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--ansible", required=True)
    ap.add_argument("--reps", type=int, default=2, help="A/B pairs per size")
    ap.add_argument("--keel-only", type=int, default=1000, help="size for the Keel-only run (0 = skip)")
    ap.add_argument("sizes", nargs="*", type=int, default=[1, 10, 100])
    a = ap.parse_args()

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    outdir = os.path.join(HERE, "results", stamp)
    os.makedirs(outdir, exist_ok=True)
    log = os.path.join(outdir, "runs.log")
    env = dict(os.environ)
    aenv = dict(env, ANSIBLE_FORKS="50", ANSIBLE_PIPELINING="True", ANSIBLE_HOST_KEY_CHECKING="True",
                ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s",
                ANSIBLE_CONTROL_PATH_DIR=f"{BASE}/run/cp", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    os.makedirs(f"{BASE}/run/cp", exist_ok=True)
    playbook = os.path.join(HERE, "bench.yml")
    rows = []
    raw = []
    for n in a.sizes:
        setup_hosts(n)
        inv = inventory(n, n)
        for rep in range(a.reps):
            order = [("keel", [a.keel, "play", "-f", "50", "-i", inv, playbook], env),
                     ("ansible", [a.ansible, "-i", inv, playbook], aenv)]
            if rep % 2 == 1:
                order.reverse()
            trees = {}
            for tool, cmd, e in order:
                clean_roots(n)
                first = timed(cmd, e, log)
                second = timed(cmd, e, log)
                trees[tool] = tree(n)
                for kind, r in (("first", first), ("second", second)):
                    rec = dict(tool=tool, n=n, rep=rep, run=kind, **r)
                    raw.append(rec)
                    print(json.dumps(rec), flush=True)
                if second["changed"] != 0:
                    sys.exit(f"{tool}: second run on {n} hosts reported changed={second['changed']}")
            if trees["keel"] != trees["ansible"]:
                diff = sorted(set(trees["keel"].items()) ^ set(trees["ansible"].items()))
                sys.exit("TREES DIFFER between keel and ansible:\n" + "\n".join(map(str, diff[:40])))
    if a.keel_only:
        n = a.keel_only
        sshd = min(n, 100)
        setup_hosts(sshd)
        inv = inventory(n, sshd)
        for rep in range(a.reps):
            clean_roots(n)
            first = timed([a.keel, "play", "-f", "50", "-i", inv, playbook], env, log)
            second = timed([a.keel, "play", "-f", "50", "-i", inv, playbook], env, log)
            for kind, r in (("first", first), ("second", second)):
                rec = dict(tool="keel", n=n, rep=rep, run=kind, sshd=sshd, **r)
                raw.append(rec)
                print(json.dumps(rec), flush=True)
    with open(os.path.join(outdir, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else float("nan")

    sizes = sorted({r["n"] for r in raw})
    lines = ["| hosts | run | Keel wall (s) | Keel ms/task-host | Keel RSS (MB) | Ansible wall (s) | Ansible ms/task-host | Ansible RSS (MB) | Ansible/Keel |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        for kind in ("first", "second"):
            k = [r for r in raw if r["n"] == n and r["run"] == kind and r["tool"] == "keel"]
            an = [r for r in raw if r["n"] == n and r["run"] == kind and r["tool"] == "ansible"]
            kw, aw = med([r["wall"] for r in k]), med([r["wall"] for r in an])
            ratios = [x["wall"] / y["wall"] for x, y in zip(an, k)] if an else []
            lines.append("| %d | %s | %.3f | %.2f | %.0f | %s | %s | %s | %s |" % (
                n, kind, kw, kw * 1000 / (n * TASKS), med([r["rss_mb"] for r in k]),
                "%.2f" % aw if an else "—", "%.1f" % (aw * 1000 / (n * TASKS)) if an else "—",
                "%.0f" % med([r["rss_mb"] for r in an]) if an else "—",
                "%.0f×" % med(ratios) if ratios else "—"))
    ver = subprocess.run([a.ansible, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    kver = subprocess.run([a.keel, "--version"], capture_output=True, text=True).stdout.strip()
    head = (f"Date: {stamp}; machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB; {kver}; {ver}")
    table = head + "\n\n" + "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
