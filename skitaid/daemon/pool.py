"""One server's workers, supervised by the master.

A pool holds the current generation of worker processes, at most one
pending generation (a reload waiting for its workers to be ready), at most
one deferred reload and the workers being retired.

A pending generation whose workers are partly ready is already serving (its
ready workers accept from the shared listeners next to the current ones), so
a newer reload never throws it away: it waits, deferred, until that
generation is promoted or has failed, and then starts. Only a pending
generation that has served nobody yet is replaced at once. So a generation
that fails to boot always leaves the newest generation that was serving in
place, and what clients see only moves forward.

The master calls `tick()` a few times a second and `reaped()` when a child
exits; everything here runs on the master's single thread, so there is no
locking.
"""
import os
import signal
import time

from ..logs import error_log
from .. import scoreboard as sb
from .monitor import WorkerMonitor

MAX_BOOT_FAILURES = 5        # workers dying before ready, in a row → the server failed
KILL_AFTER_ABORT = 1.0       # a hung worker gets this long to dump its stacks
FAST_STOP = 2.0              # QUIT: workers get this long before SIGKILL
# A CPU-runaway worker (critical_point) gets this long after its replacement
# took over, not graceful_timeout: the requests it spins on cannot finish anyway.
RUNAWAY_GRACE = 3.0

SUPERSEDED = "superseded by a newer reload"

# pool states
STARTING, RUNNING, FAILED, STOPPING, STOPPED = "starting", "running", "failed", "stopping", "stopped"


class WorkerProc:
    """The master's record of one worker process."""

    __slots__ = ("pid", "index", "generation", "slot", "started", "ready_at", "deadline",
                 "replaces", "retiring", "aborted", "monitor", "status_proc", "cause",
                 "runaway", "server", "cpu_seconds")

    def __init__(self, pid, index, generation, slot):
        self.pid = pid
        self.index = index
        self.generation = generation
        self.slot = slot
        self.started = time.monotonic()
        self.ready_at = 0.0
        self.deadline = 0.0        # retiring/aborted: SIGKILL after this
        self.replaces = None       # the worker this one takes over from, once ready
        self.retiring = False
        self.aborted = False
        self.monitor = None
        self.status_proc = None    # psutil.Process for `skitaid status` (its own CPU baseline)
        self.cause = ""            # why the master killed it before it was ready
        self.runaway = False       # replaced for burning CPU (critical_point)
        self.server = ""           # its server's name (its counters are folded there)
        self.cpu_seconds = 0.0     # CPU time at the last status (folded when it is gone)


class Generation:
    def __init__(self, number, config, sockets, tls=None):
        self.number = number
        self.config = config
        self.sockets = sockets
        self.tls = tls             # the SSL context every worker of it inherits (tlsctx.py)
        self.workers = {}          # index → WorkerProc
        self.started = time.monotonic()

    def all_ready(self, target):
        return len(self.workers) >= target and all(w.ready_at for w in self.workers.values())

    def serving(self, scoreboard):
        """Has any worker of it begun to take connections? The scoreboard is read
        here and now: a worker may be ready before the next tick has seen it."""
        for w in self.workers.values():
            if w.ready_at:
                return True
            state, pid, _, _ = scoreboard.read(w.slot)
            if state in (sb.READY, sb.RECYCLE) and pid == w.pid:
                return True
        return False


def _boot_timeout_cause(config):
    return "the app import did not finish within %g s (boot_timeout)" % config.boot_timeout


def _describe_exit(status):
    if os.WIFSIGNALED(status):
        try:
            return "killed by %s" % signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.waitstatus_to_exitcode(status)


