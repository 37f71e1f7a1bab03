"""Re-encrypt every pool's storage and staging secrets with the current STORAGE_SECRETS_KEY.

    STORAGE_SECRETS_KEY=<new> STORAGE_SECRETS_OLD_KEYS=<old>[,<older>] \\
        python -m services.auth.rotate_storage_key [--dry-run]
    python -m services.auth.rotate_storage_key --generate-key

The same rotation as file_service_manager's ``rotate_storage_key`` (run both): deploy the new
key first with the old ones in STORAGE_SECRETS_OLD_KEYS, run this, then drop the old keys. It
prints counts and pool ids as JSON, never a secret, and exits 1 when a secret opens with none of
the keys. Each pool is written back only if it did not change meanwhile (compare-and-swap).
"""

from __future__ import annotations

import sys
from typing import Any

from services.common import poolstorage
from services.common.secretbox import SecretBox, SecretError, rotation_command

from .ports import AuthStore

PAGE = 500  # pools read at once


def _secrets(pool: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def collect(value: str) -> str:
        found.append(value)
        return value
    poolstorage.unseal(pool.get("storage"), pool.get("staging") or [], collect)
    return found


def rotate(store: AuthStore, box: SecretBox, *, dry_run: bool = False) -> dict[str, Any]:
    rotated: list[str] = []
    current: list[str] = []
    unreadable: list[str] = []
    after: str | None = None
    while True:
        page = store.pool_secrets_page(after, PAGE)
        for pool in page:
            pool_id = pool["pool_id"]
            if all(box.is_current(v) for v in _secrets(pool)):
                current.append(pool_id)
                continue
            try:
                storage, staging = poolstorage.unseal(pool.get("storage"), pool.get("staging") or [], box.rotate)
            except SecretError:
                unreadable.append(pool_id)
                continue
            if dry_run or store.replace_pool_secrets(pool_id, pool, {"storage": storage, "staging": staging}):
                rotated.append(pool_id)
            else:  # saved again meanwhile (with the current key)
                current.append(pool_id)
        if len(page) < PAGE:
            break
        after = page[-1]["pool_id"]
    return {"rotated": rotated, "already_current": current, "unreadable": unreadable, "dry_run": dry_run}


def _rotate_pools(settings: Any, box: SecretBox, dry_run: bool) -> dict[str, Any]:
    from .store import Store

    store = Store(settings.database_url, pool_size=2)
    try:
        return rotate(store, box, dry_run=dry_run)
    finally:
        store.close()


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    from .config import Settings

    return rotation_command("python -m services.auth.rotate_storage_key", __doc__ or "", Settings.from_env,
                            _rotate_pools, argv, env)


if __name__ == "__main__":
    sys.exit(main())
