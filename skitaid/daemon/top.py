"""`skitaid top`: a live terminal view of the master's status (curses).

It asks the control socket for `status` every interval, as `skitaid status`
does, so it needs no web listener. Keys: q quits; c, m, r sort the workers
by CPU, resident memory or requests served (the default is CPU).
"""
import curses
import time

from . import commands, control

SORTS = {ord("c"): ("cpu_percent", "CPU"), ord("m"): ("rss", "RSS"),
         ord("r"): ("requests", "requests")}


def rows(doc, sort_key):
    """The screen's lines (without colours) for a status document."""
    lines = ["skitaid master pid %d  up %s  %s  sorted by %s  (q quit, c/m/r sort)" % (
        doc["pid"], commands._duration(doc["uptime"]),
        "reloading" if doc.get("reloading") else "serving", SORTS_BY_FIELD[sort_key])]
    workers = []
    for s in doc["servers"]:
        t = s.get("traffic", {}).get("1m", {})
        lines.append("server %-12s %-8s %-24s gen %-3d req/s %-8s p95 %s ms" % (
            s["name"], s["state"], s["address"], s["generation"], t.get("rate", "-"),
            t.get("p95") if t.get("p95") is not None else "-"))
        for w in s["workers"]:
            workers.append((s["name"], w))
    lines.append("")
    lines.append("%-12s %3s %8s %4s %-9s %8s %6s %8s %9s %6s %6s %7s" % (
        "SERVER", "#", "PID", "GEN", "STATE", "UPTIME", "CPU%", "RSS(M)", "REQUESTS",
        "CONNS", "FLIGHT", "BUSY"))
    workers.sort(key=lambda sw: sw[1].get(sort_key, 0), reverse=True)
    for name, w in workers:
        lines.append("%-12s %3d %8d %4d %-9s %8s %6.1f %8.1f %9d %6d %6d %3d/%-3d" % (
            name[:12], w["index"], w["pid"], w["generation"], w["state"],
            commands._duration(w["uptime"]), w["cpu_percent"], w["rss"] / 1048576.0,
            w["requests"], w.get("connections", 0), w.get("in_flight", 0),
            w.get("threads_busy", 0), w.get("threads", 0)))
    return lines


SORTS_BY_FIELD = {field: label for field, label in SORTS.values()}


def _draw(screen, lines):
    screen.erase()
    height, width = screen.getmaxyx()
    for y, line in enumerate(lines[:height - 1]):
        try:
            screen.addstr(y, 0, line[:width - 1], curses.A_BOLD if y == 0 else 0)
        except curses.error:
            pass
    screen.refresh()


def _loop(screen, config, interval):
    curses.curs_set(0)
    screen.timeout(int(interval * 1000))
    sort_key = "cpu_percent"
    next_poll = 0.0
    lines = ["asking the master…"]
    while True:
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + interval
            try:
                doc = commands._ask(config, {"command": "status"}, timeout=5.0)
                lines = rows(doc, sort_key)
            except (control.NotRunning, OSError) as e:
                lines = ["skitaid is not running (%s); q quits" % e]
        _draw(screen, lines)
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        if key in SORTS:
            sort_key = SORTS[key][0]
            next_poll = 0.0


def main(config, interval=1.0):
    return curses.wrapper(_loop, config, interval)
