"""Secrets encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

``SecretBox(keys)`` encrypts with the first key and decrypts with any of them,
so a key can be rotated without downtime: deploy ``new,old`` (the new key
first), re-encrypt what is stored (file_service_manager's
``rotate_storage_key``, and auth's for pools' storage/staging secrets), then
drop the old key. A value that no key opens is a ``SecretError``; its message never quotes the value or a key.

Keys are Fernet keys (32 random bytes, URL-safe base64: ``SecretBox.generate_key()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["PREFIX", "SecretBox", "SecretError", "from_env"]

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
