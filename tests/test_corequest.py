"""Corequests: `was` calls from apps served by skitaid to real backends on loopback.

The backend is a plain http.server (threaded, with a slow endpoint, a
counter, XML-RPC and JSON-RPC) running in the test process; the app under
test is a real skitaid server that calls it.
"""
import json
import threading
import time
import xmlrpc.server
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import free_port, wait_for
from helpers.clients import fetch, get_json


class Backend:
    def __init__(self):
        self.hits = []
        self.counter = 0
        self.lock = threading.Lock()
        rpc = xmlrpc.server.SimpleXMLRPCDispatcher(allow_none=True)
        rpc.register_function(lambda a, b: a + b, "add")
        rpc.register_function(lambda: 1 / 0, "boom")
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body, ctype="application/json", headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for h in headers:
                    self.send_header(*h)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with backend.lock:
                    backend.hits.append((self.command, self.path, dict(self.headers)))
                    backend.counter += 1
                    n = backend.counter
                if url.path == "/slow":
                    time.sleep(float(query.get("s", ["1"])[0]))
                    return self._reply(200, {"slept": query.get("s", ["1"])[0], "n": n})
                if url.path == "/counter":
                    return self._reply(200, {"n": n})
                if url.path == "/max-age":
                    return self._reply(200, {"n": n}, headers=[("Cache-Control", "max-age=60")])
                if url.path == "/echo":
                    return self._reply(200, {
                        "method": self.command, "query": url.query,
                        "content_type": self.headers.get("Content-Type"),
                        "body": body.decode("utf-8", "replace"),
                        "gtxid": self.headers.get("X-Gtxn-Id"),
                        "ltxid": self.headers.get("X-Ltxn-Id"),
                        "port": backend.port})
                if url.path == "/RPC2":
                    return self._reply(200, rpc._marshaled_dispatch(body), "text/xml")
                if url.path == "/jsonrpc":
                    call = json.loads(body)
                    if call["method"] == "add":
                        reply = {"jsonrpc": "2.0", "result": sum(call["params"]), "id": call["id"]}
                    else:
                        reply = {"jsonrpc": "2.0", "id": call["id"],
                                 "error": {"code": -32601, "message": "no such method"}}
                    return self._reply(200, reply)
                if url.path == "/missing":
                    return self._reply(404, {"error": "not here"})
                return self._reply(404, {"error": "unknown"})

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None      # clients that gave up (timeouts)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


@pytest.fixture
def backend2():
    b = Backend()
    yield b
    b.close()


