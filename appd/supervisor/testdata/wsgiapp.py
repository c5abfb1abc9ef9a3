# A tiny WSGI app for appd's tests and benchmark, served by gunicorn.
import os


def app(environ, start_response):
    body = "pid=%d slot=%s gen=%s\n" % (
        os.getpid(), os.environ.get("APPD_WORKER"), os.environ.get("APPD_GENERATION"))
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
