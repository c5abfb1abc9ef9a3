# A tiny WSGI app for appd's tests and benchmark, served by gunicorn or by
# appd-python.
#
# Environment: APP_IMPORT_MB=N allocates and touches N MiB at import (an
# application with a heavy import, shared by preloaded workers);
# APP_FAIL_IMPORT=1 raises at import.
# Paths: / answers "pid=P slot=S gen=G imported_by=I"; /slow?ms=N answers
# after N ms; /leak?mb=N allocates N MiB and keeps it; /cgroup answers the
# worker's /proc/self/cgroup.
import os
import time

IMPORTED_BY = os.getpid()

if os.environ.get("APP_FAIL_IMPORT") == "1":
    raise RuntimeError("APP_FAIL_IMPORT is set")

_import_mb = int(os.environ.get("APP_IMPORT_MB", "0") or 0)
# Distinct bytes per page, so no page is a zero page or merged.
BALLAST = [bytearray(os.urandom(64) * (1 << 14)) for _ in range(_import_mb)]
_leaked = []


def _arg(environ, name, default):
    for kv in environ.get("QUERY_STRING", "").split("&"):
        k, _, v = kv.partition("=")
        if k == name and v.isdigit():
            return int(v)
    return default


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/slow":
        time.sleep(_arg(environ, "ms", 1000) / 1000.0)
        body = "slow done pid=%d\n" % os.getpid()
    elif path == "/leak":
        mb = _arg(environ, "mb", 10)
        chunk = bytearray(mb << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        _leaked.append(chunk)
        body = "pid=%d leaked %d MiB\n" % (os.getpid(), mb)
    elif path == "/cgroup":
        with open("/proc/self/cgroup") as f:
            body = "pid=%d %s" % (os.getpid(), f.read())
    else:
        body = "pid=%d slot=%s gen=%s imported_by=%d\n" % (
            os.getpid(), os.environ.get("APPD_WORKER"), os.environ.get("APPD_GENERATION"), IMPORTED_BY)
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
