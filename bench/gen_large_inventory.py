#!/usr/bin/env python3
"""Write a large inventory with group_vars/ and host_vars/ for the resolve benchmark.

Usage: gen_large_inventory.py N [DIR]   (default DIR: $BENCH_DIR/large_N)

DIR/hosts.ini holds N hosts with inline connection vars, spread over
20 application groups (app00..app19) and 10 racks (rack0..rack9), which
nest under regions (eu, us) and an `env_prod` parent, so every host is in
four groups at three depths. DIR/group_vars/ has a file for `all` and for
every group (a dozen scalars, a list and a nested mapping each); one host
in a hundred has a host_vars/ file. DIR/site.yml is the webserver role's
play over `all`, with a symlink to bench/roles, so that

    keel inventory -i DIR/hosts.ini --list
    keel play -i DIR/hosts.ini DIR/site.yml --syntax-check

time what a large site's inventory costs (docs/benchmarks.md, "Large
inventories"). Prints DIR.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.environ.get("BENCH_DIR", "/tmp/keel-bench")
APPS = 20
RACKS = 10


def group_vars(name: str, i: int) -> str:
    return "\n".join(
        [
            "---",
            f"{name}_owner: team{i % 7}",
            f"{name}_tier: {['frontend', 'backend', 'batch'][i % 3]}",
            f"{name}_port: {8000 + i}",
            f"{name}_enabled: {'true' if i % 2 else 'false'}",
            f"{name}_ratio: {i / 10}",
            f"{name}_motd: \"Welcome to {{{{ inventory_hostname }}}} ({name})\"",
            "ntp_servers:",
            f"  - ntp{i % 3}.example.net",
            f"  - ntp{(i + 1) % 3}.example.net",
            f"{name}_limits:",
            "  nofile: 65536",
            f"  nproc: {4096 + i}",
            "  memlock: unlimited",
            f"{name}_packages: [nginx, curl, {name}-agent]",
            "",
        ]
    )


def main() -> None:
    n = int(sys.argv[1])
    out = sys.argv[2] if len(sys.argv) > 2 else f"{BASE}/large_{n}"
    os.makedirs(f"{out}/group_vars", exist_ok=True)
    os.makedirs(f"{out}/host_vars", exist_ok=True)
    lines = []
    for a in range(APPS):
        lines.append(f"[app{a:02d}]")
        for i in range(a, n, APPS):
            lines.append(
                f"node{i:05d}.dc.example.net ansible_host=10.{i // 65536}.{i // 256 % 256}.{i % 256} "
                f"ansible_port=22 host_index={i}"
            )
        lines.append("")
    for r in range(RACKS):
        lines.append(f"[rack{r}]")
        for i in range(r, n, RACKS):
            lines.append(f"node{i:05d}.dc.example.net")
        lines.append("")
    lines += ["[eu:children]"] + [f"rack{r}" for r in range(RACKS // 2)] + [""]
    lines += ["[us:children]"] + [f"rack{r}" for r in range(RACKS // 2, RACKS)] + [""]
    lines += ["[env_prod:children]", "eu", "us"] + [f"app{a:02d}" for a in range(APPS)] + [""]
    lines += ["[all:vars]", "ansible_user=deploy", "ansible_python_interpreter=/usr/bin/python3", ""]
    with open(f"{out}/hosts.ini", "w") as f:
        f.write("\n".join(lines))
    groups = ["all", "eu", "us", "env_prod"] + [f"app{a:02d}" for a in range(APPS)] + [f"rack{r}" for r in range(RACKS)]
    for i, g in enumerate(groups):
        with open(f"{out}/group_vars/{g}.yml", "w") as f:
            f.write(group_vars(g, i))
    for i in range(0, n, 100):
        with open(f"{out}/host_vars/node{i:05d}.dc.example.net.yml", "w") as f:
            f.write(f"---\nserial_number: SN{i:08d}\nmaintenance_window: \"sun 0{i % 6}:00\"\n")
    with open(f"{out}/site.yml", "w") as f:
        f.write("- name: configure web servers\n  hosts: all\n  gather_facts: false\n  roles:\n    - webserver\n")
    roles = f"{out}/roles"
    if not os.path.lexists(roles):
        os.symlink(os.path.join(HERE, "roles"), roles)
    print(out)


if __name__ == "__main__":
    main()
