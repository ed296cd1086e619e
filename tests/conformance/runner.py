#!/usr/bin/env python3
"""Conformance runner: ansible-core's own integration targets, under ansible-core and under Keel.

Entry point is ``scripts/conformance`` (which builds ``keel`` and calls this file). The flow:

1. ensure the ansible-core sdist (its ``test/integration/targets``) and a reference venv exist in the
   cache directory, downloading/creating them when missing;
2. for each chosen target, lay out a scratch copy the way ansible-test does (a temp dir with
   ``test/integration/{inventory,targets/<target and its dependencies>}``), then run it once with the
   reference ``ansible-playbook`` and once with Keel behind an ``ansible-playbook`` shim;
3. record both outcomes, the first failing task and its message, in ``results.json``, print a table
   and write ``docs/compatibility.md``.

Only the standard library is used, so a fresh machine needs nothing but python3 and its venv module.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import targets as target_lists  # noqa: E402

VERSION = "2.19.14"
REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KEEL_CONFORMANCE_CACHE", "/var/cache/keel/conformance"))
SDIST_TGZ = CACHE / f"ansible_core-{VERSION}.tar.gz"
SDIST_DIR = CACHE / f"ansible_core-{VERSION}"
VENV = CACHE / "venv"
RESULTS = CACHE / "results.json"
LOGS = CACHE / "logs"
# ansible-test puts non-ASCII characters in every temp dir name so that targets meet unicode paths.
UNICODE_SUFFIX = "-\u00c5\u00d1\u015a\u00cc\u03b2\u0141\u00c8"
ENGINES = ("reference", "keel")
PYTHON_VERSION = ""  # the reference venv's major.minor, set by main()


# ---------------------------------------------------------------------------------------------
# Setup: sdist, reference venv, shims


def log(msg: str) -> None:
    print(f"[conformance] {msg}", file=sys.stderr, flush=True)


def ensure_sdist() -> Path:
    targets = SDIST_DIR / "test" / "integration" / "targets"
    if targets.is_dir():
        return SDIST_DIR
    CACHE.mkdir(parents=True, exist_ok=True)
    if not SDIST_TGZ.exists():
        log(f"downloading the ansible-core {VERSION} sdist into {CACHE}")
        # pip's progress goes to stderr: stdout carries only what --ensure-venv answers.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"ansible-core=={VERSION}", "-d", str(CACHE)], check=True, stdout=sys.stderr)
    log(f"unpacking {SDIST_TGZ.name}")
    with tarfile.open(SDIST_TGZ) as tar:
        tar.extractall(CACHE, filter="tar") if hasattr(tarfile, "data_filter") else tar.extractall(CACHE)
    return SDIST_DIR


def base_python() -> str:
    """The interpreter the reference venv is made from.

    The system python3 when it can make venvs: targets that `become` an unprivileged user run
    modules with the controller's python, which must not live under a root-only home (pyenv).
    """
    sys_py = "/usr/bin/python3"
    if os.access(sys_py, os.X_OK) and subprocess.run([sys_py, "-c", "import venv, ensurepip"],
                                                     capture_output=True).returncode == 0:
        return sys_py
    return sys.executable


def ensure_venv() -> Path:
    playbook = VENV / "bin" / "ansible-playbook"
    base = base_python()
    if playbook.exists():
        out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                              "import ansible.release as r, sys; print(r.__version__, sys._base_executable)"],
                             capture_output=True, text=True)
        found = out.stdout.split()
        if found[:1] == [VERSION] and os.path.realpath(found[-1]) == os.path.realpath(base):
            return VENV
        log(f"reference venv is {' '.join(found) or 'broken'}, recreating from {base}")
        shutil.rmtree(VENV)
    log(f"creating the reference venv {VENV} from {base}")
    subprocess.run([base, "-m", "venv", str(VENV)], check=True, stdout=sys.stderr)
    # passlib is what ansible-test's setup_passlib_controller installs; having it up front
    # keeps the runs themselves off the network.
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", str(SDIST_TGZ), "passlib"], check=True,
                   stdout=sys.stderr)
    return VENV


def write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def make_bin_dir(root: Path, engine: str, keel: Path | None) -> Path:
    """The directory put first on PATH: the engine's ansible-* commands plus `python`.

    For Keel, `ansible-playbook`, `ansible-inventory`, `ansible-vault` and `ansible` (ad hoc) call Keel; every other
    ansible-* command fails loudly, so a script can never pass by quietly falling back to the real
    Ansible.
    """
    bindir = root / f"bin-{engine}"
    bindir.mkdir(parents=True, exist_ok=True)
    py = VENV / "bin" / "python"
    for name in ("python", "python3"):
        write_exe(bindir / name, f'#!/bin/sh\nexec "{py}" "$@"\n')
    # ansible-test's injector directory also holds virtualenv.sh, which runme.sh scripts `source`.
    venv_sh = SDIST_DIR / "test" / "lib" / "ansible_test" / "_util" / "target" / "injector" / "virtualenv.sh"
    if venv_sh.exists():
        shutil.copy(venv_sh, bindir / "virtualenv.sh")
    tools = ["ansible", "ansible-config", "ansible-console", "ansible-doc", "ansible-galaxy", "ansible-inventory",
             "ansible-playbook", "ansible-pull", "ansible-test", "ansible-vault"]
    for tool in tools:
        if engine == "reference":
            write_exe(bindir / tool, f'#!/bin/sh\nexec "{VENV / "bin" / tool}" "$@"\n')
        elif tool == "ansible-playbook":
            write_exe(bindir / tool, f'#!/bin/sh\nexec "{keel}" play "$@"\n')
        elif tool == "ansible-inventory":
            write_exe(bindir / tool, f'#!/bin/sh\nexec "{keel}" inventory "$@"\n')
        elif tool == "ansible-vault":
            write_exe(bindir / tool, f'#!/bin/sh\nexec "{keel}" vault "$@"\n')
        elif tool == "ansible":
            write_exe(bindir / tool, f'#!/bin/sh\nexec "{keel}" ansible "$@"\n')
        else:
            write_exe(bindir / tool, f'#!/bin/sh\necho "conformance shim: Keel has no equivalent of {tool}" >&2\n'
                                     "exit 127\n")
    return bindir


def clean_path() -> str:
    """The caller's PATH without directories that hold an ansible-playbook (pyenv shims, venvs)."""
    keep = []
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if d and not (Path(d) / "ansible-playbook").exists():
            keep.append(d)
    return os.pathsep.join(keep)


