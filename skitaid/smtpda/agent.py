"""The delivery agent: pick spooled mail up, deliver it with a few threads, retry.

One scanner (the main thread) lists the spool every poll_interval and queues
what is due; `concurrency` threads claim a message (rename into sending/),
deliver it, and move it on: done/ (then gone), deferred/ (next try after
retry_delays[attempt]), or failed/ (a 5xx, or older than max_age).
"""
import logging
import os
import queue
import threading
import time
import traceback

from . import deliver
from .spool import Spool, new_id, parse

log = logging.getLogger("skitaid.smtpda")
IDLE_CLOSE = 10.0           # a thread closes its SMTP connection after this long idle


def _age(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def next_delay(delays, attempts):
    """The wait after the `attempts`-th failed try (the last delay repeats)."""
    return delays[min(attempts, len(delays)) - 1]


class Agent:
    def __init__(self, cfg, spool_path):
        self.cfg = cfg
        self.spool = Spool(spool_path)
        self.context = deliver.tls_context(cfg)
        self.stopping = threading.Event()
        self._queue = queue.Queue()
        self._pending = set()           # names queued or being worked on
        self._pending_lock = threading.Lock()
        self._threads = []

    # -- the scanner ---------------------------------------------------------------
    def recover(self):
        removed, requeued = self.spool.recover()
        for n in removed:
            log.info("%s: delivered before the agent stopped; removed, not sent again",
                     parse(n)[2])
        for ident in requeued:
            log.warning("%s: the agent stopped before the server's final answer was "
                        "recorded; it will be tried again", ident)

    def scan(self, now=None):
        """Queue every due message not queued yet; returns how many were added."""
        added = 0
        for state, name in self.spool.due(time.time() if now is None else now):
            with self._pending_lock:
                if name in self._pending:
                    continue
                self._pending.add(name)
            self._queue.put((state, name))
            added += 1
        return added

    def run(self):
        """Serve until stopping is set; in-flight deliveries finish first."""
        self.recover()
        for i in range(self.cfg.concurrency):
            t = threading.Thread(target=self._worker, name="smtpda-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("smtpda started: spool %s, %d thread(s), server %s", self.spool.path,
                 self.cfg.concurrency,
                 deliver.describe(deliver.target_of({}, self.cfg)) if self.cfg.server
                 else "(each mail names its own)")
        while not self.stopping.is_set():
            try:
                self.scan()
            except OSError as e:
                log.error("cannot read the spool %s: %s", self.spool.path, e)
            self.stopping.wait(self.cfg.poll_interval)
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(self.cfg.timeout + 5)
        log.info("smtpda stopped")

    # -- a delivery thread -------------------------------------------------------------
    def _worker(self):
        conns = {}
        while True:
            try:
                item = self._queue.get(timeout=IDLE_CLOSE)
            except queue.Empty:
                for conn in conns.values():
                    deliver.close(conn)
                conns.clear()
                continue
            if item is None or self.stopping.is_set():
                break
            state, name = item
            try:
                self._one(conns, state, name)
            except Exception:
                log.error("%s: unexpected error, left for the next start:\n%s", name,
                          traceback.format_exc())
            finally:
                with self._pending_lock:
                    self._pending.discard(name)
        for conn in conns.values():
            deliver.close(conn)

    def _one(self, conns, state, name):
        path = self.spool.claim(state, name)
        if path is None:
            return                      # taken by another thread, or gone
        _, attempts, ident = parse(name)
        try:
            envelope, data = self.spool.load(path)
        except (OSError, ValueError) as e:
            log.error("%s: unreadable spool file, moved to failed/: %s", ident, e)
            self.spool.fail(name, {"id": ident}, b"", {"answer": "unreadable: %s" % e,
                                                       "attempts": attempts})
            return
        now = time.time()
        target = deliver.target_of(envelope, self.cfg)
        if target is None:
            self._failed(name, envelope, data, attempts, "no SMTP server: the mail names "
                         "none (set_smtp) and [smtpda] server is not set")
            return
        started = time.monotonic()
        outcome, _ = deliver.attempt(conns, target, self.cfg, self.context, envelope, data)
        kind, answer, refused = outcome
        attempts += 1
        took = time.monotonic() - started
        if kind == "sent":
            self.spool.delivered(name)
            log.info("delivered %s from=<%s> to=%d recipient(s) message-id=%s via %s "
                     "attempt %d in %.3fs", ident, envelope.get("from"), len(envelope["to"]),
                     envelope.get("message_id", "-"), deliver.describe(target), attempts, took)
        elif kind == "permanent":
            self._failed(name, envelope, data, attempts, answer, target)
        elif kind == "temporary":
            self._deferred(name, envelope, attempts, answer, now, data)
        else:
            self._partial(name, envelope, data, attempts, answer, refused, target, now)

    def _failed(self, name, envelope, data, attempts, answer, target=None):
        ident = envelope.get("id", parse(name)[2])
        self.spool.fail(name, envelope, data, {"answer": answer, "attempts": attempts,
                                               "failed_at": time.time()})
        log.error("failed %s from=<%s> to=%s after %d attempt(s)%s: %s", ident,
                  envelope.get("from"), ",".join(envelope.get("to", ())), attempts,
                  " via " + deliver.describe(target) if target else "", answer)

    def _deferred(self, name, envelope, attempts, answer, now, data=None):
        created = envelope.get("created", now)
        expires = created + self.cfg.max_age
        if now >= expires:
            if data is None:
                data = self.spool.load(os.path.join(self.spool.dir("sending"), name))[1]
            self._failed(name, envelope, data, attempts,
                         "expired after %d attempt(s) over %s; last answer: %s"
                         % (attempts, _age(now - created), answer))
            return
        delay = next_delay(self.cfg.retry_delays, attempts)
        next_try = min(now + delay, expires)
        self.spool.defer(name, next_try, attempts)
        log.warning("deferred %s to=%s attempt %d, next in %s: %s", envelope.get("id"),
                    ",".join(envelope["to"]), attempts, _age(next_try - now), answer)

    def _partial(self, name, envelope, data, attempts, answer, refused, target, now):
        """Some recipients accepted it: they are done. The 5xx ones go to
        failed/, the 4xx ones into a new deferred message of their own."""
        later = [r for r, code, _ in refused if not 500 <= code < 600]
        never = [r for r, code, _ in refused if 500 <= code < 600]
        accepted = [r for r in envelope["to"] if r not in later and r not in never]
        if later:
            copy = dict(envelope, id=new_id(), to=later)
            delay = next_delay(self.cfg.retry_delays, attempts)
            self.spool.requeue(copy, data, min(now + delay, copy["created"] + self.cfg.max_age),
                               attempts)
            log.warning("deferred %s (from %s) to=%s attempt %d: %s", copy["id"],
                        envelope.get("id"), ",".join(later), attempts, answer)
        if never:
            self.spool.fail(None, dict(envelope, id=new_id(), to=never), data,
                            {"answer": answer, "attempts": attempts, "failed_at": time.time()})
            log.error("failed %s to=%s: %s", envelope.get("id"), ",".join(never), answer)
        self.spool.delivered(name)
        if accepted:
            log.info("delivered %s from=<%s> to=%d recipient(s) message-id=%s via %s "
                     "attempt %d", envelope.get("id"), envelope.get("from"), len(accepted),
                     envelope.get("message_id", "-"), deliver.describe(target), attempts)
