"""Secrets encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

``SecretBox(keys)`` encrypts with the first key and decrypts with any of them,
so a key can be rotated without downtime: deploy ``new,old`` (the new key
first), re-encrypt what is stored (file_service_manager's
``rotate_storage_key``, and auth's for pools' storage/staging secrets), then
drop the old key. A value that no key opens is a ``SecretError``; its message never quotes the value or a key.

Keys are Fernet keys (32 random bytes, URL-safe base64: ``SecretBox.generate_key()``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .settings import ConfigError

__all__ = ["PREFIX", "SecretBox", "SecretError", "from_env", "rotation_command"]

PREFIX = "fernet:"  # marks a stored value as ciphertext (a plaintext never starts with it by accident)
MAX_KEYS = 8  # current + old keys accepted at once (each decrypt may try them all)


class SecretError(ValueError):
    """A key is malformed, or a stored secret cannot be opened with the keys given."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        keys = [k.strip() for k in keys if k.strip()]
        if not keys:
            raise SecretError("no encryption key given")
        if len(keys) > MAX_KEYS:
            raise SecretError(f"at most {MAX_KEYS} keys (the current one first, then old ones)")
        try:
            self.fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError):
            raise SecretError("an encryption key is not a Fernet key (32 url-safe base64-encoded bytes)") from None
        self.multi = MultiFernet(self.fernets)

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, value: str) -> str:
        return PREFIX + self.multi.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise SecretError("the stored secret is not encrypted")
        try:
            return self.multi.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretError("the stored secret cannot be opened with the keys given") from None

    def rotate(self, stored: str) -> str:
        """The same secret, encrypted with the current key (what rotation writes back)."""
        if not stored.startswith(PREFIX):
            raise SecretError("the stored secret is not encrypted")
        try:
            return PREFIX + self.multi.rotate(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretError("the stored secret cannot be opened with the keys given") from None

    def is_current(self, stored: str) -> bool:
        """Already encrypted with the current key (rotation may skip it)."""
        try:
            self.fernets[0].decrypt(stored[len(PREFIX):].encode())
            return stored.startswith(PREFIX)
        except InvalidToken:
            return False

    def __repr__(self) -> str:  # never the keys
        return f"SecretBox({len(self.fernets)} keys)"


def from_env(env: Mapping[str, str], name: str, old_name: str | None = None) -> SecretBox | None:
    """The box for ``name`` (the current key) and ``old_name`` (comma-separated old keys); None when unset."""
    current = (env.get(name) or "").strip()
    old = [k for k in (env.get(old_name) or "").split(",") if k.strip()] if old_name else []
    if not current:
        if old:
            raise SecretError(f"{old_name} is set but {name} is not")
        return None
    try:
        return SecretBox([current, *old])
    except SecretError as exc:
        raise SecretError(f"{name}/{old_name}: {exc}") from None


def rotation_command(prog: str, description: str, settings_from_env: Callable[[Mapping[str, str]], Any],
                     rotate: Callable[[Any, SecretBox, bool], dict[str, Any]],
                     argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The command line of a service's ``rotate_storage_key`` (auth's pools, file_service_manager's
    catalog): ``--dry-run``, ``--generate-key``; prints the outcome as JSON (counts and ids, never a
    secret); exit 0, 1 when a secret opens with none of the keys, 2 on a configuration error.

    ``rotate(settings, box, dry_run)`` opens the service's own store and re-encrypts.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="report what would be re-encrypted; write nothing")
    parser.add_argument("--generate-key", action="store_true", help="print a new key and exit")
    args = parser.parse_args(argv)
    if args.generate_key:
        print(SecretBox.generate_key())
        return 0
    try:
        settings = settings_from_env(os.environ if env is None else env)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.secrets is None:
        print("configuration error: STORAGE_SECRETS_KEY is not set", file=sys.stderr)
        return 2
    outcome = rotate(settings, settings.secrets, args.dry_run)
    print(json.dumps(outcome))
    return 1 if outcome["unreadable"] else 0