# ---------------------------------------------------------------------------------------------
# Targets and their dependencies (a simplified copy of ansible-test's analysis)


@dataclass
class Target:
    name: str
    path: Path
    aliases: list[str]
    script: bool

    @property
    def gather_facts(self) -> bool:
        return "gather_facts/no" not in self.aliases

    def alias_values(self, prefix: str) -> list[str]:
        return [a[len(prefix):].split("/")[0] for a in self.aliases if a.startswith(prefix)]

    @property
    def setup(self) -> list[str]:
        return self.alias_values("setup/always/") + self.alias_values("setup/once/")

    @property
    def env_set(self) -> dict[str, str]:
        out = {}
        for a in self.aliases:
            m = re.match(r"env/set/([^/]+)/(.*)", a)
            if m:
                out[m.group(1)] = m.group(2)
        return out


def read_aliases(path: Path) -> list[str]:
    f = path / "aliases"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def all_targets(root: Path) -> dict[str, Target]:
    out = {}
    for p in sorted((root / "test" / "integration" / "targets").iterdir()):
        if p.is_dir():
            out[p.name] = Target(p.name, p, read_aliases(p), (p / "runme.sh").exists())
    return out


def is_hidden(t: Target) -> bool:
    return t.name.startswith("setup_") or t.name.startswith("prepare_") or "hidden" in t.aliases


def dependencies(t: Target, known: dict[str, Target]) -> set[str]:
    """Targets that must be copied next to `t`: setup/needs aliases, symlinks into other targets,
    and hidden support roles named in its meta files (ansible-test's own primitive analysis)."""
    hidden = [n for n, x in known.items() if is_hidden(x) and not x.script]
    seen: set[str] = set()
    todo = [t.name]
    while todo:
        cur = known[todo.pop()]
        found = set(cur.setup) | set(cur.alias_values("needs/target/"))
        for dirpath, dirnames, filenames in os.walk(cur.path):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                if p.is_symlink():
                    real = os.path.realpath(p)
                    base = os.path.realpath(cur.path.parent) + "/"
                    if real.startswith(base):
                        other = real[len(base):].split("/")[0]
                        if other != cur.name:
                            found.add(other)
        meta = cur.path / "meta"
        if meta.is_dir():
            for f in meta.rglob("*"):
                try:
                    lines = f.read_text().splitlines() if f.is_file() else []
                except UnicodeDecodeError:
                    continue
                for line in lines:
                    if re.match(r"^ *#", line) or not line.strip():
                        continue
                    found.update(h for h in hidden if h in line)
        for d in found:
            if d in known and d not in seen and d != t.name:
                seen.add(d)
                todo.append(d)
    return seen