APP = r'''
import json, os, time
import skitaid
from skitaid import was

B = os.environ["BACKEND"]
MEMBERS = os.environ.get("MEMBERS", "").split(",")
if MEMBERS != [""]:
    skitaid.alias("@back", "http", MEMBERS)
skitaid.register_cache_keys("items")

def answer(start, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path = env["PATH_INFO"]
    if path == "/three":
        t0 = time.monotonic()
        tasks = was.Tasks([was.get(B + "/slow?s=1") for _ in range(3)], timeout=5)
        data = tasks.fetch()
        return answer(start, {"elapsed": time.monotonic() - t0, "data": data})
    if path == "/stub":
        with was.stub(B) as stub:
            a = stub.get("/echo", q="x", limit=2)
            b = stub.post("/echo", {"k": "v"})
            c = stub.post("/echo", user="hans")
            d = stub.put("/echo", "raw text")
        e = was.post(B + "/echo", {"a": "1"},
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        kw = was.Tasks(a=a, b=b, c=c, d=d, e=e).dict()
        return answer(start, kw)
    if path == "/timeout":
        r = was.get(B + "/slow?s=3").dispatch(timeout=0.5)
        return answer(start, {"status": r.status, "timeout": skitaid.STA_TIMEOUT})
    if path == "/own-timeout":
        # no dispatch() timeout: the call's own one applies, not the default 10 s
        t0 = time.monotonic()
        r = was.get(B + "/slow?s=2", timeout=0.3).dispatch()
        return answer(start, {"status": r.status, "elapsed": time.monotonic() - t0})
    if path == "/queued":
        # all 32 connections to the origin busy: the wait for one is part of the call
        busy = [was.get(B + "/slow?s=2&i=%d" % i) for i in range(32)]
        time.sleep(0.3)
        t0 = time.monotonic()
        r = was.get(B + "/counter", timeout=0.3).dispatch()
        elapsed = time.monotonic() - t0
        was.Tasks(busy).dispatch(5)
        return answer(start, {"status": r.status, "elapsed": elapsed})
    if path == "/errors":
        refused = was.get("http://127.0.0.1:%s/" % os.environ["DEAD"]).dispatch(2)
        unknown = was.get("@nosuch/x").dispatch(2)
        missing = was.get(B + "/missing").dispatch(2)
        try:
            was.get(B + "/missing").fetch(2)
            raised = None
        except skitaid.CorequestError as e:
            raised = e.status_code
        one = [was.Mask([7]).one()]
        for items in ([], [1, 2]):
            try:
                was.Mask(items).one()
            except skitaid.CorequestError as e:
                one.append(e.status_code)
        return answer(start, {"refused": refused.status, "unknown": unknown.status,
                              "missing": [missing.status, missing.status_code], "raised": raised,
                              "one": one, "mask": was.Mask([1, 2]).fetch(),
                              "thread": was.Thread(sum, [1, 2, 3]).fetch(),
                              "subprocess": was.Subprocess("echo hi").fetch().strip()})
    if path == "/rpc":
        with was.xmlrpc(B + "/RPC2") as rpc:
            x = rpc.add(2, 3)
            fault = rpc.boom()
        j = was.jsonrpc(B + "/jsonrpc")
        y = j.add(4, 5)
        bad = j.nothing().dispatch(2)
        return answer(start, {"xml": x.fetch(2), "fault": fault.dispatch(2).status_code,
                              "json": y.fetch(2), "json_error": [bad.status_code, bad.data]})
    if path == "/lb":
        rs = [was.get.lb("@back/echo").dispatch(3) for _ in range(6)]
        return answer(start, [[r.status, r.status_code, r.data["port"] if r.status_code == 200
                               else None] for r in rs])
    if path == "/map":
        rs = was.get.map("@back/echo").dispatch(3)
        return answer(start, sorted([r.status, r.data["port"] if r.status_code == 200 else 0]
                                    for r in rs))
    if path == "/cached":
        r = was.get(B + "/counter", use_cache=was.getlu("items")).dispatch(3, cache=60)
        return answer(start, {"n": r.data["n"], "pid": os.getpid()})
    if path == "/max-age":
        return answer(start, was.get(B + "/max-age").fetch(3))
    if path == "/update":
        was.setlu("items")
        was.setgs("hits", was.getgs("hits") + 1)
        return answer(start, {"pid": os.getpid(), "gs": was.getgs("hits")})
    if path == "/txn":
        a = was.get(B + "/echo")
        b = was.get(B + "/echo")
        return answer(start, was.Tasks([a, b]).fetch(3))
    if path == "/chain":
        # calls the second skitaid server, which calls the backend
        return answer(start, was.get(os.environ["NEXT"] + "/txn").fetch(5))
    if path == "/signatures":
        # the call forms of the pages: Tasks(reqs, N), **meta, dispatch(cache, timeout=)
        t0 = time.monotonic()
        rs = was.Tasks([was.get(B + "/slow?s=3")], 0.3).dispatch()
        meta_tasks = was.Tasks([was.get(B + "/counter")], 3, user="hans", a=was.get(B + "/echo"))
        out = {"list_timeout": [r.status for r in rs], "elapsed": time.monotonic() - t0,
               "meta": meta_tasks.meta, "dict": sorted(meta_tasks.dict())}
        r1 = was.get(B + "/counter?c1").dispatch(60, timeout=2)
        r2 = was.get(B + "/counter?c1").dispatch(60, timeout=2)
        f1 = was.get(B + "/counter?c2").fetch(2, 60)
        f2 = was.get(B + "/counter?c2").fetch(2, 60)
        c1 = was.get(B + "/counter?c3").dispatch(60, (200, 201), timeout=2)
        c2 = was.get(B + "/counter?c3").dispatch(60, (200, 201), timeout=2)
        out["cached"] = [r1.data["n"] == r2.data["n"], f1["n"] == f2["n"],
                         c1.data["n"] == c2.data["n"]]
        t0 = time.monotonic()
        out["dispatch_5_is_timeout"] = was.get(B + "/slow?s=3").dispatch(0.3).status
        out["elapsed2"] = time.monotonic() - t0
        errors = []
        t = was.Mask(1)
        for call in (lambda: was.get(B + "/echo").dispatch("5"),
                     lambda: was.get(B + "/echo").dispatch(-1),
                     lambda: was.get(B + "/echo").dispatch(1, 2, (200,), 4),
                     lambda: was.get(B + "/echo").fetch(2, cache_if=200),
                     lambda: was.get(B + "/echo").dispatch(5, timeout=2, cache=3),
                     lambda: was.Tasks([t]).fetch(True),
                     lambda: was.Tasks(t, 3),
                     lambda: was.Tasks([t], "3"),
                     lambda: was.Tasks([t], 3, 4),
                     lambda: was.Tasks([t], 3, timeout=4),
                     lambda: was.stub(7)):
            try:
                call()
                errors.append(None)
            except (TypeError, ValueError) as e:
                errors.append([type(e).__name__, str(e)])
        out["errors"] = errors
        return answer(start, out)
    if path == "/stub-map":
        with was.stub.map("@back") as s:
            stub_map = s.get("/echo").dispatch(3)
        with was.stub.lb("@back") as s:
            stub_lb = s.get("/echo").fetch(3)
        with was.xmlrpc.map("@back/RPC2") as rpc:
            xml_map = rpc.add(1, 2).dispatch(3)
        xml_lb = was.xmlrpc.lb("@back/RPC2").add(2, 2).fetch(3)
        json_map = was.jsonrpc.map("@back/jsonrpc").add(3, 4).dispatch(3)
        json_lb = was.jsonrpc.lb("@back/jsonrpc").add(1, 1).fetch(3)
        return answer(start, {"stub_map": sorted(r.data["port"] for r in stub_map),
                              "stub_lb": stub_lb["port"],
                              "xml_map": [r.data for r in xml_map], "xml_lb": xml_lb,
                              "json_map": [r.data for r in json_map], "json_lb": json_lb})
    return answer(start, {"path": path}, "404 Not Found")

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "4")),
            processes=int(os.environ.get("PROCESSES", "1")),
            request_log_file=os.environ.get("REQLOG", ""))
'''


