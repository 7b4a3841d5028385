"""Corequests as app code sees them: Task, Tasks, Mask and Result.

A Task is started the moment it is created (its coroutine is already
scheduled on the worker's loop); the app thread only blocks when it asks
for the outcome ("request early, use late"). Any backend plugs in by giving
the Task a coroutine that returns a `Result` (HTTP, RPC, databases, threads):
exceptions it raises become a Result with the matching status.
"""
import asyncio
import concurrent.futures
import json
import time

# The original Skitai's values
STA_REQFAIL = -1      # the request could not be made (bad URL, unknown alias, …)
STA_UNSENT = 0        # not finished yet
STA_TIMEOUT = 1
STA_NETERR = 2        # connection failed or broke, or the backend raised
STA_ERROR = STA_NETERR
STA_NORMAL = 3        # the exchange completed (whatever the status code)

DEFAULT_TIMEOUT = 10.0
_MISSING = object()


class CorequestError(Exception):
    """fetch()/one()/commit() on a corequest that did not end well.

    `status_code` is the HTTP status the app should answer with when it lets
    the error through (502 for a backend failure, 504 for a timeout, the
    backend's own 4xx/5xx, 410/409 from one())."""

    def __init__(self, message, status_code=502, result=None):
        super().__init__(message)
        self.status_code = status_code
        self.result = result


def get_header(headers, name, default=None):
    """The first value of header `name` (any case) in [(name, value)]."""
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return default


class Result:
    """What a corequest produced. `data` is decoded JSON for JSON responses,
    rows for database backends; `text` and `content` the raw body."""

    def __init__(self, status, status_code=None, reason="", headers=None, content=b"",
                 data=_MISSING, error=None, meta=None):
        self.status = status
        self.status_code = status_code
        self.reason = reason
        self.headers = headers or []        # [(name, value)], names as received
        self.content = content
        self._data = data
        self.error = error                  # the exception when status is not STA_NORMAL
        self.meta = meta if meta is not None else {}
        self.key = None                     # key() gives the result-cache key
        self.cache_store = None             # the cache that may keep it
        self.conflict = False               # one(): a backend's unique-key violation → 409

    def __repr__(self):
        return "<Result status=%s %s %s>" % (self.status, self.status_code, self.reason)

    def get_header(self, name, default=None):
        return get_header(self.headers, name, default)

    @property
    def text(self):
        ctype = self.get_header("content-type", "")
        charset = "utf-8"
        for part in ctype.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        return self.content.decode(charset, "replace")

    @property
    def data(self):
        if self._data is _MISSING:
            ctype = self.get_header("content-type", "").lower()
            if "json" in ctype and self.content:
                self._data = json.loads(self.content)
            elif ctype.startswith("text/") or "xml" in ctype:
                self._data = self.text
            else:
                self._data = self.content
        return self._data

    @data.setter
    def data(self, value):
        self._data = value

    # -- the same verbs as a Task ---------------------------------------------
    def raise_for_status(self):
        if self.status == STA_TIMEOUT:
            raise CorequestError("corequest timed out", 504, self)
        if self.status != STA_NORMAL:
            raise CorequestError("corequest failed: %s" % (self.error or "not finished"),
                                 self.status_code or 502, self)
        if self.status_code is not None and self.status_code >= 300:
            raise CorequestError("backend answered %s %s" % (self.status_code, self.reason),
                                 self.status_code, self)
        return self

    def fetch(self):
        return self.raise_for_status().data

    def one(self):
        if self.conflict:
            raise CorequestError("duplicate", 409, self)
        data = self.fetch()
        if isinstance(data, (list, tuple)):
            if len(data) != 1:
                raise CorequestError("expected exactly one item, got %d" % len(data), 410, self)
            return data[0]
        if not data:
            raise CorequestError("expected exactly one item, got none", 410, self)
        return data

    def commit(self):
        self.raise_for_status()

    def cache(self, timeout=60, cache_if=(200,)):
        """Keep this result for `timeout` seconds (when cache_if allows)."""
        if self.cache_store is not None and self.key is not None and timeout:
            if self.status == STA_NORMAL and (self.status_code is None or
                                              self.status_code in cache_if):
                self.cache_store.put(self.key(), self, timeout)
        return self


def result_from_exception(exc, meta=None):
    if isinstance(exc, (asyncio.TimeoutError, concurrent.futures.TimeoutError, TimeoutError)):
        return Result(STA_TIMEOUT, error=exc, meta=meta)
    if isinstance(exc, (ValueError, LookupError)):
        return Result(STA_REQFAIL, error=exc, meta=meta)
    return Result(STA_NETERR, error=exc, meta=meta)


if hasattr(asyncio, "timeout"):
    async def bounded(aw, seconds):
        """`await aw`, cancelled with TimeoutError after `seconds` (on the loop)."""
        async with asyncio.timeout(seconds):     # a timer, not a task per call
            return await aw
else:                                            # Python < 3.11
    bounded = asyncio.wait_for


