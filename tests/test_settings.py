from pathlib import Path

import pytest

from streamer.kafka import KafkaClients
from streamer.settings import Settings


def test_env_vars_are_read_and_typed():
    s = Settings.from_env({"STREAMER_BROKER": "kafka://k:1", "STREAMER_AUDIT_RATE": "0.1",
                           "STREAMER_WARMUP_LABELS": "7", "STREAMER_DATA_DIR": "/x", "STREAMER_POLICY": "fixed",
                           "STREAMER_CATCH_UP_LABELS": "0"})
    assert (s.broker, s.audit_rate, s.warmup_labels, s.data_dir, s.policy) == ("kafka://k:1", 0.1, 7, Path("/x"), "fixed")
    assert (s.catch_up_labels, s.catch_up_step) == (0, 64)
    assert s.bootstrap_servers == "k:1"


def test_unset_broker_means_local_default():
    s = Settings.from_env({})
    assert s.broker is None and s.broker_url == "kafka://127.0.0.1:9092"


def test_flags_override_and_none_is_ignored():
    s = Settings.from_env({"STREAMER_THRESHOLD": "0.7"}).replace(threshold=None, target=0.95)
    assert (s.threshold, s.target) == (0.7, 0.95)


@pytest.mark.parametrize("bad", [{"policy": "magic"}, {"threshold": 1.5}, {"broker": "localhost:9092"},
                                 {"teacher_batch_size": 0}, {"catch_up_labels": -1}, {"catch_up_step": 0}])
def test_invalid_settings_fail_clearly(bad):
    with pytest.raises(ValueError):
        Settings(**bad)


def test_settings_are_frozen():
    with pytest.raises(Exception):
        Settings().threshold = 0.1  # type: ignore[misc]


def test_secrets_are_masked():
    s = Settings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in repr(s)
    assert s.public_dict()["sasl_password"] == "***"
    assert KafkaClients(s).security()["sasl_plain_password"] == "hunter2"
