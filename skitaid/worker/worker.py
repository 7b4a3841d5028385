"""One worker process: inherited listening sockets → event loop + thread pool.

The worker is built so a master can fork it: it is handed sockets that are
already bound and listening, imports the apps itself, and stops gracefully on
SIGTERM/SIGINT (stop accepting, finish in-flight requests up to
`graceful_timeout`, then close what is left) and at once on SIGQUIT.
"""
import asyncio
import errno
import json
import random
import resource
import selectors
import signal
import socket
import time
import weakref

from ..apps import first_app_dir, prepare_imports
from ..handlers.errors import error_response
from ..logs import RequestLog, error_log, reopen_stdio
from .. import stats
from ..protocols.forward import ForwardConnection
from ..protocols.h1 import H1Connection
from ..corequest.engine import start_worker_engine, stop_worker_engine
from ..routing import build_router
from .threadpool import ThreadPool


HANDSHAKE_GRACE = 3.0       # graceful stop: seconds left to TLS handshakes in progress
FD_REPORT_INTERVAL = 60.0   # "out of file descriptors" is logged this often at most
# accept() failing for want of resources: connections are dropped until some close
_NO_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def new_event_loop(poller="uvloop"):
    """uvloop, or (poller epoll/poll/select) asyncio's loop with that selector."""
    if poller != "uvloop":
        selector = {"epoll": selectors.EpollSelector, "poll": selectors.PollSelector,
                    "select": selectors.SelectSelector}[poller]
        return asyncio.SelectorEventLoop(selector())
    try:
        import uvloop
    except ImportError:     # the plain asyncio loop (epoll) still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Worker:
    """One serving process. It is the ConnectionHost of its connections
    (protocols/host.py) and the WSGIHost of its WSGI handlers
    (handlers/wsgi.py): those contracts list what they may use of it."""

    def __init__(self, config, sockets, worker_id=0, request_log_path=None, slot=None,
                 forward_sockets=(), tls_context=None, link=None, quic_socket=None):
        self.config = config
        self.limits = config.limits
        self.sockets = sockets
        self.forward_sockets = forward_sockets   # HTTP → HTTPS 301 listeners (config.forward)
        self.worker_id = worker_id
        self.request_log_path = request_log_path
        # the master's view of this worker (scoreboard.py); None when standalone
        self.slot = slot
        # the channel to the master (daemon/channel.py): ready(), gone(), fileno()
        self.link = link
        self._orphaned = False
        self._recycle_at = 0
        self._stalled = False
        # built by the master before fork: every worker shares its ticket key
        self._tls_context = tls_context
        # HTTP/3: this worker's UDP socket (daemon/udp.py), its QUIC settings, the endpoint
        self.quic_socket = quic_socket
        self._quic_config = None
        self.quic = None
        self.loop = None
        self.pool = None
        self.router = None
        self.corequests = None      # corequest engine: client pool, clusters, result cache
        self.request_log = None
        self.connections = set()
        # TLS connections accepted whose handshake is not done (protocols/tls.py);
        # weak, since a failed handshake never reports back
        self.handshaking = weakref.WeakSet()
        self.servers = []
        self.requests = 0
        # request counters and gauges (stats.py): the master's row of this
        # worker when it has one, else private
        region = stats.region()
        self.counts = (region.worker(slot.index) if region is not None and slot is not None
                       else stats.Counts())
        self._pools_published = {}
        self._stop = None
        self._stopping = False
        self._flush_queue = []
        self._fds_reported = -FD_REPORT_INTERVAL

    @property
    def loop_thread(self):
        """The corequest engine's loop thread (WSGIHost)."""
        return self.corequests.loop_thread

    # -- life cycle -------------------------------------------------------------
    def run(self):
        """Serve until told to stop; returns the process exit code."""
        loop = self.loop = new_event_loop(self.config.poller)
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._serve())
        finally:
            if self.request_log is not None:
                self.request_log.flush()
            loop.close()

    async def _serve(self):
        config = self.config
        loop = self.loop
        self._stop = loop.create_future()
        loop.set_exception_handler(self._loop_exception)
        self.pool = ThreadPool(config.threads) if config.threads > 0 else None
        self.request_log = RequestLog(loop, self.request_log_path or config.request_log_file or None,
                                      "W%d" % self.worker_id,
                                      config.log_off, config.request_log,
                                      config.request_log_format)
        # before the apps import: an app module may start corequests at import
        self.corequests = start_worker_engine(self)
        prepare_imports(config.pythonpath, config.working_dir, first_app_dir(config))
        self.router = build_router(config, self)
        factory, tls = self.protocol_factory()
        for sock in self.sockets:
            server = await loop.create_server(factory, sock=sock, backlog=config.backlog, **tls)
            self.servers.append(server)
        if self.quic_socket is not None:
            from ..protocols.h3 import QuicEndpoint
            self.tls_context()
            _, self.quic = await loop.create_datagram_endpoint(
                lambda: QuicEndpoint(self, self._quic_config, config.quic_retry),
                sock=self.quic_socket)
        if self.forward_sockets:
            _, https_port, domain = config.forward
            for sock in self.forward_sockets:
                server = await loop.create_server(
                    lambda: ForwardConnection(self, https_port, domain),
                    sock=sock, backlog=config.backlog)
                self.servers.append(server)
        loop.add_signal_handler(signal.SIGTERM, self._terminated)
        loop.add_signal_handler(signal.SIGINT, self.stop, True)
        loop.add_signal_handler(signal.SIGQUIT, self.stop, False)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        self._sweep_handle = loop.call_later(1.0, self._sweep)
        if self.slot is not None:
            from ..scoreboard import READY
            self._recycle_at = config.max_requests + (
                random.randint(0, config.max_requests_jitter) if config.max_requests else 0)
            self.slot.set(READY, 0)
        if self.link is not None:
            if getattr(self.router, "wants_reload", False):
                self.link.watch()       # app.use_reloader: the master watches the sources
            self.link.ready()           # the master notices at once, not on its next tick
            # EOF here: the master died (kill -9, a crash); stop rather than serve on
            loop.add_reader(self.link.fileno(), self._check_master)
        graceful = await self._stop
        await self._shutdown(graceful)
        return 0

    def protocol_factory(self):
        """(factory, create_server keywords): TLS picks h2 or h1 by ALPN after
        the handshake; cleartext starts as HTTP/1.1, which hands h2c over."""
        config = self.config
        if not config.ssl:
            return (lambda: H1Connection(self)), {}
        from ..protocols.tls import TLSSelector
        ctx = self.tls_context()
        return (lambda: TLSSelector(self)), {
            "ssl": ctx, "ssl_handshake_timeout": max(1.0, config.limits.request_timeout)}

    def tls_context(self):
        """The SSL context the master handed down, or, without one, the
        certificates (the server's and each host's, for SNI) loaded here once,
        before privileges are dropped, since keys are usually readable by root
        only."""
        if self._tls_context is None and self.config.ssl:
            from ..tlsctx import config_context
            self._tls_context = config_context(self.config)
        if self._quic_config is None and self.quic_socket is not None:
            # the QUIC stack has TLS of its own: its certificate is read now too
            from ..protocols.h3 import quic_configuration
            self._quic_config = quic_configuration(self.config)
        return self._tls_context

    def _terminated(self):
        """SIGTERM: from the master (a stop, a reload), or from the kernel when the
        master died (PR_SET_PDEATHSIG)."""
        self._check_master()
        self.stop(True)

    def _check_master(self):
        if self.link is None or self._orphaned or not self.link.gone():
            return
        self._orphaned = True
        try:
            self.loop.remove_reader(self.link.fileno())
        except (ValueError, OSError):
            pass
        error_log.warning("master pid %d is gone: stopping", self.link.master_pid)
        self.stop(True)

    def stop(self, graceful=True):
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(graceful)
        elif not graceful and self._stopping:
            for conn in list(self.connections):
                conn.close_now()

    async def _shutdown(self, graceful):
        self._stopping = True
        if self.slot is not None:
            from ..scoreboard import STOPPING
            self.slot.set(STOPPING, self.requests)
        self.publish_counts()
        error_log.info("stopping %s, %d connection(s) open",
                       "gracefully" if graceful else "now", len(self.connections))
        for server in self.servers:
            server.close()       # stop accepting; the sockets stay for the master
        if self.quic is not None:
            self.quic.stop_accepting()
        now = time.monotonic()
        deadline = now + (self.config.graceful_timeout if graceful else 0)
        # a handshake takes milliseconds; a client silent in mid-handshake must not
        # hold a stop or reload for the whole handshake timeout
        handshakes_until = min(deadline, now + HANDSHAKE_GRACE)
        # Connections each close themselves once they have answered what
        # reached them (close_idle). At least one round: a connection
        # accepted just before server.close() meets its protocol only in a
        # later loop iteration, and must not be left behind unanswered.
        while graceful:
            for conn in list(self.connections):
                conn.close_idle()
            await asyncio.sleep(0.05)
            if time.monotonic() >= deadline or not (
                    self.connections or (self.handshaking and time.monotonic() < handshakes_until)):
                break
        if self.connections:
            self._log_cut(graceful)
        for conn in list(self.connections):
            conn.close_now()
        self._sweep_handle.cancel()
        if self.quic is not None:
            self.quic.flush()
            self.quic.close()
        if self.pool is not None:
            self.pool.shutdown(timeout=1.0)
        stop_worker_engine()
        await asyncio.sleep(0)
        self.publish_counts()       # the last requests' counts, before the process exits

    def publish_counts(self):
        """Gauges of now, and the counters, into this worker's stats row."""
        c = self.counts
        g = c.gauges
        conns = self.connections
        kinds = [conn.kind for conn in conns]
        g[0] = len(conns)
        g[1] = sum(len(conn.in_flight()) for conn in conns)
        g[5] = kinds.count("websocket")
        g[6] = kinds.count("tunnel")
        pool = self.pool
        if pool is not None:
            g[2] = pool.size
            g[3] = pool.busy
            g[4] = pool.queued()
        cache = getattr(self.corequests, "cache", None)
        if cache is not None:
            g[7], g[8], g[9] = len(cache), cache.hits, cache.misses
        c.flush()
        pools = self._db_pools()
        if pools != self._pools_published:
            self._pools_published = pools
            c.set_extra(json.dumps({"db_pools": pools}).encode() if pools else b"")

    def _db_pools(self):
        """{alias: [open, in use, max]} of this worker's database pools."""
        out = {}
        for db in list(getattr(self.corequests, "databases", {}).values()):
            for state in db.cluster.members:
                pool = getattr(state.backend, "pool", None)
                if pool is None:
                    continue
                figures = out.setdefault(db.name, [0, 0, 0])
                figures[0] += pool.size
                figures[1] += pool.in_use
                figures[2] += pool.max_size
        return out

    def _log_cut(self, graceful):
        """The stop's deadline has come: each request still running is cut, and
        the operator is told which (method, target, client, how long it ran)."""
        now = time.monotonic()
        why = ("at graceful_timeout (%g s)" % self.config.graceful_timeout if graceful
               else "by an immediate stop")
        others = 0
        for conn in list(self.connections):
            running = conn.in_flight()
            for ex in running:
                req = ex.request
                error_log.warning("request cut %s: %s %s from %s, running for %.1f s", why,
                                  req.method, req.target, req.client[0] if req.client else "-",
                                  now - (ex.t_start or now))
            if not running:
                others += 1
        if others:
            error_log.info("%d other connection(s) (idle, WebSocket, tunnel) closed %s",
                           others, why)

    def reopen_logs(self):
        """USR1 (logrotate): under the daemon the error log, then the request log
        (so a failure to reopen the request log is told in the new error log).
        A file that cannot be reopened leaves the old one in use."""
        reopen_stdio()
        try:
            self.request_log.reopen()
        except Exception:
            error_log.exception("reopening the request log")

    def _loop_exception(self, loop, context):
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _NO_RESOURCES \
                and "accept" in context.get("message", ""):
            # the asyncio loop retries accepting a second later
            self._out_of_fds(exc.errno)
            return
        loop.default_exception_handler(context)

    def _check_fds(self):
        """Can this process open one more socket? uvloop (libuv) meets EMFILE on
        accept by accepting and closing the waiting connections, silently: a
        probe once a second is how the operator gets told."""
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        except OSError as e:
            if e.errno in _NO_RESOURCES:
                self._out_of_fds(e.errno)

    def _out_of_fds(self, code):
        now = time.monotonic()
        if now - self._fds_reported < FD_REPORT_INTERVAL:
            return
        self._fds_reported = now
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        error_log.error("out of file descriptors (%s; limit %s, %d connection(s) open): new "
                        "connections are dropped until some close (raise LimitNOFILE or "
                        "ulimit -n, or lower max_connections)", errno.errorcode.get(code, code),
                        "unlimited" if soft == resource.RLIM_INFINITY else soft,
                        len(self.connections))

    def _sweep(self):
        now = time.monotonic()
        self._check_fds()
        if self.link is not None and not self._orphaned:
            self._check_master()        # the parent-pid check, wherever EOF was missed
        for conn in list(self.connections):
            conn.sweep(now)
        self.publish_counts()
        slot = self.slot
        if slot is not None and not self._stopping:
            # the heartbeat: a loop that stops coming here is hung
            pool = self.pool
            timeout = self.config.worker_timeout
            if timeout and pool is not None and pool.stalled_for(now) > timeout:
                # every app thread is stuck and requests queue up behind them:
                # no heartbeat, so the master treats this worker as hung
                if not self._stalled:
                    self._stalled = True
                    error_log.error("all %d app threads busy for over %g s with requests "
                                    "waiting", pool.size, timeout)
            elif self._recycle_at and self.requests >= self._recycle_at:
                from ..scoreboard import RECYCLE
                slot.set(RECYCLE, self.requests)
            else:
                self._stalled = False
                slot.beat(self.requests)
        self._sweep_handle = self.loop.call_later(1.0, self._sweep)

    # -- called by protocols ------------------------------------------------------
    def queue_flush(self, conn):
        q = self._flush_queue
        if not q:
            self.loop.call_soon(self._flush)
        q.append(conn)

    def _flush(self):
        q = self._flush_queue
        self._flush_queue = []
        for conn in q:
            conn.flush()

    def dispatch(self, exchange):
        try:
            router = self.router
            if router.limiter is not None and not router.limiter.admit_client(exchange):
                return                      # 429: [server] rate_limit
            handler, resolved = router.resolve(exchange.request)
            if handler is None:
                exchange.respond(*error_response(404))
            else:
                handler.handle(exchange, resolved)
        except Exception:
            self.log_exception("dispatching %s %s" % (exchange.request.method, exchange.request.target))
            if not exchange.head_sent:
                exchange.respond(*error_response(500))
            else:
                exchange.abort()

    def exchange_finished(self, exchange):
        self.requests += 1
        self.counts.finished(exchange)      # the status page's and /metrics' counters
        log = self.request_log
        if log.enabled:
            now = time.monotonic()
            # handling: until the head went out (handlers that stream stamp
            # t_handled then); transfer: from there to the end of the body
            handled = exchange.t_handled or now
            log.log(exchange.request, exchange.status, exchange.sent, len(self.connections),
                    (handled - exchange.t_start) * 1000.0, (now - handled) * 1000.0)

    def exchange_aborted(self, exchange):
        if not exchange.done:
            exchange.done = True
            exchange.status = exchange.status or 499   # the client went away first
            self.exchange_finished(exchange)

    def count_rejected(self, status, detail, client):
        # Debug level: a flood of garbage requests must not become a flood of log lines.
        error_log.debug("rejected request from %s: %d %s", client[0] if client else "-", status, detail)

    def log_exception(self, what):
        error_log.exception("error while %s", what)
