"""The web port's address is a setting: loopback by default (a developer's machine), 0.0.0.0 in
the image and the chart, or probes and Prometheus could not reach a pod."""

from __future__ import annotations

import pytest

from orderwatch.errors import ConfigError
from orderwatch.streams.app import create_app
from orderwatch.streams.settings import Settings, load_settings


def test_defaults_stay_on_loopback() -> None:
    s = Settings()
    assert (s.web_bind, s.web_host) == ("127.0.0.1", "127.0.0.1")


def test_bind_and_host_reach_the_faust_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWATCH_WEB_BIND", "0.0.0.0")
    monkeypatch.setenv("ORDERWATCH_WEB_HOST", "10.1.2.3")
    settings = load_settings(web_port=7070)
    ow = create_app(settings, detection=False)
    assert ow.app.conf.web_bind == "0.0.0.0"
    assert str(ow.app.conf.canonical_url) == "http://10.1.2.3:7070"


def test_an_empty_bind_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERWATCH_WEB_BIND", "")
    with pytest.raises(ConfigError, match="ORDERWATCH_WEB_BIND"):
        load_settings()
