"""Stand-in for CC-Server's web API (see roles/ccserver/README.md).

Reads config.toml as CC-Server does and answers under /cc/ with the
settings it runs with and whether each Docker node answers Docker's API
over TLS with the client certificate.
"""

import json
import os
import ssl
import tomllib
import urllib.request

with open(os.environ["CC_SERVER_CONFIG"], "rb") as f:
    CONFIG = tomllib.load(f)


def ping(node):
    tls = node["tls"]
    ctx = ssl.create_default_context(cafile=tls["verify"])
    ctx.check_hostname = tls.get("assert_hostname", True)
    ctx.load_cert_chain(*tls["client_cert"])
    url = node["base_url"].replace("tcp://", "https://", 1) + "/_ping"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return "ok" if r.read() == b"OK" else "bad answer"
    except Exception as e:
        return "error: %s" % type(e).__name__


def application(environ, start_response):
    if not environ.get("PATH_INFO", "").startswith("/cc/"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    nodes = CONFIG.get("docker", {}).get("nodes", {})
    body = json.dumps({
        "service": "cc-server",
        "stand_in": True,
        "thread_limit": CONFIG["docker"]["thread_limit"],
        "max_task_trials": CONFIG["defaults"]["error_handling"]["max_task_trials"],
        "nodes": {name: ping(node) for name, node in nodes.items()},
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
