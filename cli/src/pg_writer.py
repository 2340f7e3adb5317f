"""A libpq writer for PostgreSQL failover tests and benchmarks.

Usage: pg_writer.py CONNINFO TABLE FIRST_ID

Inserts ids FIRST_ID, FIRST_ID+1, ... one autocommitted INSERT each through
libpq (psycopg2), with a multi-host connection string that names every
member and target_session_attrs=read-write, as an application would.
Prints one line per acknowledged commit, "ack ID UNIX_MS", and one per
failed attempt, "err UNIX_MS MESSAGE"; after a failure it reconnects at
once (libpq tries every host). Stops when its stdin closes.

Run it with Debian's /usr/bin/python3 (python3-psycopg2).
"""
import sys
import threading
import time

import psycopg2


def now_ms():
    return int(time.time() * 1000)


def main():
    conninfo, table, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    conn = None
    next_id = first
    while not stop.is_set():
        try:
            if conn is None:
                conn = psycopg2.connect(conninfo)
                conn.autocommit = True
                cur = conn.cursor()
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS %s (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
                    % table
                )
            # A retry after an unknown outcome inserts the same id again.
            cur.execute(
                "INSERT INTO %s (id) VALUES (%%s) ON CONFLICT DO NOTHING" % table,
                (next_id,),
            )
            print("ack %d %d" % (next_id, now_ms()), flush=True)
            next_id += 1
        except Exception as e:  # every libpq failure: reconnect
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print("err %d %s" % (now_ms(), msg), flush=True)
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            stop.wait(0.02)


if __name__ == "__main__":
    main()