def failed_task(exc, meta=None):
    """A finished Task for a call that could not be made (bad URL, unknown
    alias, bad params): its Result has STA_REQFAIL and the error."""
    return Task(result=Result(STA_REQFAIL, error=exc, meta=meta), meta=meta)


def wait_future(future, timeout):
    """The value of a concurrent future of the loop, from an app thread. After
    `timeout` seconds the future is cancelled (which stops its coroutine on
    the loop) and concurrent.futures.TimeoutError raised."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


_CODES = (tuple, list, set, frozenset)


def _seconds(where, name, value):
    """`value` as seconds (None stays None); TypeError/ValueError naming the call."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s(): %s must be a number of seconds, got %r" % (where, name, value))
    if not value >= 0 or value == float("inf"):
        raise ValueError("%s(): %s must be a finite number of seconds >= 0, got %r"
                         % (where, name, value))
    return value


def _status_codes(where, value):
    if value is None:
        return (200,)
    if not isinstance(value, _CODES) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in value):
        raise TypeError("%s(): cache_if must be a tuple of HTTP status codes such as (200, 201), "
                        "got %r" % (where, value))
    return tuple(value)


def wait_args(where, args, timeout=None, cache=None, cache_if=None):
    """(timeout, cache, cache_if) from the positional forms the pages use.

    - dispatch(5), fetch(2, 60): timeout, then cache seconds;
    - dispatch(60, timeout=2), dispatch(60, (200, 201), timeout=2): with the
      timeout given by name, the positionals are cache and cache_if;
    - dispatch(60, (200, 201), 2): a status-code tuple second means the
      documented order cache, cache_if, timeout.
    A value given twice, too many positionals or an ill-typed value raise."""
    if args:
        if timeout is not None:
            names = ("cache", "cache_if")
        elif len(args) >= 2 and isinstance(args[1], _CODES):
            names = ("cache", "cache_if", "timeout")
        else:
            names = ("timeout", "cache", "cache_if")
        if len(args) > len(names):
            raise TypeError("%s() takes at most %d positional arguments (%s), got %d"
                            % (where, len(names), ", ".join(names), len(args)))
        given = {"timeout": timeout, "cache": cache, "cache_if": cache_if}
        for name, value in zip(names, args):
            if given[name] is not None:
                raise TypeError("%s() got multiple values for argument '%s'" % (where, name))
            given[name] = value
        timeout, cache, cache_if = given["timeout"], given["cache"], given["cache_if"]
    return (_seconds(where, "timeout", timeout), _seconds(where, "cache", cache),
            _status_codes(where, cache_if))


class _Corequest:
    """What Task, Tasks and Mask share: the verbs, built on _dispatch(timeout,
    cache, cache_if) with the arguments checked once here."""

    def _where(self, verb):
        return "%s.%s" % (type(self).__name__, verb)

    def dispatch(self, *args, timeout=None, cache=None, cache_if=None):
        return self._dispatch(*wait_args(self._where("dispatch"), args, timeout, cache, cache_if))

    def fetch(self, *args, timeout=None, cache=None, cache_if=None):
        return self._dispatch(*wait_args(self._where("fetch"), args, timeout, cache,
                                         cache_if)).fetch()

    def one(self, *args, timeout=None, cache=None, cache_if=None):
        return self._dispatch(*wait_args(self._where("one"), args, timeout, cache,
                                         cache_if)).one()

    def commit(self, timeout=None):
        self._dispatch(_seconds(self._where("commit"), "timeout", timeout), None, (200,)).commit()

    def wait(self, timeout=None):
        return self._dispatch(_seconds(self._where("wait"), "timeout", timeout), None, (200,))

    def dispatch_or_throw(self, *args, timeout=None, cache=None, cache_if=None):
        return self._dispatch(*wait_args(self._where("dispatch_or_throw"), args, timeout, cache,
                                         cache_if)).raise_for_status()

    def returning(self, response):
        """Let the work go on in the background and answer now (e.g. 202)."""
        return response


class Task(_Corequest):
    """One corequest in flight.

    `engine` runs `coro` on its loop and gives back a concurrent future; a
    Task built with `result=` is already finished (a cache hit). `timeout`:
    how long dispatch() & co. wait when not told (the call's own timeout,
    else DEFAULT_TIMEOUT); `cache_key`: a function giving the cache key."""

    def __init__(self, engine=None, coro=None, result=None, cache_key=None, cache_store=None,
                 meta=None, timeout=None):
        self.meta = meta if meta is not None else {}
        self._engine = engine
        self._result = result
        self._future = None
        self._cache_key = cache_key
        self._cache_store = cache_store
        self._timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if result is None:
            self._future = engine.submit(coro)

    def done(self):
        return self._result is not None or self._future.done()

    def _outcome(self, timeout):
        if self._result is not None:
            return self._result
        if not self._future.done():
            self._engine.check_can_wait()      # the app's mistake: raised, not a Result
        try:
            result = wait_future(self._future, timeout)
        except concurrent.futures.CancelledError as e:
            result = Result(STA_TIMEOUT, error=e, meta=self.meta)
        except Exception as e:          # the call's own failure, or our TimeoutError
            result = result_from_exception(e, self.meta)
        result.key = self._cache_key
        result.cache_store = self._cache_store
        self._result = result
        return result

    def _dispatch(self, timeout, cache, cache_if):
        result = self._outcome(self._timeout if timeout is None else timeout)
        if cache:
            result.cache(cache, cache_if)
        return result

    def cache(self, timeout=60, cache_if=(200,)):
        return self.dispatch().cache(timeout, cache_if)


