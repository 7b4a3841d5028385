"""Backend health is shared by every worker of a server: a member one worker
found dead is skipped by the others too until its retry time."""
import http.client
import os

from conftest import free_port, wait_for
from helpers.recording_backend import RecordingBackend
from test_daemon import master, site, write  # noqa: F401  (fixtures)


def get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_a_member_marked_down_by_one_worker_is_skipped_by_the_other(site, master):
    good = RecordingBackend()
    dead = free_port()           # nothing listens there: every attempt is refused
    port = free_port()
    write(os.path.join(site.root, "servers-enabled", "web.conf"), """
        [server]
        ip = 127.0.0.1
        port = %d
        processes = 2
        status_path = /server-status

        [@pool]
        members = 127.0.0.1:%d, %s

        [routes:line]
        /api = @pool
        """ % (port, dead, good.member))
    m = master(port)
    statuses = [get(port, "/api/x")[0] for _ in range(30)]   # new connection each time
    assert statuses == [200] * 30
    attempts = m.log.count("member 127.0.0.1:%d:" % dead)
    # one worker met the refusal; the other (which served too) never tried
    assert attempts == 1, m.log
    # (the per-worker figures reach the master with the next heartbeat)
    assert wait_for(lambda: all(w["requests"] > 0 for w in site.server("web")["workers"]),
                    10, 0.2), site.server("web")["workers"]
    backends = site.server("web")["backends"]["pool"]
    row = backends["127.0.0.1:%d" % dead]
    assert row["up"] is False and row["failures"] == 1 and row["last_error"]
    assert backends[good.member]["up"] is True
    assert backends[good.member]["calls"] >= 30