class ServerPool:
    def __init__(self, master, config, sockets, tls=None):
        self.master = master
        self.name = config.name
        self.state = STARTING
        self.reason = ""
        self.target = config.processes
        self.generations = 0
        self.current = self._generation(config, sockets, tls)
        self.pending = None
        self.deferred = None       # (config, sockets, tls) of a reload waiting for `pending`
        self.retiring = []
        self.outgoing = []         # still serving while their replacement boots
        self.boot_failures = 0
        self.respawn = {}          # index → monotonic time to spawn it again
        self.replacing = {}        # index → pid of the worker that died there (for the log)
        self.restarts = {}         # reason → workers replaced for it (status, metrics)
        self.last_restart = {}     # index → why the worker there was last replaced
        for index in range(self.target):
            self._spawn(self.current, index)

    @property
    def config(self):
        return self.current.config

    def _generation(self, config, sockets, tls=None):
        self.generations += 1
        return Generation(self.generations, config, sockets, tls)

    def _spawn(self, gen, index, replaces=None):
        pid, slot = self.master.spawn(self, gen, index)
        w = WorkerProc(pid, index, gen.number, slot)
        w.server = self.name
        w.replaces = replaces
        c = gen.config
        if WorkerMonitor.wanted(c.critical_point, c.max_rss):
            w.monitor = WorkerMonitor(pid, c.critical_point, c.max_rss)
        gen.workers[index] = w
        return w

    def workers(self):
        """Every live worker: current, pending and retiring."""
        out = list(self.current.workers.values())
        if self.pending is not None:
            out += self.pending.workers.values()
        return out + self.outgoing + self.retiring

    def sockets_in_use(self):
        socks = list(self.current.sockets)
        if self.pending is not None:
            socks += self.pending.sockets
        if self.deferred is not None:
            socks += self.deferred[1]
        return socks

    # -- life cycle -------------------------------------------------------------
    def new_generation(self, config, sockets, tls=None):
        """Reload: start a generation of workers; the current one serves until it is ready."""
        if self.pending is not None:
            if self.pending.serving(self.master.scoreboard) and self.state != FAILED:
                # it serves already: let it finish booting; the newest deferred reload wins
                self.deferred = (config, sockets, tls)
                error_log.info("server %r: generation %d is starting and already serving; "
                               "the reload follows once it is ready (or has failed)",
                               self.name, self.pending.number)
                return
            self._abandon(SUPERSEDED)
        self.deferred = None
        if self.state == FAILED:
            # nothing to keep serving: replace the failed generation outright
            self.current = self._generation(config, sockets, tls)
            self.state = STARTING
            self.target = config.processes
            self.boot_failures = 0
            self.respawn.clear()
            for index in range(self.target):
                self._spawn(self.current, index)
            return
        self.pending = self._generation(config, sockets, tls)
        self.target = config.processes
        for index in range(self.target):
            self._spawn(self.pending, index)

    def _start_deferred(self):
        if self.deferred is not None and self.state not in (STOPPING, STOPPED):
            config, sockets, tls = self.deferred
            self.deferred = None
            self.new_generation(config, sockets, tls)

    def stop(self, graceful=True):
        self.state = STOPPING
        self.respawn.clear()
        self.deferred = None
        for w in list(self.current.workers.values()):
            self._retire(w, graceful)
        self.current.workers.clear()
        if self.pending is not None:
            for w in self.pending.workers.values():
                self._retire(w, graceful)
            self.pending = None
        for w in list(self.outgoing):
            self._retire(w, graceful)
        if not graceful:
            for w in self.retiring:
                self._signal(w, signal.SIGQUIT)
                w.deadline = min(w.deadline, time.monotonic() + FAST_STOP)

    def grow(self):
        if self.state in (STOPPING, STOPPED):
            return
        self.target += 1
        self._spawn(self.current, self._free_index())
        error_log.info("server %r: %d workers (TTIN)", self.name, self.target)

    def shrink(self):
        if self.target <= 1 or self.state in (STOPPING, STOPPED):
            return
        self.target -= 1
        index = max(self.current.workers, default=None)
        if index is not None:
            self._retire(self.current.workers.pop(index), True)
        error_log.info("server %r: %d workers (TTOU)", self.name, self.target)

    def latest(self):
        """(config, sockets, tls) of the newest generation the pool was given."""
        if self.deferred is not None:
            return self.deferred
        gen = self.pending or self.current
        return gen.config, gen.sockets, gen.tls

    def restart(self, tls=None):
        """Replace every worker gracefully (new app code), as a reload would,
        with the newest configuration the pool was given."""
        config, sockets, latest_tls = self.latest()
        self.new_generation(config, sockets, tls or latest_tls)

    def _free_index(self):
        index = 0
        while index in self.current.workers:
            index += 1
        return index

    def _retire(self, w, graceful=True):
        if w in self.outgoing:
            self.outgoing.remove(w)
        w.retiring = True
        timeout = self.config.graceful_timeout if graceful else FAST_STOP
        if w.runaway:
            timeout = min(timeout, RUNAWAY_GRACE)
        w.deadline = time.monotonic() + timeout + (0.0 if w.runaway else 1.0)
        self._signal(w, signal.SIGTERM if graceful else signal.SIGQUIT)
        self.retiring.append(w)

    def _signal(self, w, sig):
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _abandon(self, why, cause=""):
        """`cause`: what the operator is told for a failed reload (default: why)."""
        gen = self.pending
        self.pending = None
        error_log.error("server %r: new generation %d abandoned (%s); generation %d keeps serving",
                        self.name, gen.number, why, self.current.number)
        for w in gen.workers.values():
            self._retire(w, False)
        self.target = len(self.current.workers) or self.current.config.processes
        if why != SUPERSEDED and self.deferred is not None:
            self._start_deferred()      # the newer reload goes on and reports for itself
        else:
            self.master.generation_abandoned(self, gen, cause or why)

    # -- events from the master ----------------------------------------------------
    def reaped(self, pid, status):
        """A child exited; returns True if it was ours."""
        for w in self.retiring:
            if w.pid == pid:
                self.retiring.remove(w)
                self.master.release(w)
                return True
        for w in self.outgoing:
            if w.pid == pid:
                # died while its replacement boots: the replacement takes the place
                self.outgoing.remove(w)
                self.master.release(w)
                for new in self.current.workers.values():
                    if new.replaces is w:
                        new.replaces = None
                return True
        if self.pending is not None:
            for index, w in self.pending.workers.items():
                if w.pid == pid:
                    del self.pending.workers[index]
                    cause = w.cause or self.master.boot_cause(w)
                    self.master.release(w)
                    error_log.error("server %r: worker #%d (pid %d) of the new generation %s",
                                    self.name, index, pid, _describe_exit(status))
                    self._abandon("a worker failed to start",
                                  cause or "a worker exited: %s" % _describe_exit(status))
                    return True
        for index, w in list(self.current.workers.items()):
            if w.pid != pid:
                continue
            del self.current.workers[index]
            if not w.ready_at and self._said_ready(w):
                w.ready_at = time.monotonic()   # it served before the master's tick saw it
            cause = "" if w.ready_at else (w.cause or self.master.boot_cause(w))
            self.master.release(w)
            if self.state == STOPPING:
                return True
            if w.replaces is not None and w.replaces in self.outgoing:
                # a replacement died before taking over: the old worker stays
                old = w.replaces
                self.outgoing.remove(old)
                self.current.workers[old.index] = old
                return True
            if not w.ready_at:
                self.boot_failures += 1
                error_log.error("server %r: worker #%d (pid %d) failed to start: %s",
                                self.name, index, pid, _describe_exit(status))
                if self.boot_failures >= MAX_BOOT_FAILURES:
                    self._fail("workers failed to start %d times in a row%s" % (
                        self.boot_failures, " (%s)" % cause if cause else ""))
                    return True
                delay = min(0.25 * 2 ** (self.boot_failures - 1), 5.0)
            else:
                error_log.error("server %r: %sworker #%d (pid %d) %s: %s", self.name,
                                "hung " if w.aborted else "", index, pid,
                                "ended" if w.aborted else "died", _describe_exit(status))
                self._restarted(index, "hung" if w.aborted else "died",
                                "%s: %s" % ("hung" if w.aborted else "died", _describe_exit(status)))
                delay = 0.0
            if index not in self.current.workers:
                self.respawn[index] = time.monotonic() + delay
                self.replacing[index] = pid
            return True
        return False

    def _said_ready(self, w):
        state, pid = self.master.scoreboard.read(w.slot)[:2]
        return state in (sb.READY, sb.RECYCLE, sb.STOPPING) and pid == w.pid

    def _fail(self, why):
        self.state = FAILED
        self.reason = why
        self.respawn.clear()
        for w in list(self.current.workers.values()):
            self._retire(w, False)
        self.current.workers.clear()
        error_log.error("server %r failed: %s; other servers keep running", self.name, why)
        self.master.state_changed(self)

    # -- periodic supervision --------------------------------------------------------
    def tick(self, now):
        if self.state == FAILED:
            return
        for index, when in list(self.respawn.items()):
            if now >= when and self.state != STOPPING:
                del self.respawn[index]
                if index not in self.current.workers and index < self.target:
                    w = self._spawn(self.current, index)
                    old = self.replacing.pop(index, None)
                    if old is not None:
                        error_log.info("server %r: worker #%d (pid %d) started in place of "
                                       "pid %d", self.name, index, w.pid, old)
        self._watch(self.current, now)
        if self.pending is not None:
            self._watch(self.pending, now)
            if self.pending is not None and self.pending.all_ready(self.target):
                self._promote()
            elif self.pending is not None and \
                    now - self.pending.started > self.pending.config.boot_timeout:
                self._abandon(_boot_timeout_cause(self.pending.config))
        for w in self.retiring:
            if w.deadline and now > w.deadline:
                if w.runaway:
                    error_log.warning("server %r: worker #%d (pid %d) still spinning %g s after "
                                      "its replacement took over (critical_point); killed "
                                      "(SIGKILL)", self.name, w.index, w.pid, RUNAWAY_GRACE)
                else:
                    error_log.warning("server %r: worker #%d (pid %d) did not stop in time; "
                                      "killed (SIGKILL)", self.name, w.index, w.pid)
                self._signal(w, signal.SIGKILL)
                w.deadline = 0.0
        if self.state == STARTING and self.current.all_ready(self.target):
            self.state = RUNNING
            self.boot_failures = 0
            self.master.state_changed(self)
        elif self.state == STOPPING and not self.workers():
            self.state = STOPPED
            self.master.state_changed(self)

    def _promote(self):
        old = self.current
        self.current = self.pending
        self.pending = None
        for w in list(old.workers.values()) + list(self.outgoing):
            self._retire(w, True)
        if self.state != RUNNING:
            self.state = RUNNING
        self.boot_failures = 0
        self.respawn.clear()
        error_log.info("server %r: generation %d serving, generation %d retiring",
                       self.name, self.current.number, old.number)
        self._start_deferred()

    def _watch(self, gen, now):
        timeout = gen.config.worker_timeout
        for index, w in list(gen.workers.items()):
            state, pid, beat, requests = self.master.scoreboard.read(w.slot)
            if w.aborted:
                if w.deadline and now > w.deadline:
                    error_log.error("server %r: worker #%d (pid %d) still running %g s after "
                                    "SIGABRT; killing it (SIGKILL)", self.name, index, w.pid,
                                    KILL_AFTER_ABORT)
                    self._signal(w, signal.SIGKILL)
                    w.deadline = 0.0
                continue
            if not w.ready_at:
                if state in (sb.READY, sb.RECYCLE) and pid == w.pid:
                    w.ready_at = now
                    if gen is self.current:
                        self.boot_failures = 0
                    if w.replaces is not None:
                        old, w.replaces = w.replaces, None
                        self._retire(old, True)
                elif now - w.started > gen.config.boot_timeout:
                    error_log.error("server %r: worker #%d (pid %d) not ready after %g s "
                                    "(boot_timeout); killed", self.name, index, w.pid,
                                    gen.config.boot_timeout)
                    w.cause = _boot_timeout_cause(gen.config)
                    w.aborted = True
                    self._signal(w, signal.SIGKILL)
                continue
            if timeout and state == sb.READY and now - beat > timeout:
                # Hung: SIGABRT makes faulthandler write every thread's stack
                # to the error log; SIGKILL follows.
                error_log.error("server %r: worker #%d (pid %d) silent for %.1f s "
                                "(worker_timeout %g); aborting it", self.name, index,
                                w.pid, now - beat, timeout)
                w.aborted = True
                w.deadline = now + KILL_AFTER_ABORT
                self._signal(w, signal.SIGABRT)
                continue
            if w.replaces is None:
                why = None
                if state == sb.RECYCLE:
                    why = "served %d requests (max_requests)" % requests
                elif w.monitor is not None:
                    why = w.monitor.check(now)
                    w.runaway = bool(why) and w.monitor.cpu_runaway
                if why:
                    error_log.warning("server %r: replacing worker #%d (pid %d): %s",
                                      self.name, index, w.pid, why)
                    self._restarted(index, "max_requests" if state == sb.RECYCLE else
                                    "cpu" if w.runaway else "memory", why)
                    self._replace(gen, w)

    def _restarted(self, index, reason, text):
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        self.last_restart[index] = text

    def _replace(self, gen, w):
        """Start a new worker for w's place; w serves until the new one is ready."""
        del gen.workers[w.index]
        self.outgoing.append(w)
        self._spawn(gen, w.index, replaces=w)
