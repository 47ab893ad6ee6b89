"""Importing kohya sd-scripts, LETS and kohya_ss configs: the preset each fixture gives, and the report."""

from __future__ import annotations

import json
import tomllib

import pytest

from backend.compat.detect import import_file, import_text
from backend.compat.kohya_import import flatten_config, import_kohya
from backend.config import load_config
from backend.errors import ConfigError
from tests._compat_fixtures import make_env

# fixture (config, dataset) → the sparse preset it must import to. {DATA}/{MODEL}: the test's folders.
EXPECTED = {
    "lora": (("lora_sd15.toml", "lora_sd15_dataset.toml"), {
        "model": {"path": "{MODEL}", "clip_skip": 2},
        "dataset": {"path": "{DATA}/10_char", "shuffle_caption": True, "keep_tokens": 1, "num_workers": 2},
        "network": {"rank": 16, "alpha": 8.0, "train_text_encoder": True, "unet_lr": 1e-4, "text_encoder_lr": 5e-5},
        "optimizer": {"name": "adamw8bit"},
        "training": {"batch_size": 2, "seed": 1234, "mixed_precision": "fp16", "gradient_checkpointing": True},
        "schedule": {"lr_scheduler": "cosine", "warmup_steps": 100},
        # output_dir maps to saving.output_dir (issue 17: it had no equivalent before)
        "saving": {"output_name": "char_lora", "output_dir": "{DATA}/out", "keep_last_n": 3, "save_state": False}}),
    "locon": (("locon_sd15.toml", None), {
        "model": {"path": "{MODEL}"},
        "dataset": {"path": "{DATA}"},
        "network": {"algo": "locon", "rank": 32, "alpha": 16.0, "conv_rank": 8, "conv_alpha": 4.0},
        "optimizer": {"lr": 2e-4, "weight_decay": 0.1, "beta2": 0.99},
        "training": {"max_steps": 3000, "batch_size": 4, "seed": 7, "cache_latents": "off"},
        "schedule": {"lr_scheduler": "constant_with_warmup", "warmup_ratio": 0.1},
        "saving": {"output_name": "style", "every_n_steps": 500, "every_n_epochs": 0, "keep_last_n": 3,
                   "save_state": False, "save_dtype": "fp32"}}),
    "loha": (("loha_sd15.toml", None), {
        "model": {"path": "{MODEL}"},
        "dataset": {"path": "{DATA}", "enable_bucket": False},
        "network": {"algo": "loha", "rank_dropout": 0.1, "module_dropout": 0.05, "train_text_encoder": True},
        "optimizer": {"name": "lion", "lr": 3e-5, "weight_decay": 0.05, "beta2": 0.99},
        "training": {"epochs": 8, "seed": 99, "mixed_precision": "bf16", "cache_latents": "off"},
        "schedule": {"lr_scheduler": "linear"},
        "saving": {"output_name": "loha", "every_n_epochs": 2, "save_state": False, "save_dtype": "bf16"}}),
    "lokr_dora_sdxl": (("lokr_dora_sdxl.toml", "sdxl_dataset.toml"), {
        "model": {"family": "sdxl", "path": "{MODEL}"},
        "dataset": {"path": "{DATA}/5_style", "resolution": 1024, "min_bucket_reso": 512, "max_bucket_reso": 2048,
                    "shuffle_caption": True, "keep_tokens": 1},
        "network": {"algo": "lokr", "rank": 10000, "alpha": 1.0, "conv_rank": 10000, "target": "all", "dora": True,
                    "factor": 8},
        "optimizer": {"lr": 4e-4},
        "training": {"epochs": 16, "batch_size": 2, "mixed_precision": "bf16", "gradient_checkpointing": True,
                     "cache_latents": "disk", "cache_text_encoder_outputs": True},
        "schedule": {"lr_scheduler": "cosine", "warmup_ratio": 0.05},
        "saving": {"output_name": "lokr_style", "every_n_epochs": 2}}),
    "sdxl": (("sdxl_lora.toml", "sdxl_dataset.toml"), {
        "model": {"family": "sdxl", "path": "{MODEL}"},
        "dataset": {"path": "{DATA}/5_style", "resolution": 1024, "min_bucket_reso": 512, "max_bucket_reso": 2048,
                    "shuffle_caption": True, "keep_tokens": 1},
        "network": {"rank": 32, "alpha": 16.0, "train_text_encoder": True, "unet_lr": 1e-4,
                    "text_encoder_lr": 1e-5, "text_encoder_2_lr": 5e-6},
        "optimizer": {"name": "adafactor", "weight_decay": 0.0},  # its args = LoRA Dash's Adafactor defaults
        "training": {"max_steps": 1500, "batch_size": 2, "seed": 0, "mixed_precision": "bf16", "cache_latents": "off"},
        "schedule": {"lr_scheduler": "constant_with_warmup", "warmup_steps": 50},
        "loss": {"min_snr_gamma": 5.0, "noise_offset": 0.0357},
        "sampling": {"prompts": [
            {"prompt": "char, 1girl, smiling", "negative": "lowres, bad hands", "seed": 1, "width": 1024,
             "height": 1024, "steps": 28, "guidance": 7.0},
            {"prompt": "char, standing in a field", "negative": "", "seed": 2, "width": 832, "height": 1216,
             "steps": 30, "guidance": 7.5}], "every_n_steps": 250},
        "saving": {"output_name": "xl", "every_n_epochs": 0, "save_state": False, "save_dtype": "bf16"}}),
    "prodigy": (("prodigy_sd15.toml", None), {
        "model": {"path": "{MODEL}"},
        "dataset": {"path": "{DATA}", "enable_bucket": False},
        "network": {"rank": 32, "alpha": 32.0, "train_text_encoder": True},
        "optimizer": {"name": "prodigy", "lr": 1.0, "beta2": 0.99,
                      "extra_args": {"decouple": True, "d_coef": 2, "use_bias_correction": True,
                                     "safeguard_warmup": True}},
        "training": {"seed": 3, "cache_latents": "off"},
        "schedule": {"lr_scheduler": "cosine"},
        "saving": {"every_n_epochs": 0, "output_name": "last", "save_state": False, "save_dtype": "fp32"}}),
}
# The loss fixtures share everything but their loss settings.
_LOSS_BASE = {
    "model": {"path": "{MODEL}"}, "dataset": {"path": "{DATA}", "enable_bucket": False},
    "network": {"alpha": 1.0, "train_text_encoder": True}, "training": {"max_steps": 800, "seed": 5,
                                                                       "cache_latents": "off"},
    "saving": {"every_n_epochs": 0, "output_name": "last", "save_state": False, "save_dtype": "fp32"}}
