"""was.cursor(): a pooled, blocking DB-API cursor in the app thread, for the real
PostgreSQL of this machine (as tests/test_db.py) and for SQLite."""
import os

import pytest

from helpers.clients import get_json as get

psycopg2 = pytest.importorskip("psycopg2")
from psycopg2 import extensions as pgext  # noqa: E402

DSN = os.environ.get("SKITAID_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")

APP = r'''
import json, os
import skitaid
from skitaid import was

skitaid.alias("@lite", skitaid.DB_SQLITE3, os.environ["LITE"], max_connections=1, pool_timeout=1)
if os.environ.get("PGMEMBER"):
    skitaid.alias("@pg", skitaid.DB_PGSQL, os.environ["PGMEMBER"], max_connections=1,
                  pool_timeout=1)

def answer(start, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path = env["PATH_INFO"]
    if path == "/lite":
        with was.cursor("@lite") as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS t (id integer primary key, name text)")
            cur.execute("DELETE FROM t")
            cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
            cur.execute("SELECT id, name FROM t ORDER BY id")
            first = cur.fetchmany(2)
            rest = cur.fetchall()
            names = [d[0] for d in cur.description]
        return answer(start, {"first": first, "rest": rest, "names": names,
                              "closed": cur.closed})
    if path == "/pg":
        cur = was.cursor("@pg")
        cur.execute("SELECT pg_backend_pid(), %s::int + 1", (41,))
        pid, n = cur.fetchall()[0]
        cur.execute("SELECT generate_series(1, 5)")
        some = cur.fetchmany(3)
        cur.close()
        return answer(start, {"pid": pid, "n": n, "some": some})
    if path == "/pg-left-open":
        # never closed: the end of the request gives the only connection back
        cur = was.cursor("@pg")
        cur.execute("SELECT pg_backend_pid()")
        return answer(start, {"pid": cur.fetchone()[0]})
    if path == "/lite-left-open":
        cur = was.cursor("@lite")
        cur.execute("SELECT 1")
        return answer(start, {"one": cur.fetchone()[0]})
    if path == "/wrong":
        try:
            cur = was.cursor("@lite")
            cur.execute("SELECT * FROM no_such_table")
        except Exception as e:
            return answer(start, {"error": type(e).__name__ + ": " + str(e)})
    return answer(start, {"path": path}, "404 Not Found")

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=2)
'''


def _pg_member():
    try:
        p = pgext.parse_dsn(DSN)
        psycopg2.connect(DSN).close()
    except psycopg2.Error:
        return None
    return "%s@%s:%s/%s" % (p.get("user", "postgres"), p.get("host", "127.0.0.1"),
                            p.get("port", "5432"), p.get("dbname", "test"))


@pytest.fixture
def server(serve, tmp_path):
    env = {"LITE": str(tmp_path / "c.db")}
    member = _pg_member()
    if member:
        env["PGMEMBER"] = member
    s = serve(APP, env=env)
    s.has_pg = bool(member)
    return s


def test_sqlite_cursor(server):
    status, body = get(server.port, "/lite")
    assert status == 200
    assert body == {"first": [[1, "a"], [2, "b"]], "rest": [[3, "c"]], "names": ["id", "name"],
                    "closed": True}
    # max_connections=1: a cursor left open is returned at the end of its request
    for _ in range(3):
        assert get(server.port, "/lite-left-open") == (200, {"one": 1})
    status, body = get(server.port, "/wrong")
    assert "no such table" in body["error"]
    assert get(server.port, "/lite")[0] == 200          # the connection survived the error


def test_postgresql_cursor_is_pooled(server):
    if not server.has_pg:
        pytest.skip("PostgreSQL not reachable (%s)" % DSN)
    status, body = get(server.port, "/pg")
    assert status == 200 and body["n"] == 42 and body["some"] == [[1], [2], [3]]
    pids = {get(server.port, "/pg-left-open")[1]["pid"] for _ in range(3)}
    pids.add(get(server.port, "/pg")[1]["pid"])
    assert pids == {body["pid"]}        # one pooled connection, given back each time