def get(port, path, timeout=10):
    r = fetch(port, path, timeout=timeout)
    if r.header("Content-Type") != "application/json":
        return r.status, r.body
    return r.status, r.json()


@pytest.fixture
def app(serve, backend):
    def start(**env):
        env.setdefault("BACKEND", backend.url)
        env.setdefault("DEAD", str(free_port()))
        return serve(APP, env={k: str(v) for k, v in env.items()})
    return start


def test_three_slow_calls_run_concurrently(app):
    s = app()
    status, body = get(s.port, "/three")
    assert status == 200
    assert [d["slept"] for d in body["data"]] == ["1", "1", "1"]
    assert body["elapsed"] < 1.5


def test_stub_verbs_bodies_and_named_tasks(app):
    s = app()
    status, d = get(s.port, "/stub")
    assert status == 200
    assert d["a"]["method"] == "GET" and sorted(d["a"]["query"].split("&")) == ["limit=2", "q=x"]
    assert d["b"]["content_type"] == "application/json" and json.loads(d["b"]["body"]) == {"k": "v"}
    assert json.loads(d["c"]["body"]) == {"user": "hans"}
    assert d["d"]["method"] == "PUT" and d["d"]["body"] == "raw text"
    assert d["e"]["body"] == "a=1"


def test_timeout_gives_sta_timeout(app):
    s = app()
    t0 = time.monotonic()
    status, d = get(s.port, "/timeout")
    assert status == 200 and d["status"] == d["timeout"] == 1
    assert time.monotonic() - t0 < 2.5