# ---------------------------------------------------------------------------------------------
# Running one target under one engine


@dataclass
class Outcome:
    status: str  # "pass", "fail", "timeout", "error"
    seconds: float
    exit_code: int | None = None
    failed_task: str = ""
    message: str = ""
    log: str = ""


@dataclass
class Result:
    target: str
    kind: str
    reference: Outcome | None = None
    keel: Outcome | None = None
    notes: dict = field(default_factory=dict)


def run_cmd(cmd: list[str], cwd: Path, env: dict[str, str], logf, timeout: float) -> tuple[int | None, bool]:
    """Run in its own process group; on timeout kill the whole group. Returns (code, timed_out)."""
    logf.write(f"\n### {' '.join(cmd)}   (cwd {cwd})\n")
    logf.flush()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return None, True


def run_target(t: Target, engine: str, known: dict[str, Target], bindir: Path, scratch_root: Path,
               timeout: float) -> Outcome:
    started = time.monotonic()
    LOGS.joinpath(engine).mkdir(parents=True, exist_ok=True)
    log_path = LOGS / engine / f"{t.name}.log"
    scratch = Path(tempfile.mkdtemp(prefix=f"{t.name}-", suffix=UNICODE_SUFFIX, dir=scratch_root))
    try:
        integration = scratch / "test" / "integration"
        targets_dir = integration / "targets"
        targets_dir.mkdir(parents=True)
        for name in sorted(dependencies(t, known) | {t.name}):
            shutil.copytree(known[name].path, targets_dir / name, symlinks=True)
        inventory = integration / "inventory"
        py = VENV / "bin" / "python"
        inventory.write_text("[testgroup]\n"
                             f"testhost ansible_connection='local' ansible_pipelining='yes' "
                             f"ansible_python_interpreter='{py}'\n")
        cfg = integration / "integration.cfg"
        cfg.write_text("")
        home = scratch / "home"
        tmp = scratch / "tmp"
        output_dir = scratch / "output_dir"
        for d in (home, tmp, output_dir):
            d.mkdir()
        env = {
            "PATH": f"{bindir}{os.pathsep}{clean_path()}",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "LC_ALL": "C.UTF-8",
            # What ansible-test's ansible_environment() and integration_environment() set.
            "ANSIBLE_FORCE_COLOR": "false",
            "ANSIBLE_FORCE_HANDLERS": "true",
            "ANSIBLE_HOST_PATTERN_MISMATCH": "error",
            "ANSIBLE_INVENTORY": "/dev/null",
            "ANSIBLE_DEPRECATION_WARNINGS": "false",
            "ANSIBLE_HOST_KEY_CHECKING": "false",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_CONFIG": str(cfg),
            "ANSIBLE_LIBRARY": "/dev/null",
            # Where Keel's Python fallback takes ansible-core's modules and module_utils from.
            "KEEL_ANSIBLE_PYTHON": str(py),
            "ANSIBLE_DEVEL_WARNING": "false",
            "ANSIBLE_PYTHON_INTERPRETER": "/set/ansible_python_interpreter/in/inventory",
            "PAGER": "/bin/cat",
            # Async jobs write under ~/.ansible_async; with a scratch HOME the wrapper and
            # async_status must agree on one absolute directory.
            "ANSIBLE_ASYNC_DIR": str(home / ".ansible_async"),
            "ANSIBLE_TEST_CI": "local",
            "ANSIBLE_TEST_COVERAGE": "",
            "ANSIBLE_TEST_ANSIBLE_VERSION": VERSION,
            "ANSIBLE_TEST_PYTHON_INTERPRETER": str(py),
            "ANSIBLE_TEST_PYTHON_VERSION": PYTHON_VERSION,
            "OUTPUT_DIR": str(output_dir),
            "INVENTORY_PATH": str(inventory),
        }
        support_plugins = SDIST_DIR / "test" / "support" / "integration" / "plugins"
        if (support_plugins / "modules").is_dir():
            env["ANSIBLE_LIBRARY"] = str(support_plugins / "modules")
        code: int | None = 0
        timed_out = False
        deadline = started + timeout
        with open(log_path, "w", encoding="utf-8", errors="replace") as logf:
            logf.write(f"# {t.name} under {engine} in {scratch}\n")
            # setup/always and setup/once targets run first, as ansible-test's run_setup_targets does.
            for setup_name in t.setup + [t.name]:
                cur = known[setup_name]
                run_env = dict(env)
                run_env.update(cur.env_set)
                if cur.script:
                    cwd = targets_dir / cur.name
                    run_env["ANSIBLE_PLAYBOOK_DIR"] = str(cwd)
                    cmd = ["./runme.sh"]
                else:
                    play = {
                        "hosts": "testhost",
                        "gather_facts": cur.gather_facts,
                        "vars_files": [],
                        "vars": {"output_dir": str(output_dir)},
                        "roles": [cur.name],
                    }
                    pb = integration / f"{cur.name}-play.yml"
                    pb.write_text(json.dumps([play], indent=4, sort_keys=True))
                    cwd = integration
                    run_env["ANSIBLE_PLAYBOOK_DIR"] = str(cwd)
                    run_env["ANSIBLE_ROLES_PATH"] = str(targets_dir)
                    cmd = ["ansible-playbook", pb.name, "-i", "inventory"]
                code, timed_out = run_cmd(cmd, cwd, run_env, logf, max(1.0, deadline - time.monotonic()))
                if timed_out or code != 0:
                    break
        text = log_path.read_text(encoding="utf-8", errors="replace")
        seconds = round(time.monotonic() - started, 1)
        if timed_out:
            task, msg = first_failure(text)
            return Outcome("timeout", seconds, None, task, f"timed out after {timeout:.0f}s" + (
                f"; last failure: {msg}" if msg else ""), str(log_path))
        if code == 0:
            return Outcome("pass", seconds, 0, log=str(log_path))
        task, msg = first_failure(text)
        return Outcome("fail", seconds, code, task, msg, str(log_path))
    except Exception as e:  # a broken layout is reported, not fatal to the whole run
        return Outcome("error", round(time.monotonic() - started, 1), None, "", f"runner error: {e}", str(log_path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_TASK_RE = re.compile(r"^(TASK|RUNNING HANDLER) \[(.*)\] \*+")
_FATAL_RE = re.compile(r"^(fatal|failed): \[[^\]]+\]( \(item=.*\))?: (FAILED!|UNREACHABLE!) => (.*)$")
_ERROR_RE = re.compile(r"^(ERROR!|\[ERROR\]:) ?(.*)")


def _msg_of(payload: str) -> str:
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(data, dict):
        if data.get("assertion"):
            return f"{data.get('msg', 'Assertion failed')}: {data['assertion']}"
        for key in ("msg", "message", "stderr"):
            if data.get(key):
                return str(data[key])
        results = data.get("results")
        if isinstance(results, list):
            for r in results:
                if isinstance(r, dict) and r.get("failed") and r.get("msg"):
                    return str(r["msg"])
    return payload


def first_failure(text: str) -> tuple[str, str]:
    """The task that made the run fail and its message, read from ansible-playbook-style output.

    Failures followed by `...ignoring` do not count. The last counted failure is the one that
    stopped the run (earlier ones were usually rescued or expected by the script); when there is
    none, the first ERROR line, then the last shell-trace command of a runme.sh.
    """
    lines = text.splitlines()
    task = ""
    found: tuple[str, str] | None = None
    error: tuple[str, str] | None = None
    warning: tuple[str, str] | None = None
    trace = ""
    for i, line in enumerate(lines):
        m = _TASK_RE.match(line)
        if m:
            task = m.group(2)
            continue
        m = _FATAL_RE.match(line)
        if m:
            payload, end = m.group(4), i
            if payload.strip() == "{":
                # Indented JSON (`_ansible_verbose_always` results): up to the closing brace.
                end = next((j for j in range(i + 1, len(lines)) if lines[j] == "}"), i)
                payload = "\n".join([payload] + lines[i + 1:end + 1])
            nxt = next((x for x in lines[end + 1:end + 3] if x.strip()), "")
            if "...ignoring" not in nxt:
                found = (task, _msg_of(payload))
            continue
        m = _ERROR_RE.match(line)
        if m and error is None:
            msg = m.group(2).strip()
            j = i + 1
            while not msg and j < len(lines):
                msg = lines[j].strip()
                j += 1
            error = ("(load)", msg)
            continue
        if line.startswith("[WARNING]: ") and "couldn't resolve module" in line and warning is None:
            warning = ("(module lookup)", line[len("[WARNING]: "):])
            continue
        if line.startswith("+ ") or line.startswith("++ "):
            trace = line
    pick = found or error or warning
    if pick is None:
        pick = ("(script)" if trace else "(playbook)",
                f"last command: {trace}" if trace else "no failing task in the output")
    task, msg = pick
    msg = " ".join(shorten(msg).split())
    return task, (msg[:300] + "…") if len(msg) > 300 else msg


# ---------------------------------------------------------------------------------------------
# Results, table and docs/compatibility.md


def load_results() -> dict[str, dict]:
    if RESULTS.exists():
        try:
            return json.loads(RESULTS.read_text())["targets"]
        except (ValueError, KeyError):
            return {}
    return {}


def save_results(results: dict[str, dict], keel_rev: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = {"ansible_core": VERSION, "updated": now(), "keel_revision": keel_rev, "targets": results}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(RESULTS)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cell(o: dict | None) -> str:
    return o["status"] if o else "-"


def counted(results: dict[str, dict], names: list[str]) -> tuple[int, int]:
    """(Keel passes, reference passes) over `names`; a target counts when the reference passes it."""
    ref = [n for n in names if n in results and (results[n].get("reference") or {}).get("status") == "pass"]
    ok = [n for n in ref if (results[n].get("keel") or {}).get("status") == "pass"]
    return len(ok), len(ref)


def shorten(msg: str) -> str:
    """Scratch paths differ on every run; keep the part under the targets folder."""
    return re.sub(r"/\S*?" + re.escape(UNICODE_SUFFIX) + r"/test/integration/(targets/)?", "", msg)


def escape(s: str) -> str:
    return shorten(s).replace("|", "\\|").replace("\n", " ")


def table(results: dict[str, dict], names: list[str]) -> str:
    rows = ["| target | kind | reference | Keel | first failing task | message |",
            "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        r = results.get(n)
        if not r:
            continue
        k = r.get("keel") or {}
        task = msg = ""
        if k.get("status") not in (None, "pass"):
            task, msg = k.get("failed_task", ""), k.get("message", "")
        elif (r.get("reference") or {}).get("status") not in (None, "pass"):
            ref = r["reference"]
            task, msg = ref.get("failed_task", ""), "reference: " + ref.get("message", "")
        rows.append(f"| {n} | {r['kind']} | {cell(r.get('reference'))} | {cell(r.get('keel'))} | "
                    f"{escape(task)} | {escape(msg)} |")
    return "\n".join(rows)


def write_doc(results: dict[str, dict], known: dict[str, Target], keel_rev: str, reasons: dict[str, str],
              path: Path) -> None:
    names = [n for n in target_lists.DEFAULT_TARGETS if n in results]
    ok, ref = counted(results, names)
    extra = sorted(n for n in results if n not in target_lists.DEFAULT_TARGETS)
    skipped: dict[str, list[str]] = {}
    for n, t in sorted(known.items()):
        why = target_lists.skip_reason(n, t.aliases)
        if why:
            skipped.setdefault(why, []).append(n)
    not_run = sorted(n for n, t in known.items() if n not in results and not target_lists.skip_reason(n, t.aliases))
    pct = f"{100 * ok / ref:.0f}%" if ref else "n/a"
    out = [
        "# Compatibility with ansible-core",
        "",
        f"Measured by `scripts/conformance` against ansible-core {VERSION}'s own integration targets "
        f"(from its sdist's `test/integration/targets/`), run the way ansible-test runs them: a `testhost` "
        "with `ansible_connection=local` in `testgroup`, role targets applied by a generated play (facts "
        "gathered unless the aliases say `gather_facts/no`, `output_dir` as a play variable, the targets "
        "folder as `ANSIBLE_ROLES_PATH`), `runme.sh` targets run with shims first on `PATH` that call Keel "
        "(`ansible-playbook` → `keel play`, `ansible-inventory`, `ansible-vault`, and `ansible` → `keel ansible`, "
        "the ad-hoc command). Each target runs once under ansible-core and once under Keel, in its own scratch "
        "directory (with ansible-test's unicode suffix), HOME and TMPDIR.",
        "",
        f"Last run: {now()}, Keel at `{keel_rev}`.",
        "",
        f"**Keel passes {ok} of the {ref} listed targets that ansible-core passes ({pct}).**",
        "",
        "A target counts when the reference passes it. Re-run with `scripts/conformance` (all listed "
        "targets) or `scripts/conformance NAME…`; raw results are in "
        "`/var/cache/keel/conformance/results.json`, logs under `/var/cache/keel/conformance/logs/`.",
        "",
        "## Listed targets (issue 13)",
        "",
        table(results, names),
        "",
    ]
    if extra:
        ok2, ref2 = counted(results, extra)
        out += ["## Other targets run", "", f"Keel passes {ok2} of {ref2} that ansible-core passes.", "",
                table(results, extra), ""]
    failing = [n for n in names if (results[n].get("reference") or {}).get("status") == "pass"
               and (results[n].get("keel") or {}).get("status") != "pass"]
    features = Path(__file__).resolve().parent / "features.md"
    if features.exists():
        # Hand-written: what Keel supports beyond what the targets measure, and deliberate differences.
        out += [features.read_text().rstrip(), ""]
    out += ["## Why the remaining failures fail", ""]
    if failing:
        for n in failing:
            out.append(f"- **{n}**: {reasons.get(n, 'not yet analysed')}")
    else:
        out.append("None.")
    out.append("")
    ref_fail = [n for n in names if (results[n].get("reference") or {}).get("status") != "pass"]
    if ref_fail:
        out += ["## Listed targets the reference itself fails here", "",
                "These do not count. They fail under ansible-core on this machine (usually because the "
                "target needs something ansible-test's containers provide).", ""]
        for n in ref_fail:
            r = results[n]["reference"]
            out.append(f"- **{n}**: {escape(r.get('failed_task', ''))}: {escape(r.get('message', ''))}")
        out.append("")
    out += ["## Skipped targets", "",
            "Targets that need a platform Keel does not claim or test Python internals of ansible-core.", ""]
    for why, ns in sorted(skipped.items()):
        out.append(f"- **{why}**: {', '.join(ns)}")
    out += ["", "## Targets not run yet", "",
            "In scope but not part of the listed set; run them with `scripts/conformance --all` or by name.", "",
            ", ".join(not_run) if not_run else "None.", ""]
    path.write_text("\n".join(out))


def load_reasons() -> dict[str, str]:
    """Hand-written reasons for remaining failures, kept next to the runner (tests/conformance/reasons.json)."""
    p = Path(__file__).resolve().parent / "reasons.json"
    if p.exists():
        return json.loads(p.read_text())
    return {}


# ---------------------------------------------------------------------------------------------


def keel_revision() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    rev = out.stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+dirty" if dirty else "")


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/conformance", description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="targets to run (default: the listed set from issue 13)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="targets run at once (default 2)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per target per engine (default 600)")
    ap.add_argument("--keel", type=Path, help="the keel binary (required unless --ensure-venv)")
    ap.add_argument("--ensure-venv", action="store_true",
                    help="run nothing: make sure the reference venv exists (from the cached sdist) and print "
                         "its bin directory; Keel's own tests use it to reach the real ansible-* tools")
    ap.add_argument("--subset", action="store_true",
                    help="run the ten-target CI subset; fail unless Keel passes them all; no doc, no cache update")
    ap.add_argument("--all", action="store_true", help="every target not skipped")
    ap.add_argument("--rerun-reference", action="store_true",
                    help="run the reference again even when results.json has its outcome")
    ap.add_argument("--no-reference", action="store_true", help="only run Keel (reference outcomes from results.json)")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "compatibility.md",
                    help="where to write the compatibility page")
    ap.add_argument("--no-doc", action="store_true", help="do not write the compatibility page")
    ap.add_argument("--notes", type=Path, help="also copy the table to this file")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: rewrite the page (and --notes) from results.json")
    args = ap.parse_args()

    CACHE.mkdir(parents=True, exist_ok=True)
    # Keel's test binaries may ask for the venv at the same time: one builds it, the others wait.
    with open(CACHE / ".setup.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        root = ensure_sdist()
        ensure_venv()
    if args.ensure_venv:
        print(VENV / "bin")
        return 0
    if args.keel is None:
        ap.error("--keel is required")
    global PYTHON_VERSION
    PYTHON_VERSION = subprocess.run([str(VENV / "bin" / "python"), "-c",
                                     "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    known = all_targets(root)
    keel = args.keel.resolve()
    if not keel.exists():
        log(f"no keel binary at {keel}")
        return 2

    if args.subset:
        names = list(target_lists.SUBSET)
    elif args.targets:
        names = args.targets
    elif args.all:
        names = [n for n, t in known.items() if not target_lists.skip_reason(n, t.aliases)]
    else:
        names = list(target_lists.DEFAULT_TARGETS)
    unknown = [n for n in names if n not in known]
    if unknown:
        log(f"unknown targets: {', '.join(unknown)}")
        return 2

    stored = {} if args.subset else load_results()
    if args.report:
        write_outputs(stored, known, args)
        return 0
    scratch_root = Path(tempfile.mkdtemp(prefix="keel-conformance-"))
    bins = {e: make_bin_dir(scratch_root, e, keel) for e in ENGINES}
    lock = threading.Lock()
    results: dict[str, dict] = {}

    def one(name: str) -> dict:
        t = known[name]
        res = Result(name, "script" if t.script else "role")
        prev = stored.get(name, {})
        ref_prev = prev.get("reference")
        if ref_prev and not args.rerun_reference or args.no_reference:
            res.reference = Outcome(**ref_prev) if ref_prev else None
        else:
            res.reference = run_target(t, "reference", known, bins["reference"], scratch_root, args.timeout)
        res.keel = run_target(t, "keel", known, bins["keel"], scratch_root, args.timeout)
        d = asdict(res)
        with lock:
            ref_s = res.reference.status if res.reference else "-"
            log(f"{name:32} reference={ref_s:8} keel={res.keel.status:8} "
                f"{res.keel.failed_task[:40]} {res.keel.message[:80]}")
        return d

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for d in pool.map(one, names):
                results[d["target"]] = d
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)

    print(table(results, names))
    ok, ref = counted(results, names)
    print(f"\nKeel passes {ok} of {ref} targets that ansible-core {VERSION} passes "
          f"({len(names)} run).")

    if args.subset:
        bad = [n for n in names if results[n]["keel"]["status"] != "pass"]
        # With --no-reference and nothing cached, a target has no reference result.
        ref_bad = [n for n in names
                   if (results[n].get("reference") or {}).get("status", "pass") != "pass"]
        if ref_bad:
            log(f"reference fails subset targets (machine problem?): {', '.join(ref_bad)}")
        if bad:
            log(f"Keel fails subset targets: {', '.join(bad)} (logs in {LOGS / 'keel'})")
            return 1
        return 0

    merged = dict(stored)
    merged.update(results)
    save_results(merged, keel_revision())
    write_outputs(merged, known, args)
    return 0


def write_outputs(merged: dict[str, dict], known: dict[str, Target], args: argparse.Namespace) -> None:
    rev = keel_revision()
    if not args.no_doc:
        write_doc(merged, known, rev, load_reasons(), args.doc)
        log(f"wrote {args.doc}")
    if args.notes:
        names_all = [n for n in target_lists.DEFAULT_TARGETS if n in merged] + sorted(
            n for n in merged if n not in target_lists.DEFAULT_TARGETS)
        ok, ref = counted(merged, names_all)
        args.notes.write_text(f"# Conformance, {now()}, Keel {rev}\n\nKeel passes {ok} of {ref} "
                              f"(reference passes). Logs: {LOGS}/<engine>/<target>.log; "
                              f"JSON: {RESULTS}\n\n{table(merged, names_all)}\n")
        log(f"wrote {args.notes}")


if __name__ == "__main__":
    sys.exit(main())
