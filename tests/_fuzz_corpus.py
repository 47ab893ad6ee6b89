"""A deterministic corpus of broken inputs for `validate` and `import-config` (seeded, no network).

Each case is a file (or a folder, a missing path, a FIFO…) and what to pass with it. Classes: bad
encodings (invalid UTF-8, UTF-16/32, BOMs), binary junk, empty files, deep nesting of arrays and
tables, huge arrays, tables, strings and integers, NaN/inf, a wrong type at every level of the schema
(each section, each option, each sample-prompt field), byte-level mutations of valid files, and the
kohya formats (config TOML, dataset TOML, kohya_ss JSON, LETS TOML/JSON, sd-scripts command lines)
with every key mangled. Nothing here knows what the answer should be beyond "no traceback".
"""

from __future__ import annotations

import json
import os
import random
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from backend.config import TrainConfig, dumps_toml, to_dict
from backend.config.fields import leaf_fields
from backend.paths import PROJECT_ROOT

PRESETS = sorted((PROJECT_ROOT / "presets").glob("*.toml"))
KOHYA = PROJECT_ROOT / "tests" / "fixtures" / "kohya"
KOHYA_CONFIGS = ("lora_sd15.toml", "locon_sd15.toml", "lokr_dora_sdxl.toml", "prodigy_sd15.toml", "sdxl_lora.toml")
KOHYA_DATASETS = ("lora_sd15_dataset.toml", "sdxl_dataset.toml", "repeats_reg_dataset.toml")
COMMAND = ('accelerate launch --num_processes=1 --mixed_precision bf16 "sd-scripts/train_network.py" \\\n'
           '  --pretrained_model_name_or_path="{MODEL}" --train_data_dir="{DATA}" --resolution="512,512" \\\n'
           '  --network_module=lycoris.kohya --network_args "algo=locon" "conv_dim=4" "conv_alpha=1" \\\n'
           '  --network_dim=16 --network_alpha=8 --learning_rate=1e-4 --optimizer_type=AdamW8bit \\\n'
           '  --max_train_epochs=10 --output_name=x --save_model_as=safetensors --seed=3\n')

HUGE_DIGITS = "9" * 5000


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes | None = None      # the file's bytes; None with kind != "file"
    kind: str = "file"             # file | folder | missing | fifo | loop
    suffix: str = ".toml"
    dataset: bytes | None = None   # a --dataset TOML to pass with it (import-config)


def _toml_junk() -> list[tuple[str, str]]:
    """(label, TOML value text) of wrong or extreme values."""
    return [("str", '"x"'), ("empty-str", '""'), ("int", "7"), ("neg", "-3"), ("zero", "0"), ("float", "0.5"),
            ("bool", "true"), ("array", "[1, 2]"), ("str-array", '["a", "b"]'), ("table", "{a = 1}"),
            ("date", "1979-05-27T07:32:00Z"), ("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"),
            ("huge-int", "9" * 4000), ("big-float", "1e308"), ("tiny-float", "1e-320"),
            ("nul-str", '"a\\u0000b"'), ("newline-str", '"a\\nb"'), ("long-str", '"' + "x" * 20000 + '"'),
            ("deep-array", "[" * 200 + "]" * 200), ("hex", "0xffffffffffffffffffffffffffff")]


def _valid_bases() -> list[tuple[str, str]]:
    full = dumps_toml(to_dict(TrainConfig()))
    return [("defaults-full", full)] + [(p.stem, p.read_text(encoding="utf-8")) for p in PRESETS]


def _encodings(name: str, text: str) -> Iterator[Case]:
    raw = text.encode("utf-8")
    yield Case(f"{name}-bom", b"\xef\xbb\xbf" + raw)
    yield Case(f"{name}-utf16", text.encode("utf-16"))
    yield Case(f"{name}-utf16be-nobom", text.encode("utf-16-be"))
    yield Case(f"{name}-utf32", text.encode("utf-32"))
    yield Case(f"{name}-latin1", text.replace('"', '"é', 1).encode("latin-1", "replace"))
    for label, bad in (("ff", b"\xff"), ("lone-cont", b"\x80"), ("truncated", b"\xc3"), ("overlong", b"\xc0\xaf"),
                       ("surrogate", b"\xed\xa0\x80"), ("nul", b"\x00")):
        cut = len(raw) // 2
        yield Case(f"{name}-invalid-{label}", raw[:cut] + bad + raw[cut:])
        yield Case(f"{name}-invalid-{label}-in-string", raw.replace(b'"', b'"' + bad, 1))


