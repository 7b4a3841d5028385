"""The worker's thread pool for app calls.

A plain pool on a C-implemented SimpleQueue. It also keeps a running
estimate of how long a new job would wait, for the original Skitai's
"503 when the estimated wait is over the limit" rule.
"""
import threading
import time
from queue import SimpleQueue

_STOP = object()


class ThreadPool:
    def __init__(self, size, name="skitaid-app"):
        self.size = size
        self._queue = SimpleQueue()
        self._threads = []
        self.avg_service = 0.0     # moving average of a job's run time, seconds
        self._samples = 0          # jobs averaged so far, up to 32
        self.last_done = time.monotonic()   # when a job last finished (hang detection)
        self._waiting_since = None  # first stalled_for() call that saw jobs waiting
        # one flag per thread (set by that thread only, so no lock and no drift)
        self._running = [False] * size
        for i in range(size):
            t = threading.Thread(target=self._run, args=(i,), name="%s-%d" % (name, i),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, fn, *args):
        self._queue.put((fn, args))

    def estimated_wait(self):
        """Seconds a job submitted now would wait before it starts (rough)."""
        return self._queue.qsize() * self.avg_service / max(self.size, 1)

    @property
    def busy(self):
        """App threads running a job now (the status page's figure)."""
        return sum(self._running)

    def queued(self):
        return self._queue.qsize()

    def _run(self, index=0):
        get = self._queue.get
        clock = time.monotonic
        running = self._running
        while True:
            job = get()
            if job is _STOP:
                return
            fn, args = job
            t0 = clock()
            running[index] = True
            try:
                fn(*args)
            except BaseException:       # a job must never kill the thread
                from ..logs import error_log
                error_log.exception("unhandled error in app thread")
            finally:
                running[index] = False
            # moving average over ~32 jobs, as the original did. The first 32
            # jobs get a plain mean: an average that starts from 0 and moves by
            # 1/32 would take ~100 jobs to notice that the app is slow, and the
            # 503 rule would never fire in the burst that needs it.
            n = self._samples
            if n < 32:
                n = self._samples = n + 1
            done = clock()
            self.avg_service += (done - t0 - self.avg_service) / n
            self.last_done = done

    def stalled_for(self, now):
        """Seconds jobs have been waiting while no thread finished anything (0: not stalled).

        Called by the worker's once-a-second sweep, which also notes when it
        first saw jobs waiting: after an idle spell, last_done alone would make
        the first job queued look stalled for the whole spell. Nothing is
        timed per job for this; the figure is at most one sweep short."""
        if self._queue.empty():
            self._waiting_since = None
            return 0.0
        since = self._waiting_since
        if since is None:
            since = self._waiting_since = now
        return now - max(since, self.last_done)

    def shutdown(self, timeout=None):
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
