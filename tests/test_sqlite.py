"""SQLite corequests: the same was.db / was.transaction API on database files,
served by a real skitaid server (statements run on a thread per file)."""
import concurrent.futures
import sqlite3
import time

import pytest

from conftest import wait_for
from helpers.clients import get_json as get

APP = r'''
import json, os, time
import skitaid
from skitaid import was

skitaid.alias("@lite", skitaid.DB_SQLITE3, "one.db")          # relative to the script
skitaid.alias("@both", skitaid.DB_SQLITE3, ["one.db", "two.db"])
skitaid.register_cache_keys("rows")

def answer(start, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path = env["PATH_INFO"]
    q = dict(p.split("=", 1) for p in env["QUERY_STRING"].split("&") if "=" in p)
    if path == "/ping":
        return answer(start, "pong")
    if path == "/slow":
        # about a second of CPU in SQLite's thread
        r = was.db("@lite").execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                    "FROM c WHERE x < 3000000) SELECT count(*) AS n FROM c")
        return answer(start, r.one(20).n)
    if path == "/insert":
        try:
            with was.db("@lite") as db:
                row = db.execute("INSERT INTO city (id, name) VALUES (?, ?) RETURNING id, name",
                                 (int(q["id"]), q["name"])).one(5)
            return answer(start, {"id": row.id, "name": row["name"]})
        except skitaid.CorequestError as e:
            return answer(start, {"error": str(e)}, "%d Error" % e.status_code)
    if path == "/one":
        try:
            return answer(start, was.db("@lite").execute(
                "SELECT * FROM city WHERE id >= :min", {"min": int(q["min"])}).one(5))
        except skitaid.CorequestError as e:
            return answer(start, {"error": str(e)}, "%d Error" % e.status_code)
    if path == "/many":
        with was.db("@lite") as db:
            tasks = [db.execute("SELECT ? + 1 AS v", (i,)) for i in range(10)]
        return answer(start, [r.v for r in was.Tasks(tasks).one(5)])
    if path == "/bad":
        r = was.db("@lite").execute("SELECT * FROM no_such_table_here").dispatch(5)
        return answer(start, [r.status, r.status_code])
    if path == "/adhoc":
        p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "one.db")
        return answer(start, was.db(p, skitaid.DB_SQLITE3).execute(
            "SELECT count(*) AS n FROM city").one(5).n)
    if path == "/tx":
        first = None
        try:
            with was.transaction("@lite") as tx:
                tx.execute("INSERT INTO city (id, name) VALUES (?, 'a'), (?, 'b')",
                           (int(q["id"]), int(q["id"]) + 1))
                tx.execute("SELECT id, name FROM city WHERE id >= ? ORDER BY id", (int(q["id"]),))
                first = tx.fetchone()
                rest = tx.fetchall()
                if q.get("fail"):
                    raise ValueError("no")
                tx.commit()
            outcome = "committed"
        except ValueError:
            outcome = "raised"
        n = was.db("@lite").execute("SELECT count(*) AS n FROM city WHERE id >= ?",
                                    (int(q["id"]),)).one(5).n
        return answer(start, {"outcome": outcome, "first": first, "n": n})
    if path == "/lb":
        return answer(start, [was.db.lb("@both").execute("SELECT name FROM which").one(5).name
                              for _ in range(4)])
    if path == "/map":
        rs = was.db.map("@both").execute("SELECT name FROM which").dispatch(5)
        return answer(start, sorted(r.data[0].name for r in rs))
    if path == "/cached":
        r = was.db("@lite", use_cache=was.getlu("rows")).execute(
            "SELECT count(*) AS n FROM city").dispatch(5, cache=60)
        return answer(start, {"n": r.data[0].n, "pid": os.getpid()})
    if path == "/write":
        was.db("@lite", rm_cache="rows").execute("INSERT INTO city (id, name) VALUES (?, 'w')",
                                               (int(q["id"]),)).commit(5)
        return answer(start, {"pid": os.getpid()})
    return answer(start, {"path": path}, "404 Not Found")

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=4,
            processes=int(os.environ.get("PROCESSES", "1")))
'''


@pytest.fixture
def app(serve, tmp_path):
    for name in ("one", "two"):
        with sqlite3.connect(str(tmp_path / (name + ".db"))) as conn:
            conn.execute("CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("CREATE TABLE which (name TEXT)")
            conn.execute("INSERT INTO which VALUES (?)", (name,))

    def start(**env):
        return serve(APP, env={k: str(v) for k, v in env.items()})
    return start


def test_statements_rows_and_errors(app, tmp_path):
    s = app()
    assert get(s.port, "/insert?id=1&name=Seoul") == (200, {"id": 1, "name": "Seoul"})
    assert get(s.port, "/insert?id=1&name=Busan")[0] == 409           # primary key taken
    assert get(s.port, "/one?min=1") == (200, {"id": 1, "name": "Seoul"})
    assert get(s.port, "/one?min=2")[0] == 410
    assert get(s.port, "/many") == (200, list(range(1, 11)))
    assert get(s.port, "/bad") == (200, [3, 500])
    assert wait_for(lambda: "no_such_table_here" in s.log, 5)
    assert get(s.port, "/adhoc") == (200, 1)
    with sqlite3.connect(str(tmp_path / "one.db")) as conn:          # really written to the file
        assert conn.execute("SELECT name FROM city").fetchall() == [("Seoul",)]


def test_slow_statement_does_not_block_the_loop(app):
    s = app()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        slow = ex.submit(get, s.port, "/slow")
        time.sleep(0.1)
        pings = []
        while not slow.done():
            t = time.monotonic()
            assert get(s.port, "/ping") == (200, "pong")
            pings.append(time.monotonic() - t)
            time.sleep(0.05)
        assert slow.result() == (200, 3000000)
    assert time.monotonic() - t0 > 0.3 and pings          # it was slow, and we were served meanwhile
    assert max(pings) < 0.25, pings


def test_transaction_commit_and_rollback(app):
    s = app()
    assert get(s.port, "/tx?id=10") == (200, {"outcome": "committed",
                                              "first": {"id": 10, "name": "a"}, "n": 2})
    assert get(s.port, "/tx?id=20&fail=1") == (200, {"outcome": "raised",
                                                     "first": {"id": 20, "name": "a"}, "n": 0})


def test_lb_and_map_over_two_files(app):
    s = app()
    status, names = get(s.port, "/lb")
    assert status == 200 and set(names) == {"one", "two"}
    assert get(s.port, "/map") == (200, ["one", "two"])


def test_cache_invalidated_by_rm_cache_in_another_worker(app):
    s = app(PROCESSES=2)
    seen = {}

    def both_cached():
        d = get(s.port, "/cached", close=True)[1]
        assert seen.get(d["pid"], d["n"]) == d["n"]
        seen[d["pid"]] = d["n"]
        return len(seen) == 2
    assert wait_for(both_cached, 10, 0)
    writer = get(s.port, "/write?id=1", close=True)[1]["pid"]
    other = [pid for pid in seen if pid != writer][0]

    def other_sees_it():
        d = get(s.port, "/cached", close=True)[1]
        return d if d["pid"] == other else None
    d = wait_for(other_sees_it, 10, 0)
    assert d and d["n"] == 1
