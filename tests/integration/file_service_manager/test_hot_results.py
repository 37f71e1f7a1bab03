"""Pool results are served from memory after one GridFS read (every member downloads them at once)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from .test_http import bearer, stored


def test_a_result_is_read_from_gridfs_once_and_served_whole_ranged_and_to_many(make_pipeline) -> None:
    p = make_pipeline()
    data = os.urandom(1_500_000)
    result = stored(p, data, file_name="mean.f64", pool_id="p1", kind="result", group_id="p1-100")
    hot = p.fsm.application.extensions["deps"].hot

    r = p.fsm.get(f"/file/{result}", headers=bearer("carol"))  # a listener of the pool
    assert r.status_code == 200 and r.data == data
    assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert r.headers["Content-Length"] == str(len(data))
    assert (hot.misses, hot.size) == (1, len(data))

    r = p.fsm.get(f"/file/{result}", headers={**bearer("alice"), "Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.data == data[1000:2000]
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    r = p.fsm.get(f"/file/{result}", headers={**bearer("alice"), "Range": "bytes=-7"})
    assert r.status_code == 206 and r.data == data[-7:]
    assert p.fsm.get(f"/file/{result}", headers=bearer("bob")).status_code == 404  # not a member

    with ThreadPoolExecutor(8) as ex:
        bodies = list(ex.map(lambda _: p.fsm.get(f"/file/{result}", headers=bearer("carol")).data, range(16)))
    assert all(b == data for b in bodies)
    assert hot.misses == 1 and hot.hits >= 18

    # A plain pool file is not cached: it streams from GridFS as before.
    plain = stored(p, b"x" * 1000, file_name="update.bin", pool_id="p1")
    assert p.fsm.get(f"/file/{plain}", headers=bearer("alice")).data == b"x" * 1000  # its owner
    assert hot.misses == 1 and hot.size == len(data)
    assert 'download_hot_reads_total{outcome="memory"} 19.0' in p.fsm.get("/metrics").text
