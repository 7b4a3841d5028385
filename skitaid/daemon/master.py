"""The master process: binds listeners, forks worker pools, supervises them.

One loop on one thread. Signals only queue their number (and wake the loop
through the wakeup fd); they are handled in the loop, as are control-socket
requests, child exits and the periodic checks of every pool. The master
never imports app code: workers do that after fork, once they have dropped
privileges.
"""
import os
import selectors
import signal
import time

from ..logs import error_log, reopen_stdio
from . import control, systemd
from .child import set_title, worker_main
from . import listeners
from .pidfile import PidFile
from .privileges import PrivilegeError, worker_credentials
from .pool import FAILED, RUNNING, STARTING, STOPPED, ServerPool
from .. import shared
from .scoreboard import STATE_NAMES, Scoreboard

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

    # -- start ------------------------------------------------------------------
    def run(self):
        """Serve until stopped; returns the exit code."""
        set_title("skitaid: master")
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
        for server in self.config.servers:
            error_log.info("server %r on %s: %d worker(s), %d thread(s) each",
                           server.name, describe_address(server), server.processes,
                           server.threads)
            self.pools[server.name] = ServerPool(self, server, self._sockets(server))
        try:
            self._loop()
        finally:
            self._cleanup()
        return 0 if not any(p.state == FAILED for p in self.pools.values()) else 1

    def _resolve(self, server):
        g = self.config.globals
        try:
            return worker_credentials(server.user, server.group, g.user, g.group)
        except PrivilegeError as e:
            raise _StartError("server %r: %s" % (server.name, e))

    def _listen(self, server, inherited=None):
        """Bind (or reuse) the server's listener and its HTTP→HTTPS forward port."""
        if server.ssl:      # a bad certificate or passphrase: say so before listening
            from ..protocols.tls import config_context
            try:
                config_context(server)      # the server's certificate and each host's (SNI)
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
                    raise _StartError(str(listeners.ListenError(server.name, where, e)))
            self.listeners[key] = sock

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
            busy = self.reloading or not self.ready_sent or self.stopping
            for key, _ in self.selector.select(0.1 if busy else 0.5):
                if key.data == "wake":
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                elif key.data == "control":
                    control.serve_one(self.control, self._command)
            while self.signals:
                self._handle_signal(self.signals.pop(0))
            self._reap()
            now = time.monotonic()
            for pool in self._all_pools():
                pool.tick(now)
            self._after_tick(now)
            if self.stopping and all(p.state in (STOPPED, FAILED) and not p.workers()
                                     for p in self._all_pools()):
                return

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
            reopen_stdio()
            error_log.info("log files reopened (USR1)")
            self._signal_workers(signal.SIGUSR1)
        elif sig == signal.SIGTTIN:
            for pool in self.pools.values():
                pool.grow()
        elif sig == signal.SIGTTOU:
            for pool in self.pools.values():
                pool.shrink()

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

    def _after_tick(self, now):
        if self._watchdog and now >= self._next_watchdog:
            systemd.notify("WATCHDOG=1")
            self._next_watchdog = now + self._watchdog / 2
        if self.stopping:
            return
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
            try:
                os.write(self.ready_fd, what)
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = -1

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
        # every generation's listeners stay in self.listeners while in use
        keep = set(id(s) for s in gen.sockets)
        close = [s for s in self.listeners.values() if id(s) not in keep]
        if self.control is not None:
            close.append(self.control)
        if self.selector is not None:
            close.append(self.selector)
        close.append(_Fd(self._wake_r))
        close.append(_Fd(self._wake_w))
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
                        self._credentials.get(server.name), request_log, close)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid, slot

    def release(self, worker):
        self.scoreboard.release(worker.slot)

    def state_changed(self, pool):
        """Readiness and failures are noticed in _after_tick; a removed server that
        has finished stopping gives its listeners back here, whenever that is."""
        if pool in self.draining and pool.state == STOPPED and not pool.workers():
            self.draining.remove(pool)
            self._close_unused_listeners()

    def generation_abandoned(self, pool, gen):
        if self.last_reload is not None:
            self.last_reload["ok"] = False
            self.last_reload["messages"].append(
                "server %r: the new generation failed to start; generation %d keeps serving"
                % (pool.name, pool.current.number))

    # -- operations -------------------------------------------------------------------
    def reload(self):
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
        error_log.info("reloading (HUP)")
        messages = []
        if new.globals != self.config.globals:
            messages.append("[global] changes (paths, user) take effect at the next restart")
        wanted = {s.name: s for s in new.servers}
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
                self.pools[server.name] = ServerPool(self, server, self._sockets(server))
            else:
                pool.new_generation(server, self._sockets(server))
        self.config = new
        self.reloading = True
        self.last_reload = {"ok": not messages, "messages": messages}
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
        if cmd == "restart":
            name = request.get("server")
            pool = self.pools.get(name)
            if pool is None:
                return {"ok": False, "messages": ["no server named %r (running: %s)"
                                                  % (name, ", ".join(self.pools) or "none")]}
            pool.restart()
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
            c = pool.config
            servers.append({
                "name": pool.name, "state": pool.state, "reason": pool.reason,
                "address": describe_address(c), "generation": pool.current.number,
                "pending_generation": pool.pending.number if pool.pending else None,
                "target_workers": pool.target, "workers": workers})
        return {"ok": True, "pid": os.getpid(), "started": self.started,
                "uptime": round(time.time() - self.started, 1),
                "config_dir": self.config.globals.config_dir,
                "ready": self.ready_sent, "reloading": self.reloading, "reloads": self.reloads,
                "last_reload": self.last_reload, "stopping": self.stopping,
                "servers": servers}

    # -- end ---------------------------------------------------------------------------
    def _cleanup(self):
        self._tell_starter(b"")
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
        if self.pidfile is not None:
            self.pidfile.remove()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        error_log.info("stopped")


class _StartError(Exception):
    pass


class _Fd:
    """A raw descriptor with a close() method, for the child's close list."""

    def __init__(self, fd):
        self.fd = fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
