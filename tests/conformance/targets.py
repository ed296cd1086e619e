"""Which ansible-core integration targets the conformance runner runs, and why others are skipped.

Read by ``tests/conformance/runner.py`` (driven by ``scripts/conformance``). The default set is the
list from issue 13; ``SUBSET`` is the fast slice that ``scripts/test`` runs on every change; the
skip rules name the platforms and internals Keel does not claim, with the reason printed in
``docs/compatibility.md``.
"""

from __future__ import annotations

# Role-style targets from issue 13 (the lookup_* entries are every lookup target that needs no network).
ROLE_TARGETS = [
    "assemble", "blockinfile", "changed_when", "command_shell", "dict_transformations", "failed_when",
    "filter_urls", "filter_urlsplit", "getent", "ignore_errors", "include_vars", "include_import_tasks_nested",
    "known_hosts",
    "lookup_config", "lookup_csvfile", "lookup_dict", "lookup_env", "lookup_file", "lookup_fileglob",
    "lookup_first_found", "lookup_indexed_items", "lookup_ini", "lookup_inventory_hostnames", "lookup_items",
    "lookup_lines", "lookup_list", "lookup_nested", "lookup_password", "lookup_pipe", "lookup_random_choice",
    "lookup_sequence", "lookup_subelements", "lookup_template", "lookup_together", "lookup_unvault",
    "lookup_varnames", "lookup_vars",
    "loop-until", "loops", "ping", "replace", "script", "special_vars", "split", "stat", "task_ordering",
    "tempfile", "templating", "test_files", "test_mathstuff", "undefined", "until", "var_inheritance",
]

# Script-style targets from issue 13 (runme.sh, run through the ansible-playbook shim).
# There is no `run_once` target in 2.19.14; `special_vars_hosts` (ansible_play_hosts and friends)
# stands in, and run_once itself is exercised by strategy_linear, handlers, blocks, roles and
# include_import.
SCRIPT_TARGETS = [
    "blocks", "handlers", "tags", "conditionals", "register", "check_mode", "var_precedence", "include_import",
    "roles", "omit", "set_fact", "loop_control", "filter_core", "filter_mathstuff", "test_core",
    "any_errors_fatal", "strategy_free", "strategy_linear", "vars_files", "var_blending", "var_templating",
    "delegate_to", "add_host", "group_by", "meta_tasks", "keyword_inheritance", "play_iterator",
    "special_vars_hosts", "throttle", "order", "limit_inventory", "inventory_ini", "inventory_yaml",
]

# Some names above are listed by the issue under one style but are the other kind in the sdist
# (ignore_errors, include_vars and several lookups have a runme.sh; add_host is a role). The runner
# decides the kind from the target's files, exactly as ansible-test does.
DEFAULT_TARGETS = list(dict.fromkeys(ROLE_TARGETS + SCRIPT_TARGETS))

# Ten representative targets Keel passes, run by `scripts/test` (`scripts/conformance --subset`).
# Chosen to be fast and to touch different parts of the engine: setup_remote_tmp_dir (search
# paths, handler includes, the tempfile module), role_path imports, loops and lookups, Jinja
# tests, variable precedence, and script targets through the shim (register, loop_control,
# group_by, check mode).
SUBSET = [
    "tempfile", "include_import_tasks_nested", "lookup_items", "lookup_file", "test_files", "var_inheritance",
    "register", "loop_control", "group_by", "check_mode",
]

# Targets not run, by a reason that applies to a whole family. The order matters: first match wins.
_PYTHON_INTERNALS = (
    "ansiballz", "module_utils", "plugin_loader", "plugin_filtering", "plugin_namespace", "rel_plugin_loading",
    "collections", "collection", "module_precedence", "binary_modules", "old_style", "want_json_modules",
    "jinja_plugins", "module_tracebacks", "module-serialization-profiles", "result_pickle_error",
    "python_module_rlimit_nofile", "pkg_resources", "missing_required_lib", "interpreter_discovery",
    "missing-interpreter", "embedded_module", "argspec", "json-serialization", "json_cleanup",
    "fork_safe_stdio", "data_tagging_controller", "protomatter", "strategy-external", "cache-plugins",
    "callback", "support-callback_plugins", "old_style_vars_plugins", "unexpected_executor_exception",
    "entry_points", "packaging_cli-doc", "deprecations", "debugger", "async_extra_data",
)


def skip_reason(name: str, aliases: list[str]) -> str | None:
    """The reason a target is out of scope for Keel, or None when it should run."""
    if name.startswith("win_") or name.startswith("windows") or "windows" in name or any(
            a.startswith("windows") for a in aliases):
        return "Windows"
    if name.startswith("incidental_"):
        return "Network devices / Windows (incidental coverage)"
    if any(a.startswith("network/") for a in aliases) or name in ("common_network", "cli", "connection_psrp",
                                                                   "connection_winrm"):
        return "Network devices or WinRM/PSRP connections"
    if any(a.startswith("cloud/") for a in aliases) or "needs/httptester" in aliases or name in (
            "lookup_url", "get_url", "uri", "test_uri", "prepare_http_tests"):
        return "Cloud / external HTTP services (ansible-test's httptester container)"
    if name in ("dnf", "dnf5", "dnf-latest", "dnf-oldest", "yum_repository", "rpm_key", "setup_rpm_repo"):
        return "RPM-based platforms"
    if name.startswith("ansible-test"):
        return "ansible-test itself (Python tooling)"
    if name in ("ansible-galaxy", "ansible-galaxy-collection", "ansible-galaxy-collection-cli",
                "ansible-galaxy-collection-scm", "ansible-galaxy-role", "ansible-doc", "ansible-console",
                "ansible-pull", "ansible-config", "config", "ansible-playbook-callbacks", "ansible_log"):
        return "Other ansible-* tools or config/plugin documentation Keel does not ship"
    if any(name.startswith(p) or name == p for p in _PYTHON_INTERNALS):
        return "Python module/plugin internals (AnsiballZ, module_utils, plugin loaders, callbacks)"
    if name.startswith("setup_") or name.startswith("prepare_") or "hidden" in aliases:
        return "Support role used by other targets, not a test"
    return None
