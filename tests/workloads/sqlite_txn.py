# A sqlite database in WAL mode with a write transaction open (sqlite's own
# POSIX locks on the database and its mapped -shm file): the row it inserted is
# committed on SIGUSR1, then it logs "committed" and idles.
# usage: sqlite_txn.py DIR
import os, signal, sqlite3, sys, time

d = sys.argv[1]
db = sqlite3.connect(f"{d}/db", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("create table if not exists t(x)")
db.execute("BEGIN IMMEDIATE")
db.execute("insert into t values (42)")
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
with open(f"{d}/log", "a") as f:
    f.write(f"ready {os.getpid()}\n")
while not go:
    time.sleep(0.02)
db.execute("COMMIT")
with open(f"{d}/log", "a") as f:
    f.write("committed\n")
while True:
    time.sleep(1)
