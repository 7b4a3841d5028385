"""Database corequests against the real PostgreSQL of this machine.

The app under test is a real skitaid server whose app code uses was.db /
was.transaction on the aliases below; the test process checks and disturbs
the database with its own psycopg2 connection (pg_terminate_backend, …).
DSN: 127.0.0.1:5432, database test, user postgres — or $SKITAID_TEST_PG.
"""
import concurrent.futures
import os
import time
import uuid
from urllib.parse import quote

import pytest

from conftest import free_port, wait_for
from helpers.clients import get_json as get

psycopg2 = pytest.importorskip("psycopg2")
from psycopg2 import extensions as pgext  # noqa: E402

DSN = os.environ.get("SKITAID_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")
SECOND_DB = "test_skitaid_2"


def _params(dbname=None):
    p = pgext.parse_dsn(DSN)
    if dbname:
        p["dbname"] = dbname
    return p


def _member(dbname=None):
    p = _params(dbname)
    user = quote(p.get("user", "postgres"), safe="")
    if p.get("password"):
        user += ":" + quote(p["password"], safe="")
    return "%s@%s:%s/%s" % (user, p.get("host", "127.0.0.1"), p.get("port", "5432"),
                            p.get("dbname", "test"))


def _connect(dbname=None):
    conn = psycopg2.connect(**_params(dbname))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def pg():
    try:
        conn = _connect()
    except psycopg2.OperationalError as e:
        pytest.skip("PostgreSQL not reachable (%s): %s" % (DSN, e))
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SECOND_DB,))
        if not cur.fetchone():
            try:
                cur.execute("CREATE DATABASE " + SECOND_DB)
            except psycopg2.errors.DuplicateDatabase:
                pass                     # created meanwhile by another run
    yield conn
    conn.close()


@pytest.fixture
def table(pg):
    """A fresh table (id int primary key, name text) in both databases, dropped after."""
    name = "skitaid_t_" + uuid.uuid4().hex[:10]
    second = _connect(SECOND_DB)
    for conn in (pg, second):
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE %s (id int PRIMARY KEY, name text)" % name)
    yield name
    for conn in (pg, second):
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS %s" % name)
    second.close()