EXPECTED.update({
    "min_snr": (("min_snr_sd15.toml", None), {**_LOSS_BASE, "loss": {"min_snr_gamma": 5.0}}),
    "noise_offset": (("noise_offset_sd15.toml", None), {**_LOSS_BASE, "network": {"train_text_encoder": True},
                                                        "loss": {"noise_offset": 0.1}}),
    "multires": (("multires_sd15.toml", None), {**_LOSS_BASE, "network": {"train_text_encoder": True},
                                                "loss": {"multires_noise_iterations": 6}}),
    "repeats_reg": (("reg_sd15.toml", "repeats_reg_dataset.toml"), {
        "model": {"path": "{MODEL}"},
        "dataset": {"path": "{DATA}/train", "enable_bucket": False, "reg_path": "{DATA}/reg/1_person",
                    "prior_loss_weight": 0.5},
        "network": {"rank": 16, "alpha": 8.0, "train_text_encoder": True},
        "training": {"epochs": 5, "seed": 11, "cache_latents": "off"},
        "saving": {"every_n_epochs": 0, "output_name": "last", "save_state": False, "save_dtype": "fp32"}}),
})


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fixture_imports_to_expected_preset(env, case):
    (config, dataset), expected = EXPECTED[case]
    result = import_file(env.file(config), env.file(dataset) if dataset else None, paths=env.paths)
    assert result.preset == {"schema_version": 1, **env.sub(expected)}
    assert not result.report.problems, result.report.to_text()
    load_config(result.preset)  # the preset is a valid LoRA Dash config
    # Nothing is silently dropped: every key of both files is named in the report.
    keys = set(flatten_config(tomllib.loads(env.file(config).read_text())))
    if dataset:
        ds = tomllib.loads(env.file(dataset).read_text())
        keys |= set(ds["general"]) | {k for d in ds["datasets"] for k in d if k != "subsets"}
        keys |= {k for d in ds["datasets"] for s in d["subsets"] for k in s}
    words = {w for k in result.report.keys() for w in k.replace(",", " ").split()}
    assert keys <= words, f"not in the report: {sorted(keys - words)}"