def _is_task_list(value):
    return isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (_Corequest, str, bytes, dict)))


class Tasks(_Corequest):
    """A bundle of corequests waited for together: about the longest of them,
    not their sum, since every one is already running.

    Tasks([t1, t2]), Tasks([t1, t2], 3) (3: the timeout), Tasks(t1, t2, timeout=3),
    Tasks(a=t1, b=t2) (named, for dict()); keyword values that are not
    corequests are kept in `meta` (user data)."""

    def __init__(self, *reqs, timeout=_MISSING, **named):
        if reqs and _is_task_list(reqs[0]):
            if len(reqs) > 2:
                raise TypeError("Tasks(): a list of tasks may only be followed by the timeout, "
                                "got %d more arguments" % (len(reqs) - 1))
            if len(reqs) == 2:
                if timeout is not _MISSING:
                    raise TypeError("Tasks() got multiple values for argument 'timeout'")
                timeout = reqs[1]
            reqs = list(reqs[0])
        else:
            for i, r in enumerate(reqs):
                if not isinstance(r, _Corequest):
                    raise TypeError(
                        "Tasks(): positional argument %d is not a corequest (%r); pass the "
                        "timeout as Tasks(t1, t2, timeout=N) or Tasks([t1, t2], N), and plain "
                        "data as was.Mask(value)" % (i + 1, r))
        self.timeout = _seconds("Tasks", "timeout",
                                DEFAULT_TIMEOUT if timeout is _MISSING or timeout is None
                                else timeout)
        self.meta = {}
        self._tasks = []
        self._names = []
        for r in reqs:
            self.add(r)
        for name, r in named.items():
            if isinstance(r, _Corequest):
                self.add(r, name)
            else:
                self.meta[name] = r
        self._results = None

    def add(self, task, name=None):
        if not isinstance(task, _Corequest):
            task = Mask(task)
        self._tasks.append(task)
        self._names.append(name)
        self._results = None

    def merge(self, task):
        if isinstance(task, Tasks):
            for t in task._tasks:
                self.add(t)
        else:
            self.add(task)

    def _dispatch(self, timeout, cache, cache_if):
        if self._results is None:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            results = []
            for t in self._tasks:
                results.append(t._dispatch(max(0.0, deadline - time.monotonic()), cache, cache_if))
            self._results = results
        return self._results

    def fetch(self, *args, timeout=None, cache=None, cache_if=None):
        results = self._dispatch(*wait_args("Tasks.fetch", args, timeout, cache, cache_if))
        return [r.fetch() for r in results]

    def one(self, *args, timeout=None, cache=None, cache_if=None):
        results = self._dispatch(*wait_args("Tasks.one", args, timeout, cache, cache_if))
        return [r.one() for r in results]

    def commit(self, timeout=None):
        for r in self._dispatch(_seconds("Tasks.commit", "timeout", timeout), None, (200,)):
            r.commit()

    def dispatch_or_throw(self, *args, timeout=None, cache=None, cache_if=None):
        results = self._dispatch(*wait_args("Tasks.dispatch_or_throw", args, timeout, cache,
                                            cache_if))
        return [r.raise_for_status() for r in results]

    def dict(self, *args, timeout=None, cache=None, cache_if=None):
        """{name: data} of the tasks given as keywords."""
        results = self._dispatch(*wait_args("Tasks.dict", args, timeout, cache, cache_if))
        return {n: r.fetch() for n, r in zip(self._names, results) if n is not None}

    def cache(self, timeout=60, cache_if=(200,)):
        for r in self.dispatch():
            r.cache(timeout, cache_if)

    def __len__(self):
        return len(self._tasks)

    def __iter__(self):
        return iter(self.dispatch())

    def __getitem__(self, index):
        return self.dispatch()[index]


class Mask(_Corequest):
    """Plain data dressed as a finished corequest, for code that wants the
    same verbs whatever it got."""

    def __init__(self, data=None, status_code=200, meta=None):
        self.meta = meta or {}
        self._result = Result(STA_NORMAL, status_code, "OK", data=data, meta=self.meta)

    def _dispatch(self, timeout, cache, cache_if):
        return self._result

    def fetch(self, *args, timeout=None, cache=None, cache_if=None):
        wait_args("Mask.fetch", args, timeout, cache, cache_if)
        return self._result.data

    def cache(self, timeout=60, cache_if=(200,)):
        return self._result