def test_dispatch_waits_for_the_calls_own_timeout(app):
    s = app()
    status, d = get(s.port, "/own-timeout")
    assert status == 200 and d["status"] == 1           # STA_TIMEOUT
    assert 0.25 <= d["elapsed"] < 1.0                   # ~0.3 s, not the 2 s backend


def test_call_timeout_covers_waiting_for_a_connection(app):
    s = app()
    status, d = get(s.port, "/queued")
    assert status == 200 and d["status"] == 1           # STA_TIMEOUT
    assert 0.25 <= d["elapsed"] < 1.0


def test_errors_statuses_and_local_tasks(app):
    s = app()
    status, d = get(s.port, "/errors")
    assert status == 200
    assert d["refused"] == 2          # STA_NETERR
    assert d["unknown"] == -1         # STA_REQFAIL
    assert d["missing"] == [3, 404]   # STA_NORMAL: the exchange completed
    assert d["raised"] == 404
    assert d["one"] == [7, 410, 410]
    assert d["mask"] == [1, 2] and d["thread"] == 6 and d["subprocess"] == "hi"


def test_xmlrpc_and_jsonrpc_round_trips(app):
    s = app()
    status, d = get(s.port, "/rpc")
    assert status == 200
    assert d["xml"] == 5 and d["fault"] == 500
    assert d["json"] == 9 and d["json_error"][0] == 500 and d["json_error"][1]["code"] == -32601


def test_lb_fails_over_and_map_reaches_every_member(app, backend, backend2):
    dead = free_port()
    s = app(MEMBERS="127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d" % (backend.port, dead, backend2.port))
    status, rows = get(s.port, "/lb")
    assert status == 200
    assert all(r[0] == 3 and r[1] == 200 for r in rows)      # every call answered
    assert {r[2] for r in rows} == {backend.port, backend2.port}
    status, rows = get(s.port, "/map")
    # one Result per member, the dead one's failed
    assert rows == sorted([[2, 0], [3, backend.port], [3, backend2.port]])


def test_map_returns_one_result_per_member(app, backend, backend2):
    s = app(MEMBERS="127.0.0.1:%d,127.0.0.1:%d" % (backend.port, backend2.port))
    status, rows = get(s.port, "/map")
    assert status == 200 and rows == sorted([[3, backend.port], [3, backend2.port]])


def test_corequest_call_forms_of_the_pages(app):
    s = app()
    status, d = get(s.port, "/signatures")
    assert status == 200
    # Tasks(reqs, 0.3): the second positional is the timeout
    assert d["list_timeout"] == [1] and d["elapsed"] < 2.0
    # keyword values that are not tasks are user data; keyword tasks stay named
    assert d["meta"] == {"user": "hans"} and d["dict"] == ["a"]
    # dispatch(60, timeout=2), fetch(2, 60), dispatch(60, (200, 201), timeout=2): cached
    assert d["cached"] == [True, True, True]
    assert d["dispatch_5_is_timeout"] == 1 and d["elapsed2"] < 2.0
    e = d["errors"]
    assert all(x is not None for x in e), e
    assert e[0][0] == "TypeError" and "Task.dispatch(): timeout" in e[0][1]
    assert e[1][0] == "ValueError" and "Task.dispatch(): timeout" in e[1][1]
    assert "Task.dispatch() takes at most 3 positional" in e[2][1]
    assert "Task.fetch(): cache_if" in e[3][1]
    assert "Task.dispatch() got multiple values for argument 'cache'" in e[4][1]
    assert "Tasks.fetch(): timeout" in e[5][1]
    assert "Tasks(): positional argument 2" in e[6][1] and "timeout=N" in e[6][1]
    assert e[7][0] == "TypeError" and "Tasks(): timeout" in e[7][1]
    assert "Tasks(): a list of tasks may only be followed by the timeout" in e[8][1]
    assert "Tasks() got multiple values for argument 'timeout'" in e[9][1]
    assert "was.stub(): url" in e[10][1]


