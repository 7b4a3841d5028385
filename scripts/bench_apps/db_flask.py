"""scripts/bench db, peer side: the same 3 queries, one after another with
plain psycopg2 (one connection per gunicorn thread)."""
import json
import os
import threading

import psycopg2
from flask import Flask, Response

app = Flask(__name__)
DSN = os.environ.get("BENCH_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
SQL = "SELECT pg_sleep(0.01), %s AS n"
_local = threading.local()


def _conn():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg2.connect(DSN)
        conn.autocommit = True
    return conn


@app.route("/")
def index():
    out = []
    with _conn().cursor() as cur:
        for i in range(3):
            cur.execute(SQL, (i,))
            out.append(cur.fetchone()[1])
    return Response(json.dumps(out), mimetype="application/json")
