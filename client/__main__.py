"""``python -m client``: File Dropbox from the command line.

  python -m client signup
  python -m client login
  python -m client upload FILE [--pool P] [--timestamp T] [--no-wait]
  python -m client history
  python -m client download FILE_ID DEST
  python -m client results POOL [--since ISO]
  python -m client listen POOL --out DIR [--count N] [--state FILE]
  python -m client update FILE --pool P [--timestamp T] [--spool DIR]
  python -m client flush [--spool DIR]

`update` sends one pool update now, or keeps it in the spool (default
~/.file-dropbox/spool) when the fleet cannot be reached; `flush` (and every
later `update` that connects) sends what the spool holds as one batch per pool.

`listen` saves every result of POOL in --out, each once, in seq order, and runs
until stopped (for months: tokens renew themselves, the socket reconnects, and
what came while it was away arrives on reconnect). Its state, the last result
saved per pool, is kept in --state (default feed-<user>.json beside the spool);
a result counts as received (and is acknowledged) once its file is saved and
verified, so a restart never skips one.

Common: --gateway URL (default http://127.0.0.1:5000), --user/--password or the
environment's DROPBOX_USER/DROPBOX_PASSWORD. Output is JSON on stdout; errors go to
stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .api import DropboxClient, DropboxError

DEFAULT_SPOOL = os.environ.get("DROPBOX_SPOOL", str(Path.home() / ".file-dropbox" / "spool"))


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str))


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    user = args.user or os.environ.get("DROPBOX_USER")
    password = args.password or os.environ.get("DROPBOX_PASSWORD")
    if not user or not password:
        raise SystemExit("give --user/--password or set DROPBOX_USER/DROPBOX_PASSWORD")
    return user, password


def _safe_name(name: str, fallback: str) -> str:
    # A result's file name comes from the processor: never let it leave the --out directory.
    base = Path(name or "").name
    return base if base not in ("", ".", "..") else fallback


def run(args: argparse.Namespace) -> int:
    user, password = _credentials(args)
    listening = args.command == "listen"
    # The CLI flushes the spool itself (and reports what it sent), not in the background.
    client = DropboxClient(args.gateway, timeout=args.timeout, spool_dir=getattr(args, "spool", None),
                           auto_flush=False, confirm_results=listening, keep_received=not listening,
                           feed_state=_state_file(args, user) if listening else None)
    if args.command == "update":
        return _update(client, user, password, args)
    if args.command == "signup":
        doc = client.signup(user, password)
        _print({k: v for k, v in doc.items() if k != "access_token"})
        return 0
    client.login(user, password)
    try:
        if args.command == "login":
            _print({k: v for k, v in (client.user or {}).items() if k != "access_token"})
        elif args.command == "upload":
            client.connect()
            progress = None
            if args.progress:
                def progress(sent: int, size: int) -> None:
                    print(f"\r{sent}/{size} bytes", end="", file=sys.stderr, flush=True)
            file_id = client.upload(args.file, pool_id=args.pool, timestamp=args.timestamp,
                                    on_progress=progress)
            result: dict[str, Any] = {"file_id": file_id, "status": "cached"}
            if not args.no_wait:
                result["status"] = client.wait_status(file_id, "uploaded_successfully", args.wait)["status"]
            _print(result)
        elif args.command == "flush":
            client.connect()
            _print({"file_ids": client.flush_spool()})
        elif args.command == "history":
            client.connect()
            _print({"files": client.history()})
        elif args.command == "download":
            _print(client.download(args.file_id, args.dest))
        elif args.command == "results":
            client.connect()
            _print({"results": client.results(args.pool, since=args.since)})
        elif args.command == "listen":
            _listen(client, args)
        return 0
    finally:
        client.disconnect()


def _state_file(args: argparse.Namespace, user: str) -> Path:
    if args.state:
        return Path(args.state)
    return Path(DEFAULT_SPOOL).parent / f"feed-{_safe_name(user, 'user')}.json"


# A result whose download fails is tried again this many times (a gateway or store restarting).
DOWNLOAD_ATTEMPTS = 5


def _listen(client: DropboxClient, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    client.connect(results_since=args.since)
    client.watch(args.pool)
    received = 0
    while args.count is None or received < args.count:
        try:
            result = client.wait_result(args.pool, timeout=3600)
        except TimeoutError:
            continue
        name = _safe_name(result.get("file_name", ""), result["result_id"])
        # Named by seq: a result received again after a crash overwrites its own file.
        dest = out / f"{int(result.get('seq') or 0):08d}-{result['result_id']}-{name}"
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                info = client.download(result["download_url"], dest)
                break
            except (DropboxError, OSError) as exc:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                print(f"download of {result['result_id']} failed ({exc}); retrying", file=sys.stderr)
                time.sleep(min(30.0, 2.0 ** attempt))
        verified = info["sha256"] == result.get("sha256")
        _print({**result, "saved_to": str(dest), "verified": verified})
        sys.stdout.flush()
        if verified:
            client.result_done(result)
        received += 1


def _update(client: DropboxClient, user: str, password: str, args: argparse.Namespace) -> int:
    """Send now if the fleet answers; otherwise spool the update for the next batch."""
    try:
        client.login(user, password)
        client.connect()
    except (DropboxError, OSError) as exc:
        client.spool.add(args.pool, args.file, timestamp=args.timestamp)
        _print({"spooled": True, "reason": str(exc), "pending": len(client.spool.pending(args.pool))})
        return 0
    try:
        earlier = client.flush_spool()
        file_id = client.submit_update(args.file, args.pool, timestamp=args.timestamp)
        _print({"file_id": file_id, "spooled": file_id is None, "batches_sent": earlier})
        return 0
    finally:
        client.disconnect()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", default=os.environ.get("DROPBOX_GATEWAY", "http://127.0.0.1:5000"))
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("signup")
    sub.add_parser("login")
    up = sub.add_parser("upload")
    up.add_argument("file")
    up.add_argument("--pool")
    up.add_argument("--timestamp")
    up.add_argument("--no-wait", action="store_true", help="return once cached, not once stored")
    up.add_argument("--wait", type=float, default=120.0, help="seconds to wait for uploaded_successfully")
    up.add_argument("--progress", action="store_true")
    sub.add_parser("history")
    down = sub.add_parser("download")
    down.add_argument("file_id")
    down.add_argument("dest")
    res = sub.add_parser("results")
    res.add_argument("pool")
    res.add_argument("--since")
    listen = sub.add_parser("listen")
    listen.add_argument("pool")
    listen.add_argument("--out", required=True)
    listen.add_argument("--count", type=int, help="stop after this many results")
    listen.add_argument("--since", help="(older gateways) results since this ISO time on connect")
    listen.add_argument("--state", help="the feed's state file (default: feed-<user>.json beside the spool)")
    default_spool = DEFAULT_SPOOL
    update = sub.add_parser("update", help="send a pool update, or spool it while offline")
    update.add_argument("file")
    update.add_argument("--pool", required=True)
    update.add_argument("--timestamp", help="when the update was produced (ISO 8601; default now)")
    update.add_argument("--spool", default=default_spool)
    flush = sub.add_parser("flush", help="send the spooled updates, one batch per pool")
    flush.add_argument("--spool", default=default_spool)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except DropboxError as err:
        print(json.dumps({"error": {"code": err.code, "message": err.message, **err.extra}}), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
