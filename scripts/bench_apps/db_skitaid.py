"""scripts/bench db, skitaid side: 3 independent 10 ms queries per request,
issued together as corequests (pool of 16 connections)."""
import json
import os

import skitaid
from skitaid import was

skitaid.alias("@bench", skitaid.DB_PGSQL,
              os.environ.get("BENCH_PG_MEMBER", "postgres@127.0.0.1:5432/test"),
              max_connections=16)
SQL = "SELECT pg_sleep(0.01), %s AS n"


def app(env, start_response):
    with was.db("@bench") as db:
        tasks = [db.execute(SQL, (i,)) for i in range(3)]
    body = json.dumps([t.one(5)["n"] for t in tasks]).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
