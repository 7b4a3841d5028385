"""Resource checks on one worker process (psutil), run by the master.

The CPU critical point is the original Skitai's: a worker whose CPU use is
above `cpu_percent` for `continuous` samples in a row, one sample every
`interval` seconds, is replaced. `max_rss` replaces a worker whose resident
memory grew above the limit (a slow leak), checked every few seconds.
"""
import psutil

RSS_INTERVAL = 5.0


def _cpu_rule(critical_point):
    return len(critical_point) == 3 and critical_point[2] > 0


class WorkerMonitor:
    @staticmethod
    def wanted(critical_point, max_rss):
        """Is there anything to watch? (no psutil handle per worker otherwise)"""
        return bool(max_rss) or _cpu_rule(critical_point)

    def __init__(self, pid, critical_point=(), max_rss=0):
        self.process = psutil.Process(pid)
        self.cpu_limit = self.cpu_samples = self.cpu_interval = 0
        if _cpu_rule(critical_point):
            self.cpu_limit, self.cpu_samples, self.cpu_interval = critical_point
        self.max_rss = max_rss
        self.strikes = 0
        self.cpu_runaway = False   # the last reason given was the CPU rule
        self.next_cpu = self.next_rss = 0.0
        if self.cpu_interval:
            self._cpu()     # the first reading only sets psutil's baseline

    def _cpu(self):
        try:
            return self.process.cpu_percent(None)
        except psutil.Error:
            return 0.0

    def check(self, now):
        """A reason to replace the worker, or None."""
        self.cpu_runaway = False
        if self.cpu_interval and now >= self.next_cpu:
            if self.next_cpu:
                used = self._cpu()
                self.strikes = self.strikes + 1 if used > self.cpu_limit else 0
                if self.strikes >= self.cpu_samples:
                    self.strikes = 0
                    self.cpu_runaway = True
                    return ("CPU above %g%% for %d checks %g s apart (critical_point; "
                            "last %.0f%%)" % (self.cpu_limit, self.cpu_samples,
                                              self.cpu_interval, used))
            self.next_cpu = now + self.cpu_interval
        if self.max_rss and now >= self.next_rss:
            self.next_rss = now + RSS_INTERVAL
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return None
            if rss > self.max_rss:
                return "resident memory %d MB above max_rss %d MB" % (rss >> 20, self.max_rss >> 20)
        return None
