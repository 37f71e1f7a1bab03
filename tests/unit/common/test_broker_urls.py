"""AMQP_URL may name several broker nodes; the alert on dead-lettered messages exists."""

from __future__ import annotations

import pytest
import yaml

from services.common.settings import MAX_BROKER_NODES, CommonSettings, ConfigError, broker_urls
from tests.unit.deploy.conftest import ROOT


def test_one_url_or_a_comma_separated_list() -> None:
    assert broker_urls("amqp://u:p@a:5672/%2F") == ["amqp://u:p@a:5672/%2F"]
    assert broker_urls(" amqp://a/v , amqps://b:5671/v,") == ["amqp://a/v", "amqps://b:5671/v"]


@pytest.mark.parametrize("bad", ["", " , ", "http://a/v", "amqp://a/v,redis://b"])
def test_bad_broker_lists_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        broker_urls(bad)


def test_the_list_is_bounded() -> None:
    with pytest.raises(ConfigError):
        broker_urls(",".join(["amqp://a/v"] * (MAX_BROKER_NODES + 1)))


def test_an_alert_fires_on_dead_lettered_messages() -> None:
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}
    assert "messages_dead_lettered_total" in exprs["DropboxMessagesDeadLettered"]


def test_settings_refuse_a_bad_amqp_url_without_printing_its_password() -> None:
    with pytest.raises(ConfigError) as err:
        CommonSettings.from_env({"AMQP_URL": "amqp://u:p@a/v,http://u:secret@b/v"})
    assert "secret" not in str(err.value)
    assert CommonSettings.from_env({"AMQP_URL": "amqp://a/v,amqp://b/v"}).amqp_url == "amqp://a/v,amqp://b/v"