APP = r'''
import json, os, time
import skitaid
from skitaid import was

T = os.environ["TABLE"]
skitaid.alias("@pg", skitaid.DB_PGSQL, os.environ["MEMBER"],
              max_connections=int(os.environ.get("MAXCONN", "4")))
skitaid.alias("@small", skitaid.DB_PGSQL, os.environ["MEMBER"], max_connections=1,
              pool_timeout=0.3)
skitaid.alias("@two", skitaid.DB_PGSQL, [os.environ["MEMBER"], os.environ["MEMBER2"]])
skitaid.alias("@half", skitaid.DB_PGSQL, [os.environ["DEADMEMBER"], os.environ["MEMBER"]])
skitaid.register_cache_keys("rows")

def answer(start, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path = env["PATH_INFO"]
    q = dict(p.split("=", 1) for p in env["QUERY_STRING"].split("&") if "=" in p)
    if path == "/sleep2":
        t0 = time.monotonic()
        with was.db("@pg") as db:
            a = db.execute("SELECT pg_sleep(1), %s AS n", (1,))
            b = db.execute("SELECT pg_sleep(1), %s AS n", (2,))
        rows = was.Tasks([a, b], timeout=5).one()
        return answer(start, {"elapsed": time.monotonic() - t0, "n": [r.n for r in rows]})
    if path == "/three":
        i = int(q["i"])
        with was.db("@pg") as db:
            a = db.execute("SELECT %s::int + 1 AS v, pg_backend_pid() AS pid, pg_sleep(0.02)", (i,))
            b = db.execute("SELECT %(x)s::text || '!' AS v, pg_backend_pid() AS pid", {"x": str(i)})
            c = db.execute("SELECT count(*) AS v, pg_backend_pid() AS pid FROM " + T)
        ra, rb, rc = a.one(10), b.one(10), c.one(10)
        return answer(start, {"v": [ra.v, rb["v"], rc.v], "pids": [ra.pid, rb.pid, rc.pid]})
    if path == "/pid":
        return answer(start, {"pid": was.db("@small").execute("SELECT pg_backend_pid() AS p").one(5).p})
    if path == "/exhaust":
        with was.db("@small") as db:
            slow = db.execute("SELECT pg_sleep(1.5)")
            time.sleep(0.1)                     # the only connection is busy now
            t0 = time.monotonic()
            late = db.execute("SELECT 1").dispatch(5)
            waited = time.monotonic() - t0
        try:
            db.execute("SELECT 1").fetch(5)
            raised = None
        except skitaid.CorequestError as e:
            raised = [e.status_code, str(e)]
        slow.commit(5)
        return answer(start, {"status": late.status, "code": late.status_code,
                              "error": str(late.error), "waited": waited, "raised": raised})
    if path == "/insert":
        try:
            row = was.db("@pg").execute("INSERT INTO " + T + " (id, name) VALUES (%s, %s) "
                                        "RETURNING id, name", (int(q["id"]), q["name"])).one(5)
            return answer(start, {"id": row.id, "name": row["name"]})
        except skitaid.CorequestError as e:
            return answer(start, {"error": str(e)}, "%d Error" % e.status_code)
    if path == "/one":
        try:
            return answer(start, was.db("@pg").execute("SELECT * FROM " + T + " WHERE id >= %s",
                                                       (int(q["min"]),)).one(5))
        except skitaid.CorequestError as e:
            return answer(start, {"error": str(e)}, "%d Error" % e.status_code)
    if path == "/bad":
        r = was.db("@pg").execute("SELECT * FROM no_such_table_here").dispatch(5)
        return answer(start, {"status": r.status, "code": r.status_code})
    if path == "/tx":
        fail = q.get("fail")
        try:
            with was.transaction("@pg") as tx:
                tx.execute("INSERT INTO " + T + " (id, name) VALUES (%s, 'a'), (%s, 'b')",
                           (int(q["id"]), int(q["id"]) + 1))
                tx.execute("SELECT id, name FROM " + T + " WHERE id >= %s ORDER BY id",
                           (int(q["id"]),))
                first = tx.fetchone()
                rest = tx.fetchmany(5)
                if fail == "raise":
                    raise ValueError("changed my mind")
                if fail == "dup":
                    tx.execute("INSERT INTO " + T + " (id, name) VALUES (%s, 'c')", (int(q["id"]),))
                tx.commit()
            outcome = "committed"
        except ValueError:
            outcome = "raised"
        except Exception as e:
            outcome = type(e).__name__
        n = was.db("@pg").execute("SELECT count(*) AS n FROM " + T + " WHERE id >= %s",
                                  (int(q["id"]),)).one(5).n
        return answer(start, {"outcome": outcome, "first": first, "rest": rest, "n": n})
    if path == "/tx-half":
        # one member refuses connections: every transaction goes to the other one
        out = []
        for _ in range(4):
            with was.transaction("@half") as tx:
                out.append(tx.execute("SELECT current_database() AS d").fetchone().d)
        return answer(start, out)
    if path == "/lb":
        dbs = [was.db.lb("@two").execute("SELECT current_database() AS d").one(5).d
               for _ in range(6)]
        return answer(start, dbs)
    if path == "/map":
        rs = was.db.map("@two").execute("SELECT current_database() AS d, count(*) AS n FROM " + T)
        return answer(start, sorted([r.status_code, r.data[0].d, r.data[0].n] for r in rs.dispatch(5)))
    if path == "/cached":
        r = was.db("@pg", use_cache=was.getlu("rows")).execute(
            "SELECT count(*) AS n FROM " + T).dispatch(5, cache=60)
        return answer(start, {"n": r.data[0].n, "pid": os.getpid()})
    if path == "/write":
        was.db("@pg", rm_cache="rows").execute("INSERT INTO " + T + " (id, name) VALUES (%s, 'w')",
                                             (int(q["id"]),)).commit(5)
        return answer(start, {"pid": os.getpid()})
    return answer(start, {"path": path}, "404 Not Found")

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "4")),
            processes=int(os.environ.get("PROCESSES", "1")))
'''


@pytest.fixture
def app(serve, table):
    def start(**env):
        env.setdefault("TABLE", table)
        env.setdefault("MEMBER", _member())
        env.setdefault("MEMBER2", _member(SECOND_DB))
        env.setdefault("DEADMEMBER", _member().replace(
            "@%s:%s/" % (_params().get("host", "127.0.0.1"), _params().get("port", "5432")),
            "@127.0.0.1:%d/" % free_port()))
        return serve(APP, env={k: str(v) for k, v in env.items()})
    return start


def test_two_sleeps_run_together(app):
    s = app()
    t0 = time.monotonic()
    status, body = get(s.port, "/sleep2")
    elapsed = time.monotonic() - t0
    assert status == 200 and body["n"] == [1, 2]
    assert body["elapsed"] < 1.5 and elapsed < 1.5, (body, elapsed)


