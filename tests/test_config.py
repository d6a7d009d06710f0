"""Numbers from the environment: one reader for the core, the video limits and the service."""

from __future__ import annotations

import pytest

from vigil.api.settings import ServiceSettings
from vigil.config import Settings, env_number
from vigil.errors import UsageError
from vigil.media.video import VideoLimits


def test_env_number_reads_checks_and_names_the_variable(monkeypatch):
    monkeypatch.delenv("VIGIL_X", raising=False)
    assert env_number("VIGIL_X", 7) == 7
    monkeypatch.setenv("VIGIL_X", "")
    assert env_number("VIGIL_X", 7) == 7
    monkeypatch.setenv("VIGIL_X", "2.5")
    assert env_number("VIGIL_X", 7) == 2.5
    for raw, kw, message in [("2.5", {"integer": True}, "must be an integer"),
                             ("abc", {}, "must be a number"), ("-1", {}, "must be positive"),
                             ("0", {}, "must be positive"),
                             ("-1", {"allow_zero": True}, "must not be negative")]:
        monkeypatch.setenv("VIGIL_X", raw)
        with pytest.raises(UsageError, match=f"VIGIL_X {message}"):
            env_number("VIGIL_X", 7, **kw)
    monkeypatch.setenv("VIGIL_X", "0")
    assert env_number("VIGIL_X", 7, allow_zero=True) == 0


def test_each_settings_reader_uses_it(monkeypatch):
    monkeypatch.setenv("VIGIL_MAX_PIXELS", "1000")
    assert Settings.from_env().limits.max_pixels == 1000
    monkeypatch.setenv("VIGIL_VIDEO_RATE", "2")
    assert VideoLimits.from_env().rate == 2
    monkeypatch.setenv("VIGIL_REFRESH_INTERVAL", "0")
    assert ServiceSettings.from_env().refresh_interval_s == 0
    for name, reader in [("VIGIL_MAX_PIXELS", Settings.from_env),
                         ("VIGIL_VIDEO_RATE", VideoLimits.from_env),
                         ("VIGIL_REFRESH_INTERVAL", ServiceSettings.from_env)]:
        monkeypatch.setenv(name, "-3")
        with pytest.raises(UsageError, match=name):
            reader()
        monkeypatch.delenv(name)