def _structure() -> Iterator[Case]:
    for depth in (50, 900, 5000, 100000):
        yield Case(f"deep-array-{depth}", ("a = " + "[" * depth + "]" * depth + "\n").encode())
        yield Case(f"deep-inline-table-{depth}", ("a = " + "{b = " * depth + "1" + "}" * depth + "\n").encode())
        yield Case(f"deep-dotted-key-{depth}", (".".join(["k"] * depth) + " = 1\n").encode())
        yield Case(f"deep-header-{depth}", ("[" + ".".join(["t"] * depth) + "]\nx = 1\n").encode())
        yield Case(f"deep-in-network-{depth}", ("[network]\nrank = " + "[" * depth + "]" * depth + "\n").encode())
    yield Case("huge-array", ("[network]\nrank = [" + ", ".join(["1"] * 200000) + "]\n").encode())
    yield Case("many-keys", ("[optimizer.extra_args]\n" + "".join(f"k{i} = {i}\n" for i in range(20000))).encode())
    yield Case("many-sections", "".join(f"[s{i}]\nx = 1\n" for i in range(5000)).encode())
    yield Case("many-prompts", ("".join('[[sampling.prompts]]\nprompt = "p"\n' for _ in range(3000))).encode())
    yield Case("long-string", ('[saving]\ndescription = "' + "x" * 2_000_000 + '"\n').encode())
    yield Case("long-key", ("[network]\n" + "k" * 100000 + " = 1\n").encode())
    for label, number in (("5000-digit", HUGE_DIGITS), ("neg-5000-digit", "-" + HUGE_DIGITS),
                          ("4301-digit", "9" * 4301), ("4300-digit", "9" * 4300), ("hex-huge", "0x" + "f" * 5000),
                          ("float-huge-exp", "1e99999"), ("float-long", "1." + "1" * 5000)):
        yield Case(f"number-{label}-toplevel", f"schema_version = {number}\n".encode())
        yield Case(f"number-{label}-rank", f"[network]\nrank = {number}\n".encode())
        yield Case(f"number-{label}-extra", f"[optimizer.extra_args]\nd_coef = {number}\n".encode())
    for label, value in (("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("-nan", "-nan")):
        for path in ("optimizer.lr", "network.alpha", "network.constraint", "loss.noise_offset",
                     "flow.discrete_flow_shift", "training.max_grad_norm"):
            section, key = path.split(".")
            yield Case(f"{label}-{path}", f"[{section}]\n{key} = {value}\n".encode())
        yield Case(f"{label}-extra-arg", f"[optimizer.extra_args]\nd_coef = {value}\n".encode())
    for label, text in (("empty", b""), ("space", b"   \n\t\n"), ("comment", b"# nothing\n"), ("bom-only", b"\xef\xbb\xbf"),
                        ("nul-bytes", b"\x00" * 64), ("one-nul", b"[network]\x00\nrank = 4\n"),
                        ("png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))), ("zip", b"PK\x03\x04" + b"\x00" * 40),
                        ("crlf", b"[network]\r\nrank = 4\r\n"), ("cr-only", b"[network]\rrank = 4\r"),
                        ("dup-key", b"[network]\nrank = 4\nrank = 5\n"), ("dup-table", b"[network]\n[network]\n"),
                        ("empty-key", b'"" = 1\n'), ("ctrl-key", b'"a\\u0007b" = 1\n'),
                        ("newline-key", b'[network]\n"ra\\nnk" = 1\n'), ("unicode-key", "[netwörk]\nrank = 4\n".encode()),
                        ("array-of-sections", b"[[network]]\nrank = 4\n"), ("prompts-table", b"[sampling.prompts]\nprompt = 'x'\n"),
                        ("prompts-ints", b"[sampling]\nprompts = [1, 2]\n"), ("prompts-nested", b"[sampling]\nprompts = [[{prompt='x'}]]\n"),
                        ("prompt-missing", b"[[sampling.prompts]]\nseed = 1\n"), ("extra-nested", b"[optimizer.extra_args.x]\ny = 1\n"),
                        ("extra-array", b"[optimizer]\nextra_args = {x = [1, 2]}\n"), ("extra-date", b"[optimizer.extra_args]\nx = 1979-05-27\n")):
        yield Case(f"raw-{label}", text)
    for label, version in (("str", '"1"'), ("float", "1.0"), ("bool", "true"), ("zero", "0"), ("neg", "-1"), ("future", "99"),
                           ("huge", "9" * 40), ("array", "[1]"), ("table", "{v = 1}")):
        yield Case(f"schema-version-{label}", f"schema_version = {version}\n".encode())


def _wrong_types() -> Iterator[Case]:
    junk = _toml_junk()
    sections = [name for name in TrainConfig.model_fields if name != "schema_version"]
    for section in sections:
        for label, value in junk:
            yield Case(f"section-{section}-{label}", f"{section} = {value}\n".encode())
    for spec in leaf_fields():
        for label, value in junk:
            yield Case(f"field-{spec.path}-{label}", f"[{spec.section}]\n{spec.name} = {value}\n".encode())
    for key in ("prompt", "negative", "seed", "width", "height", "steps", "guidance", "unknown"):
        for label, value in junk:
            yield Case(f"prompt-{key}-{label}", f"[[sampling.prompts]]\nprompt = 'p'\n{key} = {value}\n".encode())


def _mutations(rng: random.Random, count: int) -> Iterator[Case]:
    bases = [(n, t.encode("utf-8")) for n, t in _valid_bases()]
    for i in range(count):
        name, raw = rng.choice(bases)
        data = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            op, pos = rng.randrange(4), rng.randrange(max(1, len(data)))
            if op == 0:
                data[pos:pos + 1] = bytes([rng.randrange(256)])
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 2:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                data[pos:pos] = rng.choice([b"[", b"]", b"{", b"}", b'"', b"=", b"\n", b"\x00", b"\xff", b"..",
                                            b"9" * 500, b"nan", b"[[x]]\n", b"\\u0000"])
        yield Case(f"mutated-{i:03d}-{name}", bytes(data))


def _special_paths() -> Iterator[Case]:
    yield Case("is-a-folder", kind="folder")
    yield Case("missing-file", kind="missing")
    yield Case("fifo", kind="fifo")
    yield Case("symlink-loop", kind="loop")


def toml_corpus(seed: int = 14, mutations: int = 300) -> list[Case]:
    """Broken configs for `python -m backend validate`."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for name, text in _valid_bases():
        cases += list(_encodings(name, text))
    cases += list(_structure()) + list(_wrong_types()) + list(_mutations(rng, mutations)) + list(_special_paths())
    cases += [Case(f"random-bytes-{i:02d}", rng.randbytes(rng.choice([1, 7, 100, 4096, 65536]))) for i in range(40)]
    return cases


def _fill(text: str, root: Path) -> str:
    return text.replace("{DATA}", (root / "data").as_posix()).replace("{MODEL}", (root / "model.safetensors").as_posix())


def _json_junk() -> list[tuple[str, object]]:
    return [("str", "x"), ("empty", ""), ("int", 7), ("neg", -3), ("float", 0.5), ("bool", True), ("null", None),
            ("list", [1, "a"]), ("dict", {"a": 1}), ("nested", [[[[{"a": [1]}]]]]), ("huge", 10 ** 400),
            ("nan", float("nan")), ("inf", float("inf")), ("nul", "a\x00b"), ("comma-str", "1,2,3"),
            ("path-like", "../../etc/passwd"), ("long", "x" * 5000)]


def kohya_corpus(root: Path, seed: int = 17, mutations: int = 120) -> list[Case]:
    """Broken kohya / kohya_ss / LETS configs and command lines for `python -m backend import-config`;
    `root` is where the test puts data/ and model.safetensors that the placeholders name."""
    rng = random.Random(seed)
    cases: list[Case] = []
    toml_junk = _toml_junk()
    for fname in KOHYA_CONFIGS:
        text = _fill((KOHYA / fname).read_text(encoding="utf-8"), root)
        data = tomllib.loads(text)
        for key in data:
            for label, value in toml_junk:
                lines = [ln for ln in text.splitlines() if not ln.split("=")[0].strip() == key]
                body = "\n".join(lines) if not isinstance(data[key], dict) else text.replace(f"[{key}]", "[_x]")
                cases.append(Case(f"kohya-{fname}-{key}-{label}", (f"{key} = {value}\n" + body + "\n").encode()))
        cases += [Case(c.name.replace("defaults", fname), c.data) for c in _encodings(f"kohya-{fname}", text)]
    for fname in KOHYA_DATASETS:
        text = _fill((KOHYA / fname).read_text(encoding="utf-8"), root)
        config = _fill((KOHYA / "lora_sd15.toml").read_text(encoding="utf-8"), root).encode()
        data = tomllib.loads(text)
        for label, value in toml_junk:
            for section in ("general", "datasets"):
                moved = text.replace(f"[{section}", f"[_{section}")  # the real table out of the way
                cases.append(Case(f"dataset-{fname}-{section}-{label}", config,
                                  dataset=f"{section} = {value}\n{moved}".encode()))
            for key in [k for ds in data.get("datasets", []) for k in ds if k != "subsets"][:6]:
                broken = json.loads(json.dumps(data))
                broken["datasets"][0][key] = "__JUNK__"
                cases.append(Case(f"dataset-{fname}-datasets.{key}-{label}", config,
                                  dataset=tomli_w.dumps(broken).replace('"__JUNK__"', value).encode()))
            subset_keys = [k for ds in data.get("datasets", []) for s in ds.get("subsets", []) for k in s]
            for key in sorted(set(subset_keys))[:8]:
                broken = json.loads(json.dumps(data))
                broken["datasets"][0].setdefault("subsets", [{}])[0][key] = "__JUNK__"
                cases.append(Case(f"dataset-{fname}-subsets.{key}-{label}", config,
                                  dataset=tomli_w.dumps(broken).replace('"__JUNK__"', value).encode()))
        cases.append(Case(f"dataset-{fname}-as-config", text.encode()))
        cases.append(Case(f"dataset-{fname}-binary", config, dataset=rng.randbytes(300)))
        cases.append(Case(f"dataset-{fname}-utf16", config, dataset=text.encode("utf-16")))
    for fname in ("kohya_ss_lokr.json", "lets_validate_body.json"):
        text = _fill((KOHYA / fname).read_text(encoding="utf-8"), root)
        data = json.loads(text)
        top = list(data) if isinstance(data, dict) else []
        for key in top:
            for label, value in _json_junk():
                broken = dict(data)
                broken[key] = value
                cases.append(Case(f"{fname}-{key}-{label}", json.dumps(broken).encode(), suffix=".json"))
        for label, raw in (("truncated", text[: len(text) // 2]), ("array", "[1, 2]"), ("string", '"x"'),
                           ("number", "5"), ("null", "null"), ("huge-int", '{"epoch": ' + HUGE_DIGITS + "}"),
                           ("deep", "[" * 100000 + "]" * 100000), ("deep-obj", '{"a":' * 5000 + "1" + "}" * 5000),
                           ("nan", '{"epoch": NaN, "learning_rate": Infinity}'), ("dup", '{"epoch": 1, "epoch": "x"}'),
                           ("empty", ""), ("bom", "\ufeff" + text)):
            cases.append(Case(f"{fname}-raw-{label}", raw.encode("utf-8"), suffix=".json"))
        cases += [Case(c.name, c.data, suffix=".json") for c in _encodings(f"{fname}", text)]
    lets_toml = _fill((KOHYA / "lets_queue.toml").read_text(encoding="utf-8"), root)
    for section, values in tomllib.loads(lets_toml).items():
        for label, value in toml_junk[:12]:
            cases.append(Case(f"lets-{section}-{label}", (f"{section} = {value}\n" + lets_toml.replace(
                f"[{section}", f"[_{section}")).encode()))
        if isinstance(values, dict):
            for sub in values:
                for label, value in toml_junk[:8]:
                    cases.append(Case(f"lets-{section}.{sub}-{label}", lets_toml.replace(
                        f"[{section}.{sub}]", f"[_moved.{sub}]").encode() + f"\n[{section}]\n{sub} = {value}\n".encode()))
    command = _fill(COMMAND, root)
    for label, text in (("ok", command), ("unbalanced-quote", command.replace('"512,512"', '"512,512')),
                        ("trailing-backslash", command.rstrip() + " \\"), ("no-script", command.replace("train_network.py", "x.py")),
                        ("other-script", command.replace("train_network.py", "flux_train.py")),
                        ("flag-no-value", command + " --network_dim"), ("bool-with-value", command + " --xformers=maybe"),
                        ("bad-resolution", command.replace("512,512", "abc,def")), ("zero-resolution", command.replace("512,512", "0")),
                        ("neg-dim", command.replace("--network_dim=16", "--network_dim=-4")),
                        ("huge-dim", command.replace("--network_dim=16", "--network_dim=" + HUGE_DIGITS)),
                        ("nan-lr", command.replace("1e-4", "nan")), ("inf-lr", command.replace("1e-4", "inf")),
                        ("bad-network-args", command.replace('"conv_dim=4"', '"conv_dim=x" "algo" "=" "dropout=1e999"')),
                        ("nul", command.replace("--seed=3", "--seed=3\x00")), ("windows", command.replace("\\\n", "^\r\n")),
                        ("only-accelerate", "accelerate launch\n"), ("empty", ""), ("unicode", command + " --output_name=ñ✓"),
                        ("config-file-missing", command + " --config_file=/nonexistent/x.toml"),
                        ("config-file-folder", command + f" --config_file={root.as_posix()}"),
                        ("dataset-config-junk", command + f" --dataset_config={(root / 'model.safetensors').as_posix()}"),
                        ("repeated", command + " --network_dim=4 --network_dim=x"),
                        ("long-line", command + " --x=" + "y" * 100000)):
        for suffix in (".sh", ".txt"):
            cases.append(Case(f"command-{label}{suffix}", text.encode("utf-8", "surrogatepass"), suffix=suffix))
    bases = [(f, _fill((KOHYA / f).read_text(encoding="utf-8"), root).encode()) for f in
             (*KOHYA_CONFIGS, "kohya_ss_lokr.json", "lets_queue.toml")]
    for i in range(mutations):
        name, raw = rng.choice(bases)
        data = bytearray(raw)
        for _ in range(rng.randint(1, 5)):
            pos = rng.randrange(max(1, len(data)))
            data[pos:pos + rng.randint(0, 12)] = rng.choice([b"\xff", b"[", b"{", b'"', b"=", b"\n", b"-1",
                                                             b"9" * 5000, b"nan", b",", b"true", b"\x00"])
        cases.append(Case(f"kohya-mutated-{i:03d}-{name}", bytes(data), suffix=Path(name).suffix))
    cases += [Case(f"kohya-{c.name}", c.data, c.kind) for c in _special_paths()]
    for i in range(20):
        cases.append(Case(f"kohya-random-{i:02d}", rng.randbytes(rng.choice([1, 50, 5000])),
                          suffix=rng.choice([".toml", ".json", ".sh", ".txt", ""])))
    return cases


def materialize(case: Case, folder: Path) -> tuple[Path, Path | None]:
    """Write `case` under `folder`: (the path to pass, the dataset file or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"case{case.suffix}"
    if case.kind == "file":
        path.write_bytes(case.data or b"")
    elif case.kind == "folder":
        path.mkdir()
    elif case.kind == "fifo":
        os.mkfifo(path)
    elif case.kind == "loop":
        path.symlink_to(path)
    dataset = None
    if case.dataset is not None:
        dataset = folder / "dataset.toml"
        dataset.write_bytes(case.dataset)
    return path, dataset