def test_report_lists_unknown_unsupported_and_defaults(env):
    result = import_file(env.file("lora_sd15.toml"), env.file("lora_sd15_dataset.toml"), paths=env.paths)
    mapped = {e.key: e for e in result.report.mapped}
    assert mapped["output_dir"].path == "saving.output_dir"  # issue 17: it had no equivalent before
    assert mapped["xformers"].note.startswith("no effect here")
    assert mapped["optimizer_type"].value == "AdamW8bit" and mapped["optimizer_type"].result == "adamw8bit"
    changed = {e.key: e for e in result.report.changed}
    assert changed["network_train_unet_only (not set)"].result is True  # sd-scripts trains the TE by default
    assert changed["training script (not given)"].value == "sd15"
    text = result.report.to_text()
    assert "No equivalent in LoRA Dash" not in text and "output_dir" in text


def test_zero_and_false_are_values_not_absences(env):
    result = import_kohya({"network_module": "networks.lora", "caption_dropout_rate": 0.0, "flip_aug": False,
                           "seed": 0, "noise_offset": 0, "save_state": False, "max_train_steps": 10,
                           "caption_prefix": ""}, None, family="sd15")
    mapped = {e.key: e.value for e in result.report.mapped}
    assert mapped["caption_dropout_rate"] == 0.0 and mapped["flip_aug"] is False and mapped["seed"] == 0
    assert mapped["noise_offset"] == 0 and mapped["caption_prefix"] == ""
    assert result.config.training.seed == 0 and result.config.dataset.caption_prefix == ""
    assert "save_state (not set)" not in {e.key for e in result.report.changed}


def test_unknown_key_bad_value_and_missing_folder_are_listed(env):
    text = (f'pretrained_model_name_or_path = "{env.model.as_posix()}"\nnetwork_module = "networks.lora"\n'
            f'train_data_dir = "{env.root.as_posix()}/nowhere"\nkeep_tokens = 999\nwhat_is_this = 1\n'
            'optimizer_type = "CAME"\nlr_scheduler = "warmup_stable_decay"\nmax_train_steps = 10\n')
    result = import_text(text, ".toml", family="sd15", paths=env.paths)
    unmapped = {e.key: e for e in result.report.unmapped}
    assert "unknown option" in unmapped["what_is_this"].note
    assert "dataset.keep_tokens" in unmapped["keep_tokens"].note and unmapped["keep_tokens"].value == 999
    assert "AdamW used" in unmapped["optimizer_type"].note
    assert "not available" in unmapped["lr_scheduler"].note
    problems = {e.key: e.note for e in result.report.problems}
    assert "does not exist" in problems["train_data_dir"]
    assert result.config.dataset.keep_tokens == 0 and result.config.optimizer.name == "adamw"


def test_result_that_cannot_validate_stops_with_kohya_keys(env):
    with pytest.raises(ConfigError) as err:
        import_kohya({"resolution": 1024, "min_bucket_reso": 768, "max_bucket_reso": 512, "enable_bucket": True,
                      "max_train_steps": 5}, None, family="sd15")
    assert "min_bucket_reso must not exceed max_bucket_reso" in str(err.value)


def test_lets_saved_toml(env):
    result = import_file(env.file("lets_queue.toml"), paths=env.paths)
    assert result.preset == env.sub({
        "schema_version": 1,
        "model": {"family": "sdxl", "path": "{MODEL}", "clip_skip": 2},
        "dataset": {"path": "{DATA}/10_char", "resolution": 1024, "min_bucket_reso": 512, "max_bucket_reso": 2048,
                    "shuffle_caption": True, "keep_tokens": 1},
        "network": {"algo": "lokr", "rank": 16, "alpha": 8.0, "conv_rank": 16, "conv_alpha": 8.0, "target": "all",
                    "dora": True, "factor": 8},
        "optimizer": {"name": "adamw8bit", "weight_decay": 0.1, "beta2": 0.99},
        "training": {"batch_size": 2, "seed": 23, "mixed_precision": "bf16", "gradient_checkpointing": True,
                     "cache_latents": "disk", "cache_text_encoder_outputs": True},
        "schedule": {"lr_scheduler": "cosine", "warmup_ratio": 0.05},
        "loss": {"min_snr_gamma": 5.0, "noise_offset": 0.0357},
        "saving": {"output_name": "lets_lokr", "output_dir": "{DATA}/out", "save_state": False}})
    unmapped = {e.key for e in result.report.unmapped}
    assert unmapped == {"max_token_length"}  # LETS' 225 tokens: a real difference, reported


