"""Re-encrypt every stored storage credential with the current STORAGE_SECRETS_KEY.

    STORAGE_SECRETS_KEY=<new> STORAGE_SECRETS_OLD_KEYS=<old>[,<older>] \\
        python -m services.file_service_manager.rotate_storage_key [--dry-run]
    python -m services.file_service_manager.rotate_storage_key --generate-key

Rotation: generate a key; deploy ``STORAGE_SECRETS_KEY=<new>`` with
``STORAGE_SECRETS_OLD_KEYS=<old>`` (the services read both); run this command;
then remove ``STORAGE_SECRETS_OLD_KEYS``. It prints counts and storage ids as
JSON, never a secret, and exits 1 when an entry opens with none of the keys.
"""

from __future__ import annotations

import sys
from typing import Any

from services.common.secretbox import SecretBox, SecretError, rotation_command

from .ports import Catalog


def rotate(catalog: Catalog, box: SecretBox, *, dry_run: bool = False) -> dict[str, Any]:
    rotated: list[str] = []
    current: list[str] = []
    unreadable: list[str] = []
    for doc in catalog.all():
        old: dict[str, str] = doc.get("secrets") or {}
        if all(box.is_current(v) for v in old.values()):
            current.append(doc["_id"])
            continue
        try:
            new = {k: box.rotate(v) for k, v in old.items()}
        except SecretError:
            unreadable.append(doc["_id"])
            continue
        # Compare-and-swap: an entry saved again meanwhile (with the current key) is left alone.
        if dry_run or catalog.replace_secrets(doc["_id"], old, new):
            rotated.append(doc["_id"])
        else:
            current.append(doc["_id"])
    return {"rotated": rotated, "already_current": current, "unreadable": unreadable, "dry_run": dry_run}


def _rotate_catalog(settings: Any, box: SecretBox, dry_run: bool) -> dict[str, Any]:
    from services.common import mongo

    from .store import StorageCatalog

    catalog = StorageCatalog(mongo.connect(settings.common.mongodb_uri, settings.common.mongodb_db))
    return rotate(catalog, box, dry_run=dry_run)


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    from .config import Settings

    return rotation_command("python -m services.file_service_manager.rotate_storage_key", __doc__ or "",
                            Settings.from_env, _rotate_catalog, argv, env)


if __name__ == "__main__":
    sys.exit(main())
