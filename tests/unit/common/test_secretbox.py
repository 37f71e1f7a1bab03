"""services.common.secretbox: secrets at rest, opened by any configured key, rotated to the first."""

from __future__ import annotations

import pytest

from services.common import secretbox
from services.common.secretbox import SecretBox, SecretError

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_round_trip_and_no_plaintext() -> None:
    box = SecretBox([SecretBox.generate_key()])
    stored = box.encrypt(SECRET)
    assert stored.startswith(secretbox.PREFIX) and SECRET not in stored
    assert box.decrypt(stored) == SECRET
    assert box.encrypt(SECRET) != stored  # a fresh IV each time: equal secrets do not look equal


def test_a_wrong_key_cannot_open_and_says_nothing_of_the_value() -> None:
    stored = SecretBox([SecretBox.generate_key()]).encrypt(SECRET)
    other = SecretBox([SecretBox.generate_key()])
    with pytest.raises(SecretError) as info:
        other.decrypt(stored)
    assert SECRET not in str(info.value) and stored not in str(info.value)
    with pytest.raises(SecretError):
        other.decrypt(SECRET)  # plaintext is never taken for a secret


def test_rotation_moves_a_secret_to_the_new_key() -> None:
    old_key, new_key = SecretBox.generate_key(), SecretBox.generate_key()
    stored = SecretBox([old_key]).encrypt(SECRET)
    during = SecretBox([new_key, old_key])
    assert during.decrypt(stored) == SECRET and not during.is_current(stored)
    rotated = during.rotate(stored)
    assert during.is_current(rotated)
    assert SecretBox([new_key]).decrypt(rotated) == SECRET
    with pytest.raises(SecretError):
        SecretBox([old_key]).decrypt(rotated)


def test_keys_are_checked() -> None:
    for bad in ([], ["not-a-key"], [SecretBox.generate_key()] * 9):
        with pytest.raises(SecretError) as info:
            SecretBox(bad)
        assert "not-a-key" not in str(info.value)
    assert "key" not in repr(SecretBox([SecretBox.generate_key()])).replace("keys", "")


def test_from_env() -> None:
    key, old = SecretBox.generate_key(), SecretBox.generate_key()
    assert secretbox.from_env({}, "K", "OLD") is None
    box = secretbox.from_env({"K": key, "OLD": f"{old}, "}, "K", "OLD")
    assert box is not None and len(box.fernets) == 2
    with pytest.raises(SecretError, match="OLD is set but K is not"):
        secretbox.from_env({"OLD": old}, "K", "OLD")
    with pytest.raises(SecretError, match="K/OLD"):
        secretbox.from_env({"K": "short"}, "K", "OLD")