def test_kohya_ss_gui_json(env):
    result = import_file(env.file("kohya_ss_lokr.json"), paths=env.paths)
    p = result.preset
    assert p["model"] == env.sub({"family": "sdxl", "path": "{MODEL}"})
    assert p["network"] == {"algo": "lokr", "rank": 32, "alpha": 32.0, "conv_rank": 8, "conv_alpha": 4.0,
                            "target": "all", "dora": True, "rank_dropout": 0.1, "module_dropout": 0.1,
                            "train_text_encoder": True, "unet_lr": 1.0, "text_encoder_lr": 1.0}
    assert p["optimizer"] == {"name": "prodigy", "lr": 1.0,
                              "extra_args": {"decouple": True, "d_coef": 2, "use_bias_correction": True}}
    assert p["training"]["epochs"] == 20 and p["training"]["seed"] == 12345
    assert p["schedule"] == {"lr_scheduler": "cosine", "warmup_ratio": 0.1}        # lr_warmup 10 %
    assert p["loss"] == {"min_snr_gamma": 5.0, "multires_noise_iterations": 8, "multires_noise_discount": 0.2}
    assert p["sampling"]["prompts"][0]["negative"] == "blurry" and p["sampling"]["every_n_steps"] == 200
    assert p["dataset"]["resolution"] == 1024 and p["dataset"]["num_workers"] == 0  # "0" is a value
    assert p["saving"]["description"] == "kohya_ss fixture"
    data = json.loads((env.root / "kohya_ss_lokr.json").read_text())
    words = {w for k in result.report.keys() for w in k.split()}
    assert set(data) <= words, f"not in the report: {sorted(set(data) - words)}"
    assert not result.report.problems


def test_command_line_import_reads_config_file_and_flags(env):
    cfg = env.file("lora_sd15.toml")
    ds = env.file("lora_sd15_dataset.toml")
    text = (f"accelerate launch --num_processes 2 sdxl_train_network.py --config_file {cfg} "
            f"--dataset_config {ds} --network_dim 64 --seed 9")
    result = import_text(text, paths=env.paths)
    c = result.config
    assert c.model.family == "sdxl" and c.training.num_processes == 2
    assert c.network.rank == 64 and c.training.seed == 9          # flags win over the file, as in sd-scripts
    assert c.network.alpha == 8.0 and c.dataset.path == env.sub("{DATA}/10_char")


def test_dataset_subsets_that_cannot_be_one_folder_are_reported(env):
    ds = {"general": {"caption_extension": ".txt"}, "datasets": [
        {"resolution": 512, "subsets": [{"image_dir": f"{env.data}/10_char", "num_repeats": 10, "keep_tokens": 2},
                                        {"image_dir": f"{env.data}/5_style", "num_repeats": 2, "keep_tokens": 0}]},
        {"resolution": 768, "subsets": [{"image_dir": f"{env.data}/5_style"}]}]}
    result = import_kohya({"max_train_steps": 5}, ds, family="sd15", paths=env.paths)
    assert result.config.dataset.path == f"{env.data}/10_char" and result.config.dataset.keep_tokens == 2
    unmapped = {e.key: e.note for e in result.report.unmapped}
    assert "only the first [[datasets]]" in unmapped["[[datasets]] #2"]
    assert "one training folder" in unmapped["subset #2 image_dir"]
    changed = {e.key: e.note for e in result.report.changed}
    assert "subsets differ" in changed["subset #2 keep_tokens"]
    assert "not imported" in unmapped["subset #2 num_repeats"]


def test_dataset_toml_alone_is_refused_with_a_hint(env):
    with pytest.raises(ConfigError, match="this is a dataset config"):
        import_file(env.file("sdxl_dataset.toml"))


def test_config_that_names_its_dataset_toml(env):
    ds = env.file("lora_sd15_dataset.toml")
    cfg = env.root / "named.toml"
    cfg.write_text(f'dataset_config = "{ds.name}"\nnetwork_module = "networks.lora"\nmax_train_steps = 5\n')
    result = import_file(cfg, family="sd15", paths=env.paths)
    assert result.config.dataset.path == env.sub("{DATA}/10_char") and result.config.training.batch_size == 2
    assert {e.key: e.note for e in result.report.mapped}["dataset_config"] == "the dataset TOML it names was read"


def test_adafactor_without_arguments_runs_as_sd_scripts_runs_it():
    result = import_kohya({"optimizer_type": "Adafactor", "max_train_steps": 5}, None, family="sd15")
    assert result.config.optimizer.extra_args == {"scale_parameter": True, "relative_step": True}
    assert "optimizer_args relative_step (not set)" in {e.key for e in result.report.changed}