def test_twenty_requests_three_queries_pool_of_four(app, pg, table):
    with pg.cursor() as cur:
        cur.execute("INSERT INTO %s (id, name) VALUES (1, 'x'), (2, 'y')" % table)
    s = app(MAXCONN=4, THREADS=8)
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda i: (i, get(s.port, "/three?i=%d" % i)), range(20)))
    pids = set()
    for i, (status, body) in results:
        assert status == 200, body
        assert body["v"] == [i + 1, "%d!" % i, 2]
        pids.update(body["pids"])
    assert 1 <= len(pids) <= 4          # never more connections than the pool allows


def test_killed_backend_is_replaced(app, pg):
    s = app()
    status, body = get(s.port, "/pid")
    assert status == 200
    old = body["pid"]
    with pg.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (old,))
        assert cur.fetchone()[0] is True

    def gone():
        with pg.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (old,))
            return cur.fetchone() is None
    assert wait_for(gone, 5)
    status, body = get(s.port, "/pid")
    assert status == 200 and body["pid"] != old


def test_pool_exhaustion_is_a_clear_error_not_a_hang(app):
    s = app()
    status, body = get(s.port, "/exhaust")
    assert status == 200
    assert body["code"] == 503 and body["status"] == 2            # STA_NETERR
    assert "no free connection" in body["error"] and "max_connections" in body["error"]
    assert 0.2 <= body["waited"] < 1.2                            # pool_timeout = 0.3
    assert body["raised"][0] == 503
    assert "no free connection" in s.log                          # and in the error log
    # the pool recovers once the slow statement is done
    assert get(s.port, "/pid")[0] == 200


def test_integrity_error_409_row_count_410_other_errors_500(app):
    s = app()
    assert get(s.port, "/insert?id=5&name=Seoul") == (200, {"id": 5, "name": "Seoul"})
    status, body = get(s.port, "/insert?id=5&name=Busan")
    assert status == 409
    assert get(s.port, "/one?min=5") == (200, {"id": 5, "name": "Seoul"})
    assert get(s.port, "/one?min=6")[0] == 410                   # no row
    get(s.port, "/insert?id=6&name=Daegu")
    assert get(s.port, "/one?min=5")[0] == 410                   # two rows
    assert get(s.port, "/bad") == (200, {"status": 3, "code": 500})
    assert wait_for(lambda: "no_such_table_here" in s.log, 5)     # the database's words, logged


def test_transaction_commit_and_rollback(app, pg, table):
    s = app()
    status, body = get(s.port, "/tx?id=10")
    assert status == 200
    assert body["outcome"] == "committed" and body["n"] == 2
    assert body["first"] == {"id": 10, "name": "a"} and body["rest"] == [{"id": 11, "name": "b"}]
    status, body = get(s.port, "/tx?id=20&fail=raise")
    assert body["outcome"] == "raised" and body["first"]["id"] == 20 and body["n"] == 0
    status, body = get(s.port, "/tx?id=30&fail=dup")
    assert body["outcome"] == "UniqueViolation" and body["n"] == 0
    with pg.cursor() as cur:
        cur.execute("SELECT id FROM %s ORDER BY id" % table)
        assert [r[0] for r in cur.fetchall()] == [10, 11]
    # connections went back to the pool clean: nothing is left idle in a transaction
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'skitaid' "
                    "AND state LIKE 'idle in transaction%%'")
        assert cur.fetchone()[0] == 0


def test_transaction_skips_a_member_that_cannot_be_connected_to(app):
    s = app()
    status, dbs = get(s.port, "/tx-half")
    assert status == 200 and dbs == [_params()["dbname"]] * 4


def test_lb_and_map_over_two_databases(app, table):
    s = app()
    status, dbs = get(s.port, "/lb")
    assert status == 200 and set(dbs) == {_params()["dbname"], SECOND_DB}
    status, rows = get(s.port, "/map")
    assert status == 200
    assert rows == sorted([[200, _params()["dbname"], 0], [200, SECOND_DB, 0]])


def test_cache_invalidated_by_rm_cache_in_another_worker(app):
    s = app(PROCESSES=2)
    seen = {}

    def both_cached():
        d = get(s.port, "/cached", close=True)[1]
        assert seen.get(d["pid"], d["n"]) == d["n"]         # served from the cache meanwhile
        seen[d["pid"]] = d["n"]
        return len(seen) == 2
    assert wait_for(both_cached, 10, 0)
    assert set(seen.values()) == {0}
    writer = get(s.port, "/write?id=1", close=True)[1]["pid"]
    other = [pid for pid in seen if pid != writer][0]

    def other_sees_it():
        d = get(s.port, "/cached", close=True)[1]
        return d if d["pid"] == other else None
    d = wait_for(other_sees_it, 10, 0)
    assert d and d["n"] == 1
