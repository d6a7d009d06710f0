"""Structured labels on bank entries.

Known keys are validated; other keys are kept as given (partners' hash lists carry their own
columns) if they are simple identifiers. Values are strings.

========== ==========================================================================
key        meaning
========== ==========================================================================
group      the group or entity that produced the release
category   behaviour category (e.g. ``recruitment``, ``glorification``, ``instruction``)
severity   ``low`` | ``medium`` | ``high`` | ``critical``
tlp        sharing level: ``clear`` | ``green`` | ``amber`` | ``amber+strict`` | ``red``
source     who contributed the entry
release    the production this item belongs to
note       free text
========== ==========================================================================
"""

from __future__ import annotations

import re
import typing as t

from vigil.errors import UsageError

__all__ = ["KNOWN_LABELS", "SEVERITIES", "TLP_LEVELS", "parse_label_args", "validate_labels"]

SEVERITIES = ("low", "medium", "high", "critical")
TLP_LEVELS = ("clear", "green", "amber", "amber+strict", "red")
KNOWN_LABELS = ("group", "category", "severity", "tlp", "source", "release", "note")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TLP_ALIASES = {"white": "clear", "tlp:clear": "clear"}


def validate_labels(labels: t.Mapping[str, t.Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_key, raw_value in labels.items():
        key = str(raw_key).strip().lower()
        if not _KEY.match(key):
            raise UsageError(f"label key {raw_key!r} must be a lower-case identifier", key=raw_key)
        if raw_value is None or str(raw_value).strip() == "":
            continue
        value = str(raw_value).strip()
        if len(value) > 2000:
            raise UsageError(f"label {key!r} is longer than 2000 characters", key=key)
        if key == "severity":
            value = value.lower()
            if value not in SEVERITIES:
                raise UsageError(
                    f"severity must be one of {', '.join(SEVERITIES)}, got {raw_value!r}", key=key
                )
        elif key == "tlp":
            value = value.lower().removeprefix("tlp:")
            value = _TLP_ALIASES.get(value, value)
            if value not in TLP_LEVELS:
                raise UsageError(
                    f"tlp must be one of {', '.join(TLP_LEVELS)}, got {raw_value!r}", key=key
                )
        out[key] = value
    return out


def parse_label_args(items: t.Iterable[str]) -> dict[str, str]:
    """``["group=Example", "severity=high"]`` -> validated dict."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"label {item!r} must be key=value")
        pairs[key] = value
    return validate_labels(pairs)
