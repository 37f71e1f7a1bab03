"""One page of a never-acknowledged member's catch-up (``since``) on secantusdb.

    python -m bench.since_bench [--results 10000] [--page 1000] [--repeat 3] [--legacy] [--mongodb-uri URI]

Seeds ``--results`` stored, numbered results of one pool straight into pool_aggregator's
``results`` collection (shaped as ``MongoGroupStore`` numbers them, as bench/pool_bench.py
``--seed-results`` does; ``--legacy``: without ``created_max``, as results numbered before it
existed), then times ``MongoGroupStore.list_results(pool, since=..., limit=page + 1)`` -- what the
results route asks for one catch-up page (``limit + 1`` to tell ``more``) -- for a member who
joined before the first result, in the middle, and just before the last page, each checked
against the open query the since path used before (same documents, same order).

It starts a secantusdb of its own on a free port (or uses ``--mongodb-uri``) and a fresh database.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pymongo

from devtools import infra
from services.common import mongo
from services.pool_aggregator.core import epoch_iso
from services.pool_aggregator.store import MongoGroupStore

POOL = "since-bench"
SEED_BATCH = 1000  # documents held per insert_many while seeding


def seed(store: MongoGroupStore, count: int, legacy: bool) -> float:
    """``count`` numbered results 1..count, created 1 ms apart; answers the first's created_ts."""
    start = round(time.time() - 3600, 3)
    high = 0.0
    for first in range(0, count, SEED_BATCH):
        docs = []
        for n in range(first, min(count, first + SEED_BATCH)):
            rid = uuid.uuid4().hex
            created_ts = round(start + n / 1000, 3)
            high = max(high, created_ts)
            doc = {"_id": rid, "result_id": rid, "pool_id": POOL, "group_id": f"{POOL}-{n}",
                   "window_start": epoch_iso(start - 120), "window_end": epoch_iso(start - 119),
                   "file_name": "seed.bin", "size": 1, "sha256": "0" * 64, "created": epoch_iso(created_ts),
                   "created_ts": created_ts, "stored": True, "published": True, "seq": n + 1,
                   "download_url": f"http://files.example/file/{rid}"}
            if not legacy:
                doc["created_max"] = high
            docs.append(doc)
        store.results.insert_many(docs)
    store.counters.insert_one({"_id": POOL, "seq": count, "pending": None})
    return start


def old_query(store: MongoGroupStore, since: float, limit: int) -> list[dict]:
    """The since path before: one open query, a collection scan on secantusdb."""
    return list(store.results.find({"pool_id": POOL, "stored": True, "seq": {"$gt": 0},
                                    "created_ts": {"$gt": since}}).sort("seq", pymongo.ASCENDING).limit(limit))


def timed(fn, repeat: int) -> tuple[list[float], list[dict]]:  # type: ignore[no-untyped-def]
    times, found = [], []
    for _ in range(repeat):
        began = time.perf_counter()
        found = fn()
        times.append(time.perf_counter() - began)
    return times, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=10000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--legacy", action="store_true", help="results without created_max")
    parser.add_argument("--mongodb-uri", default=None)
    args = parser.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.mongodb_uri
        if uri is None:
            port = infra.free_port()
            proc = infra.start_secantus(port, Path(tmp) / "data", Path(tmp) / "secantus.log")
            uri = f"mongodb://127.0.0.1:{port}"
        try:
            db = mongo.connect(uri, f"since_bench_{uuid.uuid4().hex[:8]}")
            store = MongoGroupStore(db)
            store.ensure_indexes()
            began = time.perf_counter()
            start = seed(store, args.results, args.legacy)
            print(f"seeded {args.results} results in {time.perf_counter() - began:.1f} s"
                  f"{' (legacy: no created_max)' if args.legacy else ''}")
            limit = args.page + 1
            for label, joined_at in (("joined before the first", 0),
                                     ("joined in the middle", args.results // 2),
                                     ("joined before the last page", args.results - args.page // 2)):
                since = round(start + joined_at / 1000 - 0.0005, 4)
                new_times, new = timed(lambda s=since: store.list_results(POOL, since=s, limit=limit), args.repeat)
                old_times, old = timed(lambda s=since: old_query(store, s, limit), args.repeat)
                same = [d["_id"] for d in new] == [d["_id"] for d in old]
                print(f"{label:28s} page of {len(new):5d}: since path {statistics.median(new_times):.3f} s "
                      f"(runs {', '.join(f'{t:.3f}' for t in new_times)}); open query "
                      f"{statistics.median(old_times):.3f} s (runs {', '.join(f'{t:.3f}' for t in old_times)});"
                      f" same answer: {same}")
                if not same:
                    return 1
            db.client.drop_database(db.name)
        finally:
            if proc is not None:
                infra.stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
