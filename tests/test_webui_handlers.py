"""The handler boundary: known problems reach the user in their own words; others are logged whole."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from backend.errors import ConfigError, JobError
from webui.handlers import user_errors


def test_known_problems_become_readable_errors():
    @user_errors
    def bad_config():
        raise ConfigError([("network.rank", "0 is out of range"), ("optimizer.lr", "must be > 0")], "my.toml")

    with pytest.raises(gr.Error) as info:
        bad_config()
    assert info.value.message == "my.toml: please fix:\n• network.rank: 0 is out of range\n• optimizer.lr: must be > 0"

    @user_errors
    def busy():
        raise JobError("job x is running: stop it before deleting it")

    with pytest.raises(gr.Error, match="stop it before deleting it"):
        busy()


def test_unexpected_errors_are_logged_with_their_traceback_and_shown_briefly(caplog):
    @user_errors
    def broken():
        return {}["missing"]

    with caplog.at_level(logging.ERROR, logger="loradash.webui"), pytest.raises(gr.Error) as info:
        broken()
    assert "KeyError" in info.value.message and "console" in info.value.message
    assert info.value.duration and info.value.duration <= 10
    (record,) = caplog.records
    assert "broken" in record.getMessage() and record.exc_info and record.exc_info[0] is KeyError