def test_stub_and_rpc_lb_and_map(app, backend, backend2):
    s = app(MEMBERS="127.0.0.1:%d,127.0.0.1:%d" % (backend.port, backend2.port))
    status, d = get(s.port, "/stub-map")
    assert status == 200, d
    ports = sorted([backend.port, backend2.port])
    assert d["stub_map"] == ports and d["stub_lb"] in ports
    assert d["xml_map"] == [3, 3] and d["xml_lb"] == 4
    assert d["json_map"] == [7, 7] and d["json_lb"] == 2


def test_cache_headers_are_honoured(app, backend):
    s = app()
    first = get(s.port, "/max-age")[1]["n"]
    assert get(s.port, "/max-age")[1]["n"] == first       # max-age=60: no second backend hit


def _new_conn_get(port, path):
    return get_json(port, path, timeout=10, close=True)[1]


def test_cached_result_expired_by_setlu_in_another_worker(app):
    s = app(PROCESSES=2)
    seen = {}       # pid → n cached there

    def both_cached():
        d = _new_conn_get(s.port, "/cached")
        assert seen.get(d["pid"], d["n"]) == d["n"]      # reused while not updated
        seen[d["pid"]] = d["n"]
        return len(seen) == 2
    assert wait_for(both_cached, 10, 0)
    updated_by = _new_conn_get(s.port, "/update")["pid"]
    other = [pid for pid in seen if pid != updated_by][0]

    def other_refetched():
        d = _new_conn_get(s.port, "/cached")
        return d if d["pid"] == other else None
    d = wait_for(other_refetched, 10, 0)
    assert d and d["n"] > max(seen.values())           # the other worker's cache entry expired
    # setgs: both workers see the same counter
    gs = [_new_conn_get(s.port, "/update") for _ in range(6)]
    assert [g["gs"] for g in gs] == list(range(2, 8))


def test_transaction_ids_in_both_request_logs(app, tmp_path, serve, backend):
    log1 = tmp_path / "front.log"
    log2 = tmp_path / "middle.log"
    middle = app(REQLOG=log2)
    # a second server from the same script file in another directory
    front_dir = tmp_path / "front"
    front_dir.mkdir()
    from conftest import ServerProc
    import sys
    (front_dir / "app.py").write_text(APP)
    env = {"BACKEND": backend.url, "DEAD": str(free_port()), "REQLOG": str(log1),
           "NEXT": middle.url}
    front = ServerProc([sys.executable, str(front_dir / "app.py")], str(front_dir), env=env)
    try:
        status, data = get(front.port, "/chain")
        assert status == 200
        gtxid = data[0]["gtxid"]
        assert gtxid.startswith("GTID-") and data[1]["gtxid"] == gtxid
        # front request 1000 → middle 2001 → backend 3002, 3003
        assert [data[0]["ltxid"], data[1]["ltxid"]] == ["3002", "3003"]

        def logged():
            a = log1.read_text() if log1.exists() else ""
            b = log2.read_text() if log2.exists() else ""
            return (" %s 1000 " % gtxid in a) and (" %s 2001 " % gtxid in b)
        assert wait_for(logged, 5)
    finally:
        front.stop()


def test_waiting_on_the_loop_thread_is_refused(app):
    s = app(THREADS=0)
    status, _ = get(s.port, "/timeout")
    assert status == 500
    assert s.wait_log("threads = 0")
