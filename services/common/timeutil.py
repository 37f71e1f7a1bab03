"""UTC timestamps as ISO 8601 strings, the one format on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


class BadTimestamp(ValueError):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(now())


def parse(value: str) -> datetime:
    """ISO 8601 with or without zone (naive means UTC); refuses anything else."""
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadTimestamp("timestamp must be an ISO 8601 string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # Year 9999 at -01:00 (or 0001 at +01:00) is outside datetime's range in UTC.
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadTimestamp(f"not an ISO 8601 timestamp: {value!r}") from exc
