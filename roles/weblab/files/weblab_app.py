"""Stand-in for the WebLab-Deusto core server (see the role's README.md).

A WSGI application served by gunicorn from the role's virtualenv under
supervisor, like the real core server. Under its base path it answers with
JSON naming itself and whether its two backends answer: Redis (the
scheduling backend, with its password) and MariaDB (with the weblab user).
"""

import json
import os

import pymysql
import redis

with open(os.environ.get("WEBLAB_SETTINGS", "settings.json")) as f:
    SETTINGS = json.load(f)


def check_redis():
    r = SETTINGS["redis"]
    try:
        client = redis.Redis(host=r["host"], port=r["port"], password=r["password"], socket_timeout=3)
        return "ok" if client.ping() else "no answer"
    except Exception as e:  # report, do not fail the page
        return "error: %s" % type(e).__name__


def check_db():
    d = SETTINGS["db"]
    try:
        conn = pymysql.connect(host=d["host"], user=d["user"], password=d["password"],
                               database=d["name"], connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return "ok" if cur.fetchone()[0] == 1 else "bad answer"
        finally:
            conn.close()
    except Exception as e:
        return "error: %s" % type(e).__name__


def application(environ, start_response):
    base = SETTINGS["base_path"].rstrip("/") + "/"
    path = environ.get("PATH_INFO", "")
    if not path.startswith(base):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = json.dumps({
        "service": "weblab-deusto",
        "stand_in": True,
        "pid": os.getpid(),
        "scheme": environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme")),
        "redis": check_redis(),
        "database": check_db(),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
