"""schemathesis hooks for scripts/api-fuzz: the role-matrix check.

Loaded through SCHEMATHESIS_HOOKS. When KEEL_FUZZ_ROLE is "user", every
answer is checked against what an ordinary user may reach: nothing whose
operation is marked `x-access: PlatformAdmin` in the panel's OpenAPI
document, and nothing of the site, server, job or SSH key that
scripts/api-fuzz seeded for someone else (their ids come in
KEEL_FUZZ_FOREIGN as JSON). A 2xx answer to such a request fails the run.
"""

import json
import os

import schemathesis

ROLE = os.environ.get("KEEL_FUZZ_ROLE", "")
FOREIGN = json.loads(os.environ.get("KEEL_FUZZ_FOREIGN", "{}"))

# The first path segment, with an `{id}` after it, names the kind of the id.
KINDS = {"sites": "site", "services": "service", "jobs": "job"}


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _foreign_target(case):
    """The seeded foreign object this request names, or None."""
    parts = case.operation.path.strip("/").split("/")
    params = case.path_parameters or {}
    if len(parts) >= 2 and parts[1] == "{id}" and parts[0] in KINDS:
        kind = KINDS[parts[0]]
        if _int(params.get("id")) == FOREIGN.get(kind):
            return f"{kind} {params.get('id')}"
    if parts[:2] == ["me", "ssh-keys"] and len(parts) == 3:
        if _int(params.get("id")) == FOREIGN.get("key"):
            return f"someone else's SSH key {params.get('id')}"
    body = case.body if isinstance(case.body, dict) else {}
    if _int(body.get("site_id")) == FOREIGN.get("site"):
        return f"site {body.get('site_id')} (in the body)"
    return None


@schemathesis.check
def role_matrix(ctx, response, case):
    """An ordinary user never gets a 2xx from what the role matrix forbids."""
    if ROLE != "user" or not 200 <= response.status_code < 300:
        return None
    access = (case.operation.definition.raw or {}).get("x-access")
    if access == "PlatformAdmin":
        raise AssertionError(
            f"an ordinary user got {response.status_code} from "
            f"{case.method} {case.operation.path}, which is for platform admins only"
        )
    target = _foreign_target(case)
    if target is not None:
        raise AssertionError(
            f"an ordinary user got {response.status_code} from "
            f"{case.method} {case.formatted_path} on {target}, which is not theirs"
        )
    return None
