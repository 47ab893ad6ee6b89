"""One `as_bool` for every boolean the importers read: "True" (LETS, kohya_ss), "true", 1, "yes" all
mean true wherever a flag is read (before, `_caching` read "True" as false, and others differed)."""

from __future__ import annotations

import pytest

from backend.compat.command import parse_command
from backend.compat.kohya_import import import_kohya
from backend.compat.lets_import import import_lets
from backend.compat.values import as_bool, parse_literal

TRUE = (True, "True", "true", "TRUE", "1", 1, "yes", "on")
FALSE = (False, "False", "false", "0", 0, "no", "off")


@pytest.mark.parametrize("value", TRUE)
def test_each_spelling_of_true(value):
    assert as_bool(value) is True
    cfg = import_kohya({"cache_latents": value, "max_train_steps": 5, "sdxl": value,
                        "network_train_unet_only": value, "use_8bit_adam": value}).config
    assert cfg.training.cache_latents == "memory"          # _caching
    assert cfg.model.family == "sdxl"                       # the sdxl flag
    assert cfg.optimizer.name == "adamw8bit"                # legacy optimizer flags
    assert cfg.network.train_text_encoder is False          # unet only
    assert import_kohya({"cache_latents_to_disk": value}).config.training.cache_latents == "disk"


@pytest.mark.parametrize("value", FALSE)
def test_each_spelling_of_false(value):
    assert as_bool(value) is False
    cfg = import_kohya({"cache_latents": value, "max_train_steps": 5, "sdxl": value,
                        "network_train_unet_only": value}).config
    assert cfg.training.cache_latents == "off"
    assert cfg.model.family == "sd15"
    assert cfg.network.train_text_encoder is True


def test_lets_flags_and_regularization_subsets_read_the_same_way():
    body = {"args": {"general_args": {"sdxl": "true", "max_train_steps": 5}, "network_args": {"fa": "True"}},
            "dataset": {"subsets": [{"image_dir": "a", "is_reg": "False"}, {"image_dir": "b", "is_reg": "True"}]}}
    result = import_lets(body)
    assert result.preset["model"]["family"] == "sdxl"
    assert result.preset["dataset"]["path"].endswith("a") and result.preset["dataset"]["reg_path"].endswith("b")


def test_unknown_words_are_errors_or_the_default():
    with pytest.raises(ValueError, match="'maybe' is not true or false"):
        as_bool("maybe")
    assert as_bool("maybe", default=False) is False and as_bool(None, default=True) is True
    assert parse_literal("True") is True and parse_literal("1") == 1  # a literal "1" stays a number
    assert parse_command("train_network.py --cache_latents TRUE").flags["cache_latents"] is True
