"""Parse user-facing quantities with units once, at the edge: rates, times, percentages, sizes."""

from __future__ import annotations

import math
import re

_NUM = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RATE_UNITS = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _plain(value: int | float, what: str, example: str) -> float:
    """A plain number as given, refused when NaN, infinite or negative."""
    v = float(value) if abs(value) < 1e300 else math.inf
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{value!r} is not a {what}; write {example}")
    return v


def _split(value: str) -> tuple[float, str] | None:
    m = re.fullmatch(_NUM + r"([a-zA-Z%]*)", value.strip())
    return (float(m.group(1)), m.group(2).lower()) if m else None


def parse_rate_mbit(value: object) -> float:
    """A rate in Mbit/s from a plain number (Mbit/s) or "500kbit", "5Mbit", "1Gbit"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a rate; write 5 or \"5Mbit\"")
    if isinstance(value, int | float):
        return _plain(value, "rate", '5 or "5Mbit"')
    parts = _split(str(value))
    if parts is None or parts[1] not in _RATE_UNITS:
        raise ValueError(f"{value!r} is not a rate; write 5 or \"5Mbit\" "
                         "(units: bit, kbit, Mbit, Gbit)")
    return parts[0] * _RATE_UNITS[parts[1]]


def parse_time_ms(value: object) -> float:
    """A duration in ms from a plain number (ms) or "10ms", "1s", "500us"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write 10 or \"10ms\"")
    if isinstance(value, int | float):
        return _plain(value, "duration", '10 or "10ms"')
    parts = _split(str(value))
    if parts is None or parts[1] not in _TIME_UNITS:
        raise ValueError(f"{value!r} is not a duration; write 10 or \"10ms\" (units: us, ms, s)")
    return parts[0] * _TIME_UNITS[parts[1]]


def parse_percent(value: object) -> float:
    """A percentage from a plain number or "0.5%"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a percentage; write 0.5 or \"0.5%\"")
    if isinstance(value, int | float):
        return _plain(value, "percentage", '0.5 or "0.5%"')
    parts = _split(str(value))
    if parts is None or parts[1] not in ("%", ""):
        raise ValueError(f"{value!r} is not a percentage; write 0.5 or \"0.5%\"")
    return parts[0]


def parse_size_bytes(value: object, plain_unit: str = "b") -> int:
    """A size in bytes from "6MB", "200kB", "1GiB" or a plain number in `plain_unit`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write \"512MB\"")
    if isinstance(value, int | float):
        return int(_plain(value, "size", '"512MB"') * _SIZE_UNITS[plain_unit])
    parts = _split(str(value))
    if parts is None or parts[1] not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size; write \"512MB\" "
                         "(units: B, kB, MB, GB, KiB, MiB, GiB)")
    return int(parts[0] * _SIZE_UNITS[parts[1]])


def parse_seconds(value: object) -> float:
    """A duration in seconds from a plain number (s) or "10s", "500ms"."""
    if isinstance(value, str):
        return parse_time_ms(value) / 1000
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a duration; write 10 or \"10s\"")
    return _plain(value, "duration", '10 or "10s"')
