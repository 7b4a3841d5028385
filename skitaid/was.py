"""`was`: what app code uses to call other services while it works.

    from skitaid import was

    with was.stub("@api") as stub:
        users = stub.get("/v1/users", limit=10)     # a Task, at once
    prices = was.get("http://127.0.0.1:9000/prices")
    a, b = was.Tasks([users, prices], timeout=3).fetch()
    with was.db("@mydb") as db:
        city = db.execute("SELECT * FROM city WHERE id = %s", (7,))   # a Task too

Calls are scheduled on the worker's event loop and return a Task at once;
the app thread waits only in dispatch()/fetch()/… . Works from any app
thread; with `threads = 0` (apps on the loop) a Task cannot be waited for.
"""
import itertools
import os

from . import shared
from .corequest import engine as _engine
from .corequest import http as _http
from .corequest.background import run_in, run_subprocess
from .corequest.rpc import JSONRPCStub, XMLRPCStub
from .corequest.task import Mask, Result, Task, Tasks  # noqa: F401  (was.Tasks, was.Mask)
from .context import ROOT_LTXID as _ROOT_LTXID
from .context import current as _current
from .context import push  # noqa: F401  (was.push('/static/app.css') during a request, HTTP/2)
from .smtpda.compose import Email as email  # noqa: F401  (was.email(subject, snd, rcpt).send())

_gtx_seq = itertools.count(1)


