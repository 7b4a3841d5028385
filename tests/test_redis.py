"""Redis corequests against real Redis servers: the machine's own at
127.0.0.1:6379 (database 9, keys under a fresh prefix) and a private
redis-server this module starts on a free port, kills and restarts.

The app is a real skitaid server whose app code calls was.db("@r")…; the test
checks what reached Redis with redis-cli.
"""
import concurrent.futures
import uuid

import pytest

from conftest import wait_for
from helpers.clients import get_json as get
from redis_helpers import MAIN, RedisServer, command, need_main

DB = 9

APP = r'''
import asyncio, json, os
import skitaid
from skitaid import was

P = os.environ["PREFIX"]
SECOND = int(os.environ["SECOND"])
skitaid.alias("@r", skitaid.DB_REDIS, "127.0.0.1:6379/9", max_connections=4)
skitaid.alias("@second", skitaid.DB_REDIS, "127.0.0.1:%d" % SECOND, max_connections=4,
              pool_timeout=10)
skitaid.alias("@two", skitaid.DB_REDIS, ["127.0.0.1:6379/9", "127.0.0.1:%d/0" % SECOND])
skitaid.register_cache_keys("k")


class Ping(skitaid.DatabaseInterface):
    """A user's own backend: inline commands over a plain asyncio stream."""
    async def connect(self):
        return await asyncio.open_connection(self.member.host, self.member.port)

    async def execute(self, conn, command, args, kwargs):
        reader, writer = conn
        writer.write((" ".join([command.upper()] + [str(a) for a in args]) + "\r\n").encode())
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(b"$"):
            line = await reader.readline()
        return line.decode().strip().lstrip("+")

    async def close(self, conn):
        conn[1].close()


skitaid.add_database_interface("ping", Ping)
skitaid.alias("@mine", "ping", "127.0.0.1:6379")


def answer(start, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def res(r):
    return {"status": r.status, "code": r.status_code, "data": r.data,
            "error": str(r.error) if r.error else None}


def app(env, start):
    path = env["PATH_INFO"]
    q = dict(p.split("=", 1) for p in env["QUERY_STRING"].split("&") if "=" in p)
    r = was.db("@r")
    if path == "/commands":
        # one after another: Tasks run at once, on up to 4 connections, so two
        # dispatched together may reach Redis in either order
        calls = [lambda: r.set(P + "s", "bar"), lambda: r.get(P + "s"),
                 lambda: r.incr(P + "n"), lambda: r.incr(P + "n"),
                 lambda: r.hset(P + "h", mapping={"a": 1, "b": "x"}), lambda: r.hgetall(P + "h"),
                 lambda: r.lpush(P + "l", "a", "b"), lambda: r.lrange(P + "l", 0, -1),
                 lambda: r.expire(P + "s", 100), lambda: r.ttl(P + "s"),
                 lambda: r.execute_command("STRLEN", P + "s"), lambda: r.execute("EXISTS", P + "s")]
        out = [call().fetch(5) for call in calls]
        wrong = r.incr(P + "h").dispatch(5)
        return answer(start, {"out": out, "wrong": res(wrong)})
    if path == "/pipeline":
        with was.db("@r").pipeline() as p:
            p.set(P + "p", "1")
            p.incr(P + "p")
            p.get(P + "p")
        return answer(start, p.task.fetch(5))
    if path == "/map":
        return answer(start, sorted(was.db.map("@two").get(P + "m").fetch(5)))
    if path == "/lb":
        return answer(start, [was.db.lb("@two").get(P + "m").fetch(5) for _ in range(8)])
    if path == "/three":
        s = was.db("@second")
        tasks = [s.incr(P + "c"), s.get(P + "c"), s.client_list()]
        out = [t.dispatch(15) for t in tasks]
        return answer(start, {"ok": all(t.status == 3 and t.status_code == 200 for t in out),
                              "clients": len([c for c in out[2].data
                                              if c.get("name") == "skitaid"])})
    if path == "/second":
        return answer(start, res(was.db("@second").get(P + "x").dispatch(5)))
    if path == "/cached":
        t = was.db("@r", use_cache=was.getlu("k")).get(P + "c").dispatch(5, cache=60)
        return answer(start, {"v": t.data, "pid": os.getpid()})
    if path == "/write":
        was.db("@r", rm_cache="k").set(P + "c", q["v"]).commit(5)
        return answer(start, {"pid": os.getpid()})
    if path == "/mine":
        m = was.db("@mine")
        return answer(start, [m.ping().fetch(5), m.echo("hello").fetch(5)])
    if path == "/bad":
        try:
            r.flushall_nonsense
        except AttributeError as e:
            msg = str(e)
        try:
            was.transaction("@r")
        except TypeError as e:
            msg2 = str(e)
        return answer(start, [msg, msg2])
    return answer(start, {"path": path}, "404 Not Found")


skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "4")),
            processes=int(os.environ.get("PROCESSES", "1")))
'''


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    need_main()
    server = RedisServer(workdir=str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def prefix():
    p = "skitaid-test:%s:" % uuid.uuid4().hex[:10]
    yield p
    keys = command(MAIN[1], "--scan", "--pattern", p + "*", db=DB).split()
    if keys:
        command(MAIN[1], "DEL", *keys, db=DB)


@pytest.fixture
def server(serve, second, prefix):
    def start(**env):
        env = {k: str(v) for k, v in env.items()}
        env.update(PREFIX=prefix, SECOND=str(second.port))
        return serve(APP, env=env)
    return start


def test_commands_by_name_return_tasks(server, prefix):
    s = server()
    status, body = get(s.port, "/commands")
    assert status == 200, body
    assert body["out"] == [True, "bar", 1, 2, 2, {"a": "1", "b": "x"}, 2, ["b", "a"],
                           True, 100, 3, 1]
    wrong = body["wrong"]
    assert wrong["status"] == 3 and wrong["code"] == 500
    assert "WRONGTYPE" in wrong["error"]            # Redis's own message
    assert command(MAIN[1], "GET", prefix + "s", db=DB) == "bar"
    assert "WRONGTYPE" in s.log                      # and in the error log


def test_pipeline_is_one_transaction(server, prefix):
    s = server()
    assert get(s.port, "/pipeline") == (200, [True, 2, "2"])
    assert command(MAIN[1], "GET", prefix + "p", db=DB) == "2"


def test_lb_and_map_over_two_databases(server, second, prefix):
    command(MAIN[1], "SET", prefix + "m", "main", db=DB)
    second.cmd("SET", prefix + "m", "second")
    s = server()
    assert get(s.port, "/map") == (200, ["main", "second"])
    status, seen = get(s.port, "/lb")
    assert status == 200 and set(seen) == {"main", "second"}, seen


def test_fifty_requests_share_a_pool_of_four(server, second, prefix):
    s = server(THREADS=16)
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda _: get(s.port, "/three"), range(50)))
    assert all(st == 200 and b["ok"] for st, b in replies), replies[:3]
    assert max(b["clients"] for _, b in replies) <= 4
    assert second.cmd("GET", prefix + "c") == "50"
    listed = [line for line in second.cmd("CLIENT", "LIST").splitlines()
              if " name=skitaid " in line]
    assert 1 <= len(listed) <= 4, listed


