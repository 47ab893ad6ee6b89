"""The kohya ↔ LoRA Dash mapping: complete for the schema, consistent tables, argument parsing."""

from __future__ import annotations

import typing

import pytest

from backend.compat import mapping, values
from backend.compat.command import parse_command
from backend.config.fields import leaf_fields
from backend.config.schema import Algo, OptimizerName, Sampler, SaveDtype, Scheduler
from backend.errors import ConfigError


def test_every_schema_option_is_mapped_or_ours_alone():
    """A new schema option fails here until it is given a kohya counterpart or a reason it has none."""
    schema = {f.path for f in leaf_fields()}
    mapped = mapping.mapped_paths()
    missing = sorted(schema - mapped - set(mapping.OURS_ALONE))
    assert not missing, f"add these options to backend/compat/mapping.py (MAPPING or OURS_ALONE): {missing}"
    assert not mapped - schema, f"MAPPING names options the schema does not have: {sorted(mapped - schema)}"
    assert not set(mapping.OURS_ALONE) - schema
    assert not mapped & set(mapping.OURS_ALONE), "an option is both mapped and 'ours alone'"
    assert all(len(why) > 20 for why in mapping.OURS_ALONE.values()), "say why sd-scripts cannot carry it"


def test_value_tables_cover_every_choice():
    assert set(mapping.OPTIMIZER_TO_KOHYA) == set(typing.get_args(OptimizerName))
    for ours, kohya in mapping.OPTIMIZER_TO_KOHYA.items():
        assert mapping.OPTIMIZERS[kohya.lower()][0] == ours      # export then import gives it back
    assert set(mapping.OPTIMIZER_DEFAULTS) == set(typing.get_args(OptimizerName))
    assert set(mapping.SCHEDULERS) == set(typing.get_args(Scheduler))
    assert set(mapping.ALGO_TO_LYCORIS) == set(typing.get_args(Algo))
    for ours, kohya in mapping.SAMPLER_TO_KOHYA.items():
        assert mapping.SAMPLERS[kohya] == ours
    assert set(mapping.SAMPLER_TO_KOHYA) == set(typing.get_args(Sampler))
    for ours, kohya in mapping.SAVE_PRECISION_TO_KOHYA.items():
        assert mapping.SAVE_PRECISION[kohya] == ours
    assert set(mapping.SAVE_PRECISION_TO_KOHYA) == set(typing.get_args(SaveDtype))
    for key in mapping.UNSUPPORTED:
        assert key not in {a.key for a in mapping.MAPPING}, f"{key} is both mapped and unsupported"


@pytest.mark.parametrize("items, expected", [
    (["algo=lokr", "factor=8", "dora_wd=True"], {"algo": "lokr", "factor": 8, "dora_wd": True}),
    ('decouple=True weight_decay=0.01 d_coef=2', {"decouple": True, "weight_decay": 0.01, "d_coef": 2}),
    (["betas=0.9,0.99", "eps=1e-8"], {"betas": (0.9, 0.99), "eps": 1e-8}),
    ({"algo": "loha", "conv_dim": "4", "use_tucker": "false"}, {"algo": "loha", "conv_dim": 4, "use_tucker": False}),
    (["preset=attn-mlp"], {"preset": "attn-mlp"}),
])
def test_parse_kv_reads_values_as_sd_scripts_does(items, expected):
    parsed, bad = values.parse_kv(items)
    assert parsed == expected and bad == []


def test_format_kv_reads_back_and_bad_items_are_returned():
    table = {"betas": (0.9, 0.999), "weight_decay": 0.0, "nesterov": True, "factor": -1, "name": "x"}
    assert values.parse_kv(values.format_kv(table))[0] == table
    assert values.parse_kv(["novalue", "a=1"]) == ({"a": 1}, ["novalue"])


def test_side_of_area():
    assert values.side_of_area(512, 768) == 624
    assert values.side_of_area(1024, 1024) == 1024


def test_parse_command_line_with_continuations_and_lists():
    cmd = parse_command("accelerate launch --num_processes=2 --mixed_precision bf16 \\\n"
                        '  /opt/sd-scripts/sdxl_train_network.py --network_dim 16 --network_args "algo=lokr" '
                        '"factor=8" --text_encoder_lr 1e-5 5e-6 --cache_latents --output_name "my lora"')
    assert cmd.script == "sdxl_train_network.py" and cmd.family == "sdxl"
    assert cmd.launcher == {"num_processes": 2, "mixed_precision": "bf16"}
    assert cmd.flags == {"network_dim": 16, "network_args": ["algo=lokr", "factor=8"],
                         "text_encoder_lr": [1e-5, 5e-6], "cache_latents": True, "output_name": "my lora"}


def test_parse_command_refuses_other_scripts():
    assert parse_command("accelerate launch flux_train_network.py --network_dim 4").family == "flux"
    with pytest.raises(ConfigError, match="sd3_train_network.py is not supported"):
        parse_command("accelerate launch sd3_train_network.py --network_dim 4")
    with pytest.raises(ConfigError, match="no training script"):
        parse_command("echo hello")