# -- the request being served by this thread -----------------------------------
def _txn_headers():
    """X-Gtxn-Id / X-Ltxn-Id for the next outgoing call of the current request.

    The original Skitai's rule: the first digit group is the call depth, the
    rest a sequence — request 1000 calls out as 2001, 2002…; 2001 as 3002…"""
    exchange = getattr(_current, "exchange", None)
    if exchange is None:
        return ()
    request = exchange.request
    if request.gtxid is None:
        request.gtxid = "GTID-C%d-R%d" % (os.getpid(), next(_gtx_seq))
    if request.ltxid is None:
        request.ltxid = _ROOT_LTXID
    try:
        ltxid = int(request.ltxid)
    except ValueError:
        ltxid = 1000
    request.calls += 1
    child = (ltxid // 1000 + 1) * 1000 + ltxid % 1000 + request.calls
    return (("X-Gtxn-Id", request.gtxid), ("X-Ltxn-Id", str(child)))


def _request(method, url, data=None, headers=None, auth=None, use_cache=True, timeout=None,
             mode="lb", parse=None, upload=False, accept="application/json", meta=None):
    return _http.build(_engine.current(), method, url, data, headers, auth, use_cache, timeout,
                       mode, _txn_headers(), meta, parse, upload, accept)


class _Verb:
    """was.get(...), was.get.lb(...), was.get.map(...)"""

    def __init__(self, method, upload=False):
        self.method = method
        self.upload = upload

    def __call__(self, url, data=None, headers=None, auth=None, use_cache=True, timeout=None,
                 meta=None):
        return _request(self.method, url, data, headers, auth, use_cache, timeout, "lb",
                        upload=self.upload, meta=meta)

    lb = __call__

    def map(self, url, data=None, headers=None, auth=None, use_cache=True, timeout=None,
            meta=None):
        """One request to every member of the alias: Tasks, one Result per member."""
        return _request(self.method, url, data, headers, auth, use_cache, timeout, "map",
                        upload=self.upload, meta=meta)


get = _Verb("GET")
post = _Verb("POST")
put = _Verb("PUT")
patch = _Verb("PATCH")
delete = _Verb("DELETE")
options = _Verb("OPTIONS")
upload = _Verb("POST", upload=True)


class Stub:
    """`with was.stub("@api") as stub: stub.get("/v1/users", limit=10)`

    Paths are joined to the alias or base URL; keywords are the query for
    get/delete/options and the body (when no data is given) otherwise."""

    def __init__(self, base, headers=None, auth=None, mode="lb", use_cache=True, timeout=None):
        self.base = base.rstrip("/")
        self.headers = headers
        self.auth = auth
        self.mode = mode
        self.use_cache = use_cache
        self.timeout = timeout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _call(self, method, path, data, query, headers, upload=False):
        if data is None and query and method not in ("GET", "DELETE", "OPTIONS"):
            data, query = query, None
        url = _http.with_query(self.base + ("/" + path.lstrip("/") if path else ""), query)
        hdrs = _http.header_list(self.headers) + _http.header_list(headers)
        return _request(method, url, data, hdrs, self.auth, self.use_cache, self.timeout,
                        self.mode, upload=upload)

    def get(self, path="", headers=None, **query):
        return self._call("GET", path, None, query, headers)

    def delete(self, path="", headers=None, **query):
        return self._call("DELETE", path, None, query, headers)

    def options(self, path="", headers=None, **query):
        return self._call("OPTIONS", path, None, query, headers)

    def post(self, path="", data=None, headers=None, **fields):
        return self._call("POST", path, data, fields, headers)

    def put(self, path="", data=None, headers=None, **fields):
        return self._call("PUT", path, data, fields, headers)

    def patch(self, path="", data=None, headers=None, **fields):
        return self._call("PATCH", path, data, fields, headers)

    def upload(self, path="", data=None, headers=None, **fields):
        return self._call("POST", path, data, fields, headers, upload=True)


class _StubMaker:
    """was.stub("@api"), was.stub.lb("@api"): calls go to one member of the
    alias; was.stub.map("@api"): to every member (each call gives Tasks with
    one Result per member). The same for was.xmlrpc and was.jsonrpc."""

    def __init__(self, name, make):
        self._name = name
        self._make = make

    def _stub(self, url, headers, auth, mode, use_cache, timeout):
        if not isinstance(url, str):
            raise TypeError("was.%s(): url must be an '@alias[/path]' or http(s) URL string, "
                            "got %r" % (self._name, url))
        return self._make(url, headers, auth, mode, use_cache, timeout)

    def __call__(self, url, headers=None, auth=None, use_cache=True, timeout=None):
        return self._stub(url, headers, auth, "lb", use_cache, timeout)

    lb = __call__

    def map(self, url, headers=None, auth=None, use_cache=True, timeout=None):
        return self._stub(url, headers, auth, "map", use_cache, timeout)


stub = _StubMaker("stub", Stub)
xmlrpc = _StubMaker("xmlrpc", lambda *a: XMLRPCStub(_request, *a))
jsonrpc = _StubMaker("jsonrpc", lambda *a: JSONRPCStub(_request, *a))


# -- databases -------------------------------------------------------------------------
class _Db:
    """was.db("@mydb"), was.db.lb("@mydb"), was.db.map("@mydb") → a stub whose
    execute(sql, params) returns a Task (map: Tasks, one Result per member).

    `use_cache`: as for HTTP calls (True, False, a timestamp or cache-key names);
    `rm_cache`: cache-key name(s) marked updated (setlu) when the statement is done."""

    def __call__(self, alias, dbtype=None, use_cache=True, rm_cache=None, timeout=None):
        from .corequest.db.client import Stub as DbStub
        return DbStub(_engine.current(), alias, dbtype, "lb", use_cache, rm_cache, timeout)

    lb = __call__

    def map(self, alias, dbtype=None, use_cache=True, rm_cache=None, timeout=None):
        from .corequest.db.client import Stub as DbStub
        return DbStub(_engine.current(), alias, dbtype, "map", use_cache, rm_cache, timeout)


db = _Db()


def transaction(alias, auto_putback=True, rm_cache=None, timeout=None):
    """A pooled connection for this thread (not autocommit): execute, fetchall,
    fetchone, fetchmany, commit, rollback; `with` returns it to the pool."""
    from .corequest.db.client import Transaction
    return Transaction(_engine.current(), alias, auto_putback, rm_cache, timeout)


def cursor(alias):
    """A pooled DB-API cursor of a PostgreSQL or SQLite alias, used blocking in
    this thread (execute, fetchall, fetchmany, …; autocommit); close() — or the
    end of the request, or a `with` block — returns its connection."""
    from .corequest.db.cursor import Cursor
    engine = _engine.current()
    return Cursor(engine, engine.database(alias))


# -- local background work ----------------------------------------------------------
def Thread(target, *args, **kwargs):
    """Run target(*args, **kwargs) in a thread pool: a Task."""
    engine = _engine.current()
    return Task(engine, run_in(engine, "thread", target, args, kwargs, {}))


def Process(target, *args, **kwargs):
    """Run a picklable module-level target in a process pool: a Task."""
    engine = _engine.current()
    return Task(engine, run_in(engine, "process", target, args, kwargs, {}))


def Subprocess(command, timeout=300):
    """Run a command (str: through the shell; list: directly): a Task whose data is stdout."""
    engine = _engine.current()
    return Task(engine, run_subprocess(command, timeout, {}), timeout=timeout)


# -- state shared by all workers of the server ----------------------------------------
def _name(key):
    return "%s/%s" % (_engine.current().server_name, key)


def setlu(key, *args, **kwargs):
    """Mark `key` updated now: cached results older than this are not used by
    calls made with use_cache=was.getlu(key) in any worker."""
    shared.region().set_lu(_name(key))


def getlu(*keys):
    """The latest update time (epoch seconds) of the given keys; 0.0 if never."""
    region = shared.region()
    return max((region.get_lu(_name(k)) for k in keys), default=0.0)


def setgs(key, value, *args, **kwargs):
    """Set the integer state `key` for every worker."""
    shared.region().set_gs(_name(key), value)


def getgs(key):
    return shared.region().get_gs(_name(key))
