"""The one declaration of a caption job's options (kind "caption").

Sections, like the training schema, so `backend.config.fields.leaf_fields(CaptionConfig)` yields the form:
`dataset` (what to caption and how existing captions are treated), `model` (which model, how it runs),
`tagger` (WD14 options) and `captioner` (vision-language model options).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, field_validator

from backend.config.schema import Section, opt
from backend.errors import ConfigError

Mode = Literal["tagger", "captioner"]
Existing = Literal["replace", "append", "skip"]
Device = Literal["auto", "cuda", "cpu"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
REPLACEMENT_RE = re.compile(r"^\s*(?P<src>[^>]*?)\s*->\s*(?P<dst>.*?)\s*$")


def _as_list(value: Any) -> Any:
    """A text box gives one string: split it on commas and new lines; lists pass through stripped."""
    if isinstance(value, str):
        value = re.split(r"[,\n]", value)
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return value


class DatasetOptions(Section):
    path: str = opt("", "Dataset folder to caption (flat, or kohya `N_name` subfolders). Relative paths are "
                        "taken from the workspace's datasets/ folder, then from the workspace.",
                    label="Dataset", basic=True, widget="path")
    caption_extension: str = opt(".txt", "Extension of the caption file next to each image; must match the "
                                         "training config's caption extension.", label="Caption extension",
                                 pattern=r"^\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,15}$")
    recursive: bool = opt(True, "Also caption images in subfolders (kohya `N_name` folders are always read).",
                          label="Recursive")
    existing: Existing = opt("replace", "What to do with an image that already has a caption: replace it, "
                                        "append the new tags to it (no duplicates), or skip the image.",
                             label="Existing captions", basic=True)


class ModelOptions(Section):
    mode: Mode = opt("tagger", "tagger: a WD14-style ONNX tagger (comma-separated tags); captioner: a "
                               "vision-language model (a sentence).", label="Mode", basic=True)
    path: str = opt("", "Model folder: for a tagger `model.onnx` + `selected_tags.csv`; for a captioner a "
                        "transformers folder. A bare name is looked up in the workspace's models/.",
                    label="Model folder", basic=True, widget="path")
    device: Device = opt("auto", "Where the model runs: auto uses CUDA when it is available.", label="Device")
    batch_size: int = opt(8, "Images per model call. Taggers with a fixed batch (WD14 v2) always run 1.",
                          label="Batch size", ge=1, le=256)
    loader_workers: int = opt(2, "Threads decoding images while the model runs (0 decodes in between "
                                 "model calls).", label="Loader threads", ge=0, le=32)


class TaggerOptions(Section):
    general_threshold: float = opt(0.35, "Keep a general tag when its probability is at least this.",
                                   label="General threshold", basic=True, ge=0.0, le=1.0)
    character_threshold: float = opt(0.85, "Keep a character tag when its probability is at least this.",
                                     label="Character threshold", basic=True, ge=0.0, le=1.0)
    use_mcut: bool = opt(False, "MCut: put each threshold in the largest gap between sorted probabilities "
                                "(characters never below 0.15) instead of the fixed thresholds.",
                         label="MCut thresholds")
    include_rating: bool = opt(False, "Add the most likely rating tag (general, sensitive, questionable, "
                                      "explicit) in front of the tags.", label="Rating tag")
    undesired_tags: list[str] = opt([], "Tags never written, matched with or without underscores.",
                                    label="Undesired tags")
    replace_underscores: bool = opt(True, "Write `long hair` instead of `long_hair` (kaomoji such as ^_^ "
                                          "are kept).", label="Underscores → spaces")
    character_first: bool = opt(False, "Put character tags before the general tags.",
                                label="Character tags first")
    trigger_words: list[str] = opt([], "Always the first tags of every caption: added when absent, moved "
                                       "to the front when present.", label="Trigger words", basic=True)
    replacements: list[str] = opt([], "Tag replacements written `src -> dst` (an empty dst removes the tag); "
                                      "src matches with or without underscores.", label="Tag replacements")

    @field_validator("undesired_tags", "trigger_words", "replacements", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("replacements")
    @classmethod
    def _check_replacements(cls, value: list[str]) -> list[str]:
        for item in value:
            m = REPLACEMENT_RE.match(item)
            if not m or not m.group("src"):
                raise ValueError(f"{item!r} is not a replacement: write `src -> dst`, e.g. `1girl -> woman`")
        return value

    def replacement_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for item in self.replacements:
            m = REPLACEMENT_RE.match(item)
            assert m is not None  # checked by the validator
            pairs.append((m.group("src"), m.group("dst")))
        return pairs


class CaptionerOptions(Section):
    prompt: str = opt("", "Prompt or task token: `a picture of` (BLIP), `<DETAILED_CAPTION>` (Florence-2), an "
                          "instruction for chat models (LLaVA/JoyCaption, Qwen2.5-VL). Empty: the family's "
                          "default.", label="Prompt / task", basic=True)
    max_new_tokens: int = opt(75, "Longest caption, in tokens.", label="Max new tokens", ge=1, le=2048)
    num_beams: int = opt(1, "Beam search width; 1 is greedy decoding.", label="Beams", ge=1, le=16)
    prefix: str = opt("", "Text put before every caption (e.g. a trigger word), joined with `, `.",
                      label="Prefix", basic=True)
    suffix: str = opt("", "Text put after every caption, joined with `, `.", label="Suffix")
    dtype: DType = opt("auto", "Weights precision: auto is bfloat16/float16 on CUDA and float32 on the CPU.",
                       label="Precision")


class CaptionConfig(BaseModel):
    model_config = Section.model_config
    dataset: DatasetOptions = DatasetOptions()
    model: ModelOptions = ModelOptions()
    tagger: TaggerOptions = TaggerOptions()
    captioner: CaptionerOptions = CaptionerOptions()


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    path = ".".join(str(p) for p in err["loc"])
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        model: Any = CaptionConfig
        for part in err["loc"][:-1]:
            model = model.model_fields[part].annotation if part in model.model_fields else BaseModel
        return path, "unknown option; allowed here: " + ", ".join(model.model_fields)
    if kind == "literal_error":
        return path, f"{got!r} is not allowed; choose one of {ctx.get('expected', '')}"
    if kind == "value_error":
        return path, str(ctx.get("error", err["msg"]))
    return path, f"{err['msg']} (got {got!r})" if not isinstance(got, dict) else err["msg"]


def load_caption_config(data: dict[str, Any] | CaptionConfig, source: str | None = None) -> CaptionConfig:
    """A CaptionConfig from a (sparse) dict, or ConfigError naming each bad field by its dotted path."""
    if isinstance(data, CaptionConfig):
        return data
    try:
        cfg = CaptionConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError([_problem(e) for e in err.errors()], source) from None
    if not cfg.dataset.path:
        raise ConfigError([("dataset.path", "required: the dataset folder to caption")], source)
    if not cfg.model.path:
        raise ConfigError([("model.path", f"required: the {cfg.model.mode} model folder")], source)
    return cfg