def test_killed_server_gives_neterr_then_recovers(server, second, prefix):
    s = server()
    second.cmd("SET", prefix + "x", "before")
    assert get(s.port, "/second")[1]["data"] == "before"
    second.stop()
    try:
        status, body = get(s.port, "/second")
        assert status == 200 and body["status"] == 2 and body["code"] == 502, body
        status, body = get(s.port, "/second")                      # no connection at all
        assert body["status"] == 2 and "cannot connect" in body["error"], body
    finally:
        second.start()
    second.cmd("SET", prefix + "x", "after")
    assert wait_for(lambda: get(s.port, "/second")[1]["data"] == "after", 10)


def test_result_cache_and_rm_cache(server, prefix):
    s = server()
    command(MAIN[1], "SET", prefix + "c", "one", db=DB)
    assert get(s.port, "/cached")[1]["v"] == "one"
    command(MAIN[1], "SET", prefix + "c", "two", db=DB)     # behind skitaid's back
    assert get(s.port, "/cached")[1]["v"] == "one"          # still the cached reply
    get(s.port, "/write?v=three")                           # rm_cache="k": setlu("k")
    assert get(s.port, "/cached")[1]["v"] == "three"


def test_an_added_database_interface(server):
    s = server()
    assert get(s.port, "/mine") == (200, ["PONG", "hello"])


def test_clear_refusals(server):
    s = server()
    status, (unknown, tx) = get(s.port, "/bad")
    assert "no command 'flushall_nonsense'" in unknown
    assert "transactions are for PostgreSQL" in tx
