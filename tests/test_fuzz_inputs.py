"""Fuzzed configs give no traceback: `python -m backend validate` and `import-config` answer every case of
the seeded corpus (tests/_fuzz_corpus.py) with exit 2 and lines naming the file or the field (or, for an
import that still makes sense, exit 0 with its report). The bulk runs in-process through the CLI's own
`main` (about 8 000 cases, a few milliseconds each with the parser built once); a sample of the nastiest
cases runs through the real command in a subprocess."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backend.__main__ as cli
from backend.paths import PROJECT_ROOT
from tests._fuzz_corpus import Case, kohya_corpus, materialize, toml_corpus

LINE = re.compile(r"^\S[^\n]*?: \S")   # "dotted.path: message" or "file: message"


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "data" / "10_char").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"not a model")
    return root


@pytest.fixture(scope="module")
def parser():
    return cli.build_parser()   # built once: main() would rebuild it for every case


def run_main(argv: list[str], parser, monkeypatch) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def check_validate_answer(case: Case, code: int, stderr: str) -> None:
    assert code == 2, (case.name, code, stderr[:500])
    lines = stderr.strip().splitlines()
    assert lines, case.name
    for line in lines:
        assert LINE.match(line) and len(line) <= 2200, (case.name, line[:300])


def test_fuzzed_toml_configs_never_give_a_traceback_in_validate(fuzz_root, parser, monkeypatch):
    cases = toml_corpus()
    assert len(cases) > 3000
    failures = []
    for i, case in enumerate(cases):
        path, _ = materialize(case, fuzz_root / "toml" / str(i))
        try:
            code, _, stderr = run_main(["validate", str(path), "--workspace", str(fuzz_root / "ws")], parser,
                                       monkeypatch)
            check_validate_answer(case, code, stderr)
        except Exception as err:  # noqa: BLE001 - collect every case that escapes, with its name
            failures.append(f"{case.name}: {type(err).__name__}: {str(err)[:300]}")
    assert failures == []


def test_fuzzed_kohya_inputs_never_give_a_traceback_in_import_config(fuzz_root, parser, monkeypatch):
    cases = kohya_corpus(fuzz_root)
    assert len(cases) > 4000
    failures, codes = [], {0: 0, 2: 0}
    for i, case in enumerate(cases):
        path, dataset = materialize(case, fuzz_root / "kohya" / str(i))
        argv = ["import-config", str(path), "--workspace", str(fuzz_root / "ws")]
        argv += ["--dataset", str(dataset)] if dataset else []
        try:
            code, _, stderr = run_main(argv, parser, monkeypatch)
            assert code in (0, 2), (case.name, code)
            if code == 2:
                assert stderr.startswith("error: ") and LINE.match(stderr[7:]), (case.name, stderr[:300])
            codes[code] += 1
        except Exception as err:  # noqa: BLE001 - collect every case that escapes, with its name
            failures.append(f"{case.name}: {type(err).__name__}: {str(err)[:300]}")
    assert failures == []
    assert codes[0] > 50 and codes[2] > 50, codes   # both answers are exercised


SUBPROCESS_TOML = ("number-5000-digit-rank", "defaults-full-invalid-ff", "deep-array-100000", "is-a-folder",
                   "random-bytes-03", "deep-dotted-key-100000")
SUBPROCESS_KOHYA = ("kohya_ss_lokr.json-raw-deep", "kohya_ss_lokr.json-raw-huge-int", "command-unbalanced-quote.sh",
                    "kohya-lora_sd15.toml-network_alpha-huge-int")


def test_the_real_commands_answer_the_worst_cases_in_one_line_each(fuzz_root):
    chosen = [("validate", c) for c in toml_corpus() if c.name in SUBPROCESS_TOML]
    chosen += [("import-config", c) for c in kohya_corpus(fuzz_root) if c.name in SUBPROCESS_KOHYA]
    assert len(chosen) == len(SUBPROCESS_TOML) + len(SUBPROCESS_KOHYA)
    for i, (command, case) in enumerate(chosen):
        path, _ = materialize(case, fuzz_root / "sub" / str(i))
        res = subprocess.run([sys.executable, "-m", "backend", command, str(path), "--workspace",
                              str(fuzz_root / "ws")], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in res.stderr, (case.name, res.stderr[-2000:])
        if command == "validate":
            check_validate_answer(case, res.returncode, res.stderr)
            assert len(res.stderr.strip().splitlines()) == 1, (case.name, res.stderr)
        else:
            assert res.returncode in (0, 2), (case.name, res.returncode)
