"""The master process: binds listeners, forks worker pools, supervises them.

One loop on one thread. Signals only queue their number (and wake the loop
through the wakeup fd); they are handled in the loop, as are control-socket
requests, child exits and the periodic checks of every pool. The master
never imports app code: workers do that after fork, once they have dropped
privileges.
"""
import errno
import os
import selectors
import signal
import time

from ..logs import error_log, reopen_stdio, share_stdio
from . import control, systemd
from .channel import MasterLink, WorkerChannel
from .child import master_title, set_title, worker_main
from . import listeners, orphans
from .udp import QuicGroups
from .pidfile import PidFile
from .privileges import PrivilegeError, worker_credentials
from .watch import Reloader
from .pool import FAILED, RUNNING, STARTING, STOPPED, ServerPool
from .. import bulletin, health, ratelimit, shared, stats
from . import report, sharedstate
from ..tlsctx import ContextCache
from ..scoreboard import STATE_NAMES, Scoreboard
from .cachecmd import cache_status

_HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)


def describe_address(server):
    return listeners.url(server.address, server.port, server.ssl)


class Master:
    def __init__(self, config, loader=None, daemon=False, log_path="", ready_fd=-1):
        """`loader()` returns a fresh Config for reloads (raises ConfigError);
        None (the Python API) restarts the same config's workers instead."""
        self.config = config
        self.loader = loader
        self.daemon = daemon
        self.log_path = log_path
        self.ready_fd = ready_fd       # `skitaid start` waits on this pipe: "R" = serving
        self.pools = {}                # server name → ServerPool
        self.draining = []             # pools of servers removed by a reload, still stopping
        self.listeners = {}            # listen_key → socket
        self.quic = QuicGroups()       # HTTP/3: (address, quic port) → a UDP socket per worker
        self.signals = []
        self.scoreboard = None
        self.selector = None
        self.control = None
        self.control_path = None
        self.pidfile = None
        self.stopping = False
        self.ready_sent = False
        self.reloading = False
        self.reloads = 0
        self.last_reload = None        # {"ok": bool, "messages": [...]}
        self.started = time.time()
        self._wake_r = self._wake_w = -1
        self._watchdog = None
        self._next_watchdog = 0.0
        self._credentials = {}
        self._channels = {}            # worker pid → WorkerChannel
        # each server's SSL context, built here so all its workers share the
        # session-ticket key; kept across reloads while its files are unchanged
        self._tls = ContextCache()
        self._failed_at = {}           # what → when its last failure was logged (_guarded)
        self.reloader = None           # development mode's source watcher (watch.py)
        self._last_trace = None        # (generation, traceback) logged for a boot failure
        self.traffic = None            # report.Traffic: request counters of every server
        self._next_publish = 0.0

    # -- start ------------------------------------------------------------------
    def run(self):
        """Serve until stopped; returns the exit code."""
        set_title(master_title(self.config.globals.title))
        g = self.config.globals
        if g.pidfile:
            self.pidfile = PidFile(g.pidfile)
            other = self.pidfile.running()
            if other:
                error_log.error("skitaid is already running (pid %d, %s)", other, g.pidfile)
                self._tell_starter(b"")
                return 1
        handed = systemd.listen_fds()
        inherited = listeners.inherited_pool(handed)
        try:
            for server in self.config.servers:
                self._credentials[server.name] = self._resolve(server)
            for server in self.config.servers:
                self._listen(server, inherited)
        except _StartError as e:
            error_log.error("%s", e)
            self._tell_starter(b"")
            return 1
        taken = set(id(s) for s in self.listeners.values())
        for sock in handed:                   # sockets systemd passed that no server wants
            if id(sock) not in taken:
                sock.close()
        if self.pidfile is not None:
            try:
                self.pidfile.write()
            except OSError as e:
                if self.daemon:
                    error_log.error("cannot write the pid file %s: %s", g.pidfile, e.strerror)
                    self._tell_starter(b"")
                    return 1
                # in the foreground (a user trying the default config) it only
                # costs `skitaid stop/status`
                error_log.warning("no pid file (%s: %s)", g.pidfile, e.strerror)
                self.pidfile = None
        self._setup_loop()
        if g.run_path:
            self._open_control(g.run_path)
        self._watchdog = systemd.watchdog_interval()
        self.scoreboard = Scoreboard()
        shared.create(s.name for s in self.config.servers)   # setlu/setgs state, before any fork
        # request counters, backend health and the published status: before any fork too
        self.traffic = report.Traffic(stats.create())
        health.create(self.config.servers)
        bulletin.create()
        # [global] shared_state: a helper process carries the region to and from Redis
        sharedstate.start(self.config, self._helper_credentials())
        ratelimit.create()          # rate_limit buckets every worker shares (even after a reload)
        for server in self.config.servers:
            error_log.info("server %r on %s: %d worker(s), %d thread(s) each",
                           server.name, describe_address(server), server.processes,
                           server.threads)
            self.pools[server.name] = ServerPool(self, server, self._sockets(server),
                                                 self._tls_context(server))
        self.reloader = Reloader(self.selector)
        self._guarded("starting the source watcher", self.reloader.update, self.config)
        try:
            self._loop()
        finally:
            self._cleanup()
        return 0 if not any(p.state == FAILED for p in self.pools.values()) else 1

    def _helper_credentials(self):
        """The shared-state helper runs as the [global] user, as workers do."""
        g = self.config.globals
        try:
            return worker_credentials("", "", g.user, g.group)
        except PrivilegeError:
            return None         # (the servers' own checks have said so already)

    def _resolve(self, server):
        g = self.config.globals
        try:
            return worker_credentials(server.user, server.group, g.user, g.group)
        except PrivilegeError as e:
            raise _StartError("server %r: %s" % (server.name, e))

    def _listen(self, server, inherited=None):
        """Bind (or reuse) the server's listener and its HTTP→HTTPS forward port."""
        if server.ssl:      # a bad certificate or passphrase: say so before listening
            try:
                self._tls.build(server)     # the server's certificate and each host's (SNI)
            except ValueError as e:
                raise _StartError("server %r: %s" % (server.name, e))
        for n, (address, port) in enumerate(server.listen_addresses):
            key = listeners.listen_key(address, port)
            if key in self.listeners:
                continue
            sock = listeners.take_inherited(inherited, address, port) if inherited else None
            if sock is None:
                try:
                    sock = listeners.bind_listener(address, port, server.backlog)
                except OSError as e:
                    where = listeners.url(address, port, server.ssl and n == 0)
                    message = str(listeners.ListenError(server.name, where, e))
                    if e.errno == errno.EADDRINUSE:
                        held = orphans.describe(orphans.worker_holders(
                            address, port, listeners.unix_path(address)))
                        message += " (%s)" % held if held else ""
                    raise _StartError(message)
            self.listeners[key] = sock
        if server.quic:
            try:
                self.quic.ensure(server.address, server.quic, server.processes)
            except OSError as e:
                raise _StartError(str(listeners.ListenError(
                    server.name, "udp %s (quic)" % listeners.display(server.address, server.quic),
                    e)))

    def _tls_context(self, server):
        """The SSL context _listen built for the server's workers (None: no TLS)."""
        return self._tls.get(server.name) if server.ssl else None

    def _sockets(self, server):
        """[own listener] + [forward listener]: what the server's workers get."""
        return [self.listeners[listeners.listen_key(a, p)] for a, p in server.listen_addresses]

    def _all_pools(self):
        return list(self.pools.values()) + self.draining

    def _setup_loop(self):
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in _HANDLED:
            signal.signal(sig, self._queue_signal)
        signal.siginterrupt(signal.SIGCHLD, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    def _open_control(self, run_path):
        try:
            os.makedirs(run_path, mode=0o755, exist_ok=True)
            self.control_path = control.socket_path(run_path)
            self.control = control.listen(self.control_path)
        except OSError as e:
            error_log.warning("no control socket in %s (%s): `skitaid status` will not "
                              "see this master", run_path, e.strerror or e)
            self.control = None
            return
        self.selector.register(self.control, selectors.EVENT_READ, "control")

    def _queue_signal(self, sig, frame):
        self.signals.append(sig)

    # -- the loop -------------------------------------------------------------------
    def _loop(self):
        while True:
            busy = self.reloading or not self.ready_sent or self.stopping or (
                self.reloader is not None and self.reloader.due is not None)
            for key, _ in self.selector.select(0.1 if busy else 0.5):
                if key.data == "wake":
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                elif key.data == "control":
                    self._guarded("serving the control socket", control.serve_one,
                                  self.control, self._answer)
                elif key.data == "watch":
                    self._guarded("reading the source watcher", self.reloader.readable,
                                  time.monotonic())
                elif isinstance(key.data, WorkerChannel):
                    # "ready" or a boot failure's cause; the tick below acts on it
                    if key.data.read():
                        self._unwatch(key.data)
                    if key.data.wants_watch and self.reloader is not None:
                        self._guarded("starting the source watcher", self.reloader.ask,
                                      key.data.server, self.config)
            while self.signals:
                sig = self.signals.pop(0)
                self._guarded("handling %s" % _signal_name(sig), self._handle_signal, sig)
            self._guarded("reaping workers", self._reap)
            now = time.monotonic()
            for pool in self._all_pools():
                self._guarded("supervising server %r" % pool.name, pool.tick, now)
            self._guarded("the periodic checks", self._after_tick, now)
            if self.stopping and all(p.state in (STOPPED, FAILED) and not p.workers()
                                     for p in self._all_pools()):
                return

    def _guarded(self, what, fn, *args):
        """Run one step of the loop; a failure is logged and the loop goes on.

        Nothing a signal, a control request or a supervision step runs into
        may take the master down: its workers would be orphaned. The same
        step failing again and again is logged once a minute."""
        try:
            return fn(*args)
        except Exception:
            now = time.monotonic()
            if now - self._failed_at.get(what, -REPEAT_FAILURE_LOG) >= REPEAT_FAILURE_LOG:
                self._failed_at[what] = now
                error_log.exception("error while %s (the master keeps running)", what)
            return None

    def _answer(self, request):
        """A control request's reply, also when handling it failed."""
        try:
            return self._command(request)
        except Exception as e:
            error_log.exception("error while answering the control request %r "
                                "(the master keeps running)", request.get("command"))
            return {"ok": False, "messages": ["internal error: %s: %s" % (type(e).__name__, e)]}

    def _reopen_logs(self):
        """USR1 / `skitaid reopen-logs` (logrotate): the error log here, then the
        workers' logs. The workers reopen it too, as their user: a new file gets
        their owner when they all run as one user."""
        uids = set(c.uid for c in self._credentials.values() if c is not None)
        share_stdio(uids.pop() if len(uids) == 1 else None)
        failure = reopen_stdio()
        if failure is None:
            error_log.info("log files reopened")
        self._signal_workers(signal.SIGUSR1)
        if failure is None:
            return {"ok": True, "messages": []}
        return {"ok": False, "messages": ["the master %s; it still writes to the old file"
                                          % failure.replace("cannot", "could not", 1)]}

    def _handle_signal(self, sig):
        if sig == signal.SIGCHLD:
            return                      # reaped below
        if sig == signal.SIGHUP:
            self.reload()
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self.stop(True)
        elif sig == signal.SIGQUIT:
            self.stop(False)
        elif sig == signal.SIGUSR1:
            self._reopen_logs()
        elif sig == signal.SIGTTIN:
            for pool in self.pools.values():
                pool.grow()
        elif sig == signal.SIGTTOU:
            for pool in self.pools.values():
                pool.shrink()
            self._fit_quic()

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for pool in self._all_pools():
                if pool.reaped(pid, status):
                    break
            else:
                sharedstate.reaped(pid)

    def _after_tick(self, now):
        if self._watchdog and now >= self._next_watchdog:
            systemd.notify("WATCHDOG=1")
            self._next_watchdog = now + self._watchdog / 2
        if self.stopping:
            return
        if self.reloader is not None and self.reloader.take_due(now):
            self.reload("source changed")
        self._report(now)
        states = [p.state for p in self.pools.values()]
        if not self.ready_sent:
            if all(s in (RUNNING, FAILED) for s in states):
                self.ready_sent = True
                if all(s == FAILED for s in states):
                    error_log.error("no server could start; stopping")
                    self.stop(False)
                    return
                systemd.notify("READY=1", "STATUS=" + self._status_line())
                error_log.info("ready: %s", self._status_line())
                self._tell_starter(b"R")
        elif self.reloading and not any(p.pending for p in self.pools.values()) \
                and all(s != STARTING for s in states):
            self.reloading = False
            self._close_unused_listeners()
            systemd.notify("READY=1", "STATUS=" + self._status_line())
            error_log.info("reload done: %s", self._status_line())

    def _tell_starter(self, what):
        if self.ready_fd >= 0:
            fd, self.ready_fd = self.ready_fd, -1
            try:
                os.write(fd, what)
            except OSError:
                pass
            finally:
                os.close(fd)

    def _status_line(self):
        parts = []
        for pool in self.pools.values():
            parts.append("%s %s (%d workers)" % (pool.name, pool.state, len(pool.current.workers)))
        return "; ".join(parts)

    # -- called by pools ----------------------------------------------------------------
    def spawn(self, pool, gen, index):
        slot = self.scoreboard.allocate()
        server = gen.config
        request_log = None
        if self.daemon and not server.request_log_file and self.log_path:
            request_log = os.path.join(self.log_path, "%s-request.log" % server.name)
        creds = self._credentials.get(server.name)
        if creds is not None and server.request_log and (request_log or server.request_log_file):
            _create_for(request_log or server.request_log_file, creds)
        # every generation's listeners stay in self.listeners while in use
        keep = set(id(s) for s in gen.sockets)
        close = [s for s in self.listeners.values() if id(s) not in keep]
        quic = self.quic.socket(server.address, server.quic, index) if server.quic else None
        close += [s for s in self.quic.all() if s is not quic]
        if self.control is not None:
            close.append(self.control)
        if self.selector is not None:
            close.append(self.selector)
        close.append(_Fd(self._wake_r))
        close.append(_Fd(self._wake_w))
        # the other workers' channels: only the master may hold their ends
        close += [c.master_end for c in self._channels.values()]
        channel = WorkerChannel()
        channel.server = server.name
        close.append(channel.master_end)
        master_pid = os.getpid()
        # Until the child has its own handlers, a signal for it (a stop right
        # after a spawn) would run the master's handler there and be lost:
        # the worker would never stop. So signals wait; the child unblocks
        # them (worker_main) once they have their default meaning.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:
            main, forward = gen.sockets[:1], gen.sockets[1:]
            worker_main(server, main, forward, index, self.scoreboard.slot(slot),
                        self._credentials.get(server.name), request_log, close, gen.tls,
                        MasterLink(channel.worker_end, master_pid), quic_socket=quic)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        channel.forked()
        self._channels[pid] = channel
        self.selector.register(channel.master_end, selectors.EVENT_READ, channel)
        return pid, slot

    def boot_cause(self, worker):
        """What a worker that could not start said before it exited ("" if nothing)."""
        channel = self._channels.get(worker.pid)
        if channel is None:
            return ""
        channel.read()
        if channel.trace and (worker.generation, channel.trace) != self._last_trace:
            self._last_trace = (worker.generation, channel.trace)
            error_log.error("server %r: worker #%d could not start\n%s", channel.server,
                            worker.index, channel.trace.rstrip())
        return channel.reason

    def release(self, worker):
        # its counts join the server's total before the slot is reused
        self.traffic.fold(worker.server, worker.slot, worker.cpu_seconds)
        self.scoreboard.release(worker.slot)
        channel = self._channels.pop(worker.pid, None)
        if channel is not None:
            self._unwatch(channel)
            channel.close()

    def _unwatch(self, channel):
        try:
            self.selector.unregister(channel.master_end)
        except (KeyError, ValueError):
            pass                        # already (EOF seen, or closed)

    def state_changed(self, pool):
        """Readiness and failures are noticed in _after_tick; a removed server that
        has finished stopping gives its listeners back here, whenever that is."""
        if pool in self.draining and pool.state == STOPPED and not pool.workers():
            self.draining.remove(pool)
            self._close_unused_listeners()

    def generation_abandoned(self, pool, gen, why=""):
        if self.last_reload is not None:
            self.last_reload["ok"] = False
            self.last_reload["messages"].append(
                "server %r: the new generation failed to start: %s; generation %d keeps "
                "serving" % (pool.name, why or "no reason given", pool.current.number))

    # -- operations -------------------------------------------------------------------
    def reload(self, why="HUP"):
        """Re-read the config; start new generations; keep the old config if it is bad."""
        if self.stopping:
            return {"ok": False, "messages": ["stopping"]}
        self.reloads += 1
        if self.loader is None:
            new = self.config
        else:
            from ..config import ConfigError
            try:
                new = self.loader()
            except ConfigError as e:
                messages = [str(p) for p in e.problems]
                for m in messages:
                    error_log.error("reload refused: %s", m)
                error_log.error("reload refused: the config has %d problem(s); "
                                "the running config keeps serving", len(messages))
                self.last_reload = {"ok": False, "messages": messages}
                return self.last_reload
        systemd.notify("RELOADING=1", "MONOTONIC_USEC=%d" % systemd.monotonic_usec())
        error_log.info("reloading (%s)", why)
        messages = []
        if new.globals != self.config.globals:
            messages.append("[global] changes (paths, user) take effect at the next restart")
        wanted = {s.name: s for s in new.servers}
        self._tls.retain(wanted)
        health.claim_servers(new.servers)      # rows for new alias members, before the forks
        # servers gone from servers-enabled/ stop gracefully (and may come back
        # under the same name while they drain)
        for name in [n for n in self.pools if n not in wanted]:
            error_log.info("server %r removed: stopping it", name)
            pool = self.pools.pop(name)
            self.draining.append(pool)
            pool.stop(True)
        for server in new.servers:
            try:
                creds = self._resolve(server)
                self._listen(server)
            except _StartError as e:
                messages.append(str(e))
                error_log.error("reload: %s; it keeps its old configuration", e)
                continue
            self._credentials[server.name] = creds
            pool = self.pools.get(server.name)
            if pool is None:
                error_log.info("server %r added on %s", server.name, describe_address(server))
                self.pools[server.name] = ServerPool(self, server, self._sockets(server),
                                                     self._tls_context(server))
            else:
                pool.new_generation(server, self._sockets(server), self._tls_context(server))
        self.config = new
        self.reloading = True
        self.last_reload = {"ok": not messages, "messages": messages}
        if self.reloader is not None:       # the new config's sources
            self._guarded("updating the source watcher", self.reloader.update, new)
        return self.last_reload

    def _close_unused_listeners(self):
        """Close the listeners no pool serves from any more (a removed server, an
        address changed by a reload), so new connections are refused, not queued."""
        used = set()
        for pool in self._all_pools():
            used.update(id(s) for s in pool.sockets_in_use())
        for key, sock in list(self.listeners.items()):
            if id(sock) not in used:
                del self.listeners[key]
                listeners.close_listener(sock)
        self._fit_quic()

    def _fit_quic(self):
        """Keep as many UDP sockets per quic port as workers read them: a socket
        nobody reads would swallow its share of the clients (daemon/udp.py)."""
        wanted = {}
        for pool in self._all_pools():
            # the current generation has pool.target workers (TTIN/TTOU change it)
            sizes = [(pool.current.config, pool.target)]
            if pool.pending is not None:
                sizes.append((pool.pending.config, pool.pending.config.processes))
            if pool.deferred is not None:
                sizes.append((pool.deferred[0], pool.deferred[0].processes))
            for c, n in sizes:
                if c.quic:
                    key = (c.address, c.quic)
                    wanted[key] = max(wanted.get(key, 0), n)
        self.quic.fit(wanted)

    def stop(self, graceful=True):
        if self.stopping and graceful:
            return
        self.stopping = True
        systemd.notify("STOPPING=1")
        error_log.info("stopping %s", "gracefully" if graceful else "now")
        for pool in self._all_pools():
            pool.stop(graceful)
        # new connections are refused at once rather than queued for nobody
        for sock in self.listeners.values():
            listeners.close_listener(sock)
        self.listeners.clear()

    def _signal_workers(self, sig):
        for pool in self._all_pools():
            for w in pool.workers():
                try:
                    os.kill(w.pid, sig)
                except ProcessLookupError:
                    pass

    # -- control socket ------------------------------------------------------------------
    def _command(self, request):
        cmd = request.get("command")
        if cmd == "status":
            return self.status()
        if cmd == "reload":
            return self.reload()
        if cmd == "stop":
            self.stop(bool(request.get("graceful", True)))
            return {"ok": True}
        if cmd == "reopen-logs":
            return self._reopen_logs()
        if cmd == "restart":
            name = request.get("server")
            pool = self.pools.get(name)
            if pool is None:
                return {"ok": False, "messages": ["no server named %r (running: %s)"
                                                  % (name, ", ".join(self.pools) or "none")]}
            config = pool.latest()[0]
            try:        # renewed certificate files are loaded; unchanged ones keep their key
                tls = self._tls.build(config) if config.ssl else None
            except ValueError as e:
                return {"ok": False, "messages": ["server %r: %s" % (name, e)]}
            pool.restart(tls)
            self.reloading = True
            return {"ok": True, "messages": []}
        return {"ok": False, "messages": ["unknown command %r" % cmd]}

    def status(self):
        import psutil
        now = time.monotonic()
        servers = []
        for pool in self._all_pools():
            workers = []
            for w in sorted(pool.workers(), key=lambda w: (w.generation, w.index)):
                state, _, _, requests = self.scoreboard.read(w.slot)
                cpu = rss = 0
                try:
                    if w.status_proc is None:      # CPU % is measured between two calls
                        w.status_proc = psutil.Process(w.pid)
                        w.status_proc.cpu_percent(None)
                    proc = w.status_proc
                    cpu = proc.cpu_percent(None)
                    rss = proc.memory_info().rss
                except psutil.Error:
                    pass
                workers.append({
                    "index": w.index, "pid": w.pid, "generation": w.generation,
                    "state": "retiring" if w.retiring else STATE_NAMES.get(state, "?"),
                    "uptime": round(now - w.started, 1), "cpu_percent": cpu, "rss": rss,
                    "requests": requests})
                report.describe_worker(workers[-1], w, self.traffic.region, pool)
            c = pool.config
            servers.append({
                "name": pool.name, "state": pool.state, "reason": pool.reason,
                "address": describe_address(c), "generation": pool.current.number,
                "pending_generation": pool.pending.number if pool.pending else None,
                "reload_waiting": pool.deferred is not None,
                "target_workers": pool.target, "workers": workers,
                "cachefs": cache_status(c)})
            report.describe_server(servers[-1], pool, self.traffic, health.region())
        return {"ok": True, "pid": os.getpid(), "started": self.started,
                "uptime": round(time.time() - self.started, 1),
                "config_dir": self.config.globals.config_dir,
                "ready": self.ready_sent, "reloading": self.reloading, "reloads": self.reloads,
                "last_reload": self.last_reload, "stopping": self.stopping,
                "servers": servers}

    def _report(self, now):
        """Sample the traffic windows; publish the status document for the
        workers' status pages and /metrics once a second, if one is served."""
        if self.traffic is None:
            return
        self.traffic.tick(now, {p.name: [w.slot for w in p.workers()] for p in self._all_pools()})
        board = bulletin.region()
        if board is None or now < self._next_publish:
            return
        if not any(report.observed(p.config) for p in self._all_pools()):
            return
        self._next_publish = now + 1.0
        doc = self.status()
        doc["running"] = True           # as `skitaid status --json` prints it
        board.publish(report.encode(doc))

    # -- end ---------------------------------------------------------------------------
    def _cleanup(self):
        self._tell_starter(b"")
        if self.reloader is not None:
            self.reloader.close()
        for sig in _HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if self.control is not None:
            self.control.close()
            try:
                os.unlink(self.control_path)
            except OSError:
                pass
        for sock in self.listeners.values():
            listeners.close_listener(sock)
        self.quic.close()
        sharedstate.stop()
        if self.pidfile is not None:
            self.pidfile.remove()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        error_log.info("stopped")


REPEAT_FAILURE_LOG = 60.0     # seconds between reports of the same failing step


def _signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def _create_for(path, creds):
    """Create a log file the workers will open, owned by their user: the log
    directory is usually root's, so `user = nobody` could not create it. A file
    that exists already is left as it is (`skitaid check` says if they cannot
    append to it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    except OSError as e:
        error_log.warning("cannot create %s for the workers: %s", path, e.strerror or e)
        return
    try:
        os.fchown(fd, creds.uid, creds.gid)
    except OSError as e:
        error_log.warning("cannot give %s to uid %d: %s", path, creds.uid, e.strerror or e)
    finally:
        os.close(fd)


class _StartError(Exception):
    pass


class _Fd:
    """A raw descriptor with a close() method, for the child's close list."""

    def __init__(self, fd):
        self.fd = fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
