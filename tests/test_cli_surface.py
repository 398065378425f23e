"""The command line as a user meets it (issue 20 #9-#12): every option documented with its default, ``-q/--quiet``
everywhere, tqdm progress bars on long work only on a terminal, a fast and single error without network naming
every missing file, a one-line error naming the extra for a missing optional package, and ``convert`` output with
the usual file mode."""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _checkpoint_writers import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint
from PIL import Image

import cartoonseg
from cartoonseg import hub
from cartoonseg._cli import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
STANDALONE = ["cartoonseg.annotate.cli", "cartoonseg.depth.cli", "cartoonseg.inpaint.cli", "cartoonseg.kenburns.cli",
              "cartoonseg.puppet.cli", "cartoonseg.style.cli", "cartoonseg.tagger.cli"]


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command parser: ``python -m cartoonseg <cmd>`` and each application's stand-alone parser."""
    import importlib

    from cartoonseg.__main__ import build_parser
    from cartoonseg._cli import subcommand_parser

    def standalone(name: str) -> argparse.ArgumentParser:  # what ``python -m <area>`` parses (see _cli.area_main)
        mod = importlib.import_module(name)
        return mod.build_parser() if hasattr(mod, "build_parser") else subcommand_parser(mod.add_parsers, name)

    out = {}
    for parser in [build_parser()] + [standalone(m) for m in STANDALONE]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            out.update({f"{parser.prog} {k}": v for k, v in subs[0].choices.items()})
        else:
            out[parser.prog] = parser
    return out


def _undocumented(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """The options of ``parser`` whose --help lacks a text or (where there is one) the default."""
    problems = []
    if parser.formatter_class is not HelpFormatter:
        problems.append(f"{name}: --help does not use cartoonseg._cli.HelpFormatter")
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        described = formatter._get_help_string(action)
        if not described.strip():
            problems.append(f"{name} {label}: no help")
        elif (action.option_strings and action.default is not None and action.default is not False
              and action.default is not argparse.SUPPRESS and "default" not in described):  # 0 counts
            problems.append(f"{name} {label}: default {action.default!r} not shown")
    return problems


def test_every_option_is_documented_with_its_default():
    problems = []
    commands = _commands()
    assert {"python -m cartoonseg segment", "python -m cartoonseg convert", "python -m cartoonseg kenburns",
            "python -m cartoonseg.tagger"} <= set(commands)
    for name, parser in commands.items():
        options = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert any({"-q", "--quiet"} <= set(a.option_strings) for a in options), f"{name}: no -q/--quiet"
        problems += _undocumented(name, parser)
    assert not problems, "\n".join(problems)
    seg = commands["python -m cartoonseg segment"].format_help()
    assert "(default: 0.3)" in seg and "(default: 640)" in seg and "(default: cpu)" in seg
    assert "(default: 0)" in commands["python -m cartoonseg inpaint"].format_help()  # --seed




def test_tag_list_options_say_how_the_list_is_read():
    """--tags of inpaint-refine and kenburns (and the tagger's --exclude) said "comma separated" only, though the
    list is read by cartoonseg.tags.parse_tag_list: newlines separate too and \\, keeps a comma inside a tag name.
    The help texts now share one description, and show library constants (the prompt suffix, the default exclude
    list) built from the library's own."""
    from cartoonseg.inpaint.diffusion import PROMPT_SUFFIX
    from cartoonseg.tags import DEFAULT_EXCLUDE, join_tag_list, parse_tag_list

    assert parse_tag_list("a\\, b\nc, d") == ["a, b", "c", "d"]  # what the help describes
    commands = _commands()
    options = {"python -m cartoonseg inpaint-refine": "--tags", "python -m cartoonseg kenburns": "--tags",
               "python -m cartoonseg tag": "--exclude", "python -m cartoonseg.tagger": "--exclude"}
    for name, option in options.items():
        action = next(a for a in commands[name]._actions if option in a.option_strings)
        assert "newlines" in action.help and "\\, a comma inside a tag" in action.help, (name, action.help)
        assert "comma separated" not in action.help and "comma-separated" not in action.help, (name, action.help)
    refine = next(a for a in commands["python -m cartoonseg inpaint-refine"]._actions if "--tags" in a.option_strings)
    assert f"'<tags>, {PROMPT_SUFFIX}'" in refine.help
    exclude = next(a for a in commands["python -m cartoonseg tag"]._actions if "--exclude" in a.option_strings)
    assert f"'{join_tag_list(DEFAULT_EXCLUDE)}'" in exclude.help

def test_tagger_thresholds_have_one_home():
    """The tagger's default thresholds (0.35 general, 0.85 character) were literals in four library signatures, two
    CLIs and Tag Instances; they are cartoonseg.tags' constants now, so every face keeps the library's defaults."""
    import inspect

    from cartoonseg.tagger import WDTagger, tag_instances
    from cartoonseg.tags import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_GENERAL_THRESHOLD

    for fn in (WDTagger.select, WDTagger.tag, WDTagger.tag_batch, tag_instances):
        params = inspect.signature(fn).parameters
        assert params["general_threshold"].default == DEFAULT_GENERAL_THRESHOLD, fn
        assert params["character_threshold"].default == DEFAULT_CHARACTER_THRESHOLD, fn
    found = 0
    for name, parser in _commands().items():
        for action in parser._actions:
            if "--general-threshold" in action.option_strings:
                found += 1
                assert action.default == DEFAULT_GENERAL_THRESHOLD, name
            if "--character-threshold" in action.option_strings:
                assert action.default == DEFAULT_CHARACTER_THRESHOLD, name
    assert found >= 3  # tag, annotate, python -m cartoonseg.tagger


TRAIN_SCRIPTS = sorted(p.stem for p in (REPO / "train").glob("*.py") if not p.stem.startswith("_"))


def test_every_train_script_option_is_documented_with_its_default(capsys):
    """The train/ scripts' --help used to omit defaults (--log-interval, --amp, --split of train_detector)."""
    import importlib

    assert {"train_detector", "train_refiner", "evaluate", "synthesize", "chroma_key"} <= set(TRAIN_SCRIPTS)
    problems = []
    for script in TRAIN_SCRIPTS:
        module = importlib.import_module(f"train.{script}")
        with pytest.raises(SystemExit) as exit_:  # what a user sees
            module.main(["--help"])
        assert exit_.value.code == 0 and f"python -m train.{script}" in capsys.readouterr().out, script
        problems += _undocumented(f"train.{script}", module.build_parser())
    assert not problems, "\n".join(problems)
    module = importlib.import_module("train.train_detector")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for text in ("between log lines, >= 1 (default: 50)",
                 "needs its bf16 kernels (AVX-512; fast with AVX512-BF16/AMX) (default: auto)",
                 "DIR/annotations (default: train)"):
        assert text in shown, text


def test_every_seed_option_refuses_a_negative_seed_at_parsing(capsys):
    """numpy's generators refuse negative seeds: `puppet --seed -1` used to fail after loading and rigging with
    numpy's "expected non-negative integer". Every --seed (the commands and the train/ scripts) checks it first."""
    import subprocess

    from cartoonseg._cli import seed

    with_seed = [name for name, parser in _commands().items()
                 if any("--seed" in a.option_strings for a in parser._actions)]
    assert {"python -m cartoonseg puppet", "python -m cartoonseg inpaint", "python -m cartoonseg kenburns"} <= set(
        with_seed)
    for name in with_seed:
        parser = _commands()[name]
        action = next(a for a in parser._actions if "--seed" in a.option_strings)
        assert action.type is seed, name
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 2\*\*63\)"):
        seed("-1")
    assert seed("0") == 0 and seed(str(2**63 - 1)) == 2**63 - 1
    from cartoonseg.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["puppet", "x.png", "--out", "y.webp", "--seed", "-1"])
    assert exc.value.code == 2 and "--seed" in capsys.readouterr().err
    for script in ("train.synthesize", "train.make_fixtures", "train.train_detector"):
        proc = subprocess.run([sys.executable, "-m", script, "--help"], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0 and "--seed" in proc.stdout, script
        proc = subprocess.run([sys.executable, "-m", script, "--seed", "-1"], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and "argument --seed" in proc.stderr, (script, proc.stderr)
    from cartoonseg.puppet.motion import PresetMotion

    with pytest.raises(ValueError, match="seed"):
        PresetMotion("wave", seed=-1)


# ---------------------------------------------------------------------------------------------- progress bars
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), folder / "rtmdetl_e60.ckpt")
    save_flat_refiner_checkpoint(cartoonseg.build_refiner("tiny"), folder / "refine_last.ckpt")
    return folder


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_cli(argv: list[str], tty: bool, monkeypatch) -> tuple[int, str]:
    from cartoonseg.__main__ import main

    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    code = main([str(a) for a in argv])
    return code, stream.getvalue()


def test_progress_bars_on_a_terminal_only_and_never_with_quiet(tmp_path, weights, monkeypatch):
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    args = ["segment", image, "--out", tmp_path / "out", "--weights-dir", weights, "--no-download",
            "--score-thr", "0", "--max-instances", "3", "--det-size", "128"]
    code, err = _run_cli(args, True, monkeypatch)
    assert code == 0 and "images" in err and "instances" in err and "3/3" in err  # per image and per instance
    code, err = _run_cli([*args, "--quiet"], True, monkeypatch)
    assert code == 0 and err == ""
    code, err = _run_cli(args, False, monkeypatch)  # stderr is a pipe or a file: no bars
    assert code == 0 and err == ""
    # PatchMatch: one tick per EM iteration
    mask = tmp_path / "m.png"
    m = np.zeros((48, 64), np.uint8)
    m[10:30, 20:40] = 255
    Image.fromarray(m).save(mask)
    code, err = _run_cli(["inpaint", image, mask, "--out", tmp_path / "f.png"], True, monkeypatch)
    assert code == 0 and "iteration" in err
    code, err = _run_cli(["inpaint", image, mask, "--out", tmp_path / "f.png", "-q"], True, monkeypatch)
    assert code == 0 and err == ""



def test_segment_names_images_whose_stem_is_dots(tmp_path, weights, monkeypatch):
    """``..png`` and ``...png`` have the stems ``.`` and ``..``: segment stopped at them with "invalid output name
    '.'" (after the earlier images, the rest never segmented). Each now gets its own result folder inside --out."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("..png", "...png", "a.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / name, format="PNG")
    out = tmp_path / "out"
    args = ["segment", images, "--out", out, "--weights-dir", weights, "--no-download", "--refiner", "none",
            "--max-instances", "2", "--det-size", "128", "-q"]
    code, err = _run_cli(args, False, monkeypatch)
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 3 and "a" in folders and {f.split("-")[0] for f in folders} == {"_", "__", "a"}
    sources = {json.loads((out / f / "instances.json").read_text())["source"] for f in folders}
    assert sources == {str(images / n) for n in ("..png", "...png", "a.png")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # nothing written beside --out

# ---------------------------------------------------------------------------------------------- offline
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.network_probe
def test_no_network_is_found_fast_and_every_missing_file_is_named_once(tmp_path, monkeypatch, capsys):
    """No HF_HUB_OFFLINE, no network (a hub address that refuses): one error within seconds, naming both files
    with their URLs and destinations (huggingface_hub alone would retry ~20 s per file)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(hub, "_REACHABLE", {})
    from cartoonseg.__main__ import main

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    start = time.perf_counter()
    code = main(["segment", str(image), "--out", str(tmp_path / "o"), "--weights-dir", str(tmp_path / "w")])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    message = err[0]
    assert "2 weights files" in message and "no network" in message and message.count("no network") == 1
    for name in ("rtmdetl_e60.ckpt", "refine_last.ckpt"):
        assert f"/dreMaz/AnimeInstanceSegmentation/resolve/main/{name}" in message
        assert str(tmp_path / "w" / name) in message
    assert elapsed < 10, f"took {elapsed:.1f}s to notice there is no network"
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_missing_optional_package_is_one_line_naming_the_extra(tmp_path):
    """``cartoonseg depth`` after ``pip install .`` without the 'depth' extra: one error line, status 2."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from cartoonseg.__main__ import main\n"
            f"sys.exit(main(['depth', {str(image)!r}, '--out', {str(tmp_path / 'd.png')!r}, '--no-download']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'cartoonseg[depth]'" in lines[0], lines


def test_convert_writes_files_with_the_usual_mode(tmp_path):
    """safetensors writes 0600 files; ``convert`` output follows the umask like any file (0644 under 022)."""
    from cartoonseg.__main__ import main

    src = save_flat_refiner_checkpoint(cartoonseg.build_refiner("tiny"), tmp_path / "r.ckpt")
    old = os.umask(0o022)
    try:
        assert main(["convert", str(src), str(tmp_path / "r.safetensors")]) == 0
        os.umask(0o027)
        assert main(["convert", str(src), str(tmp_path / "r2.safetensors")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r2.safetensors").stat().st_mode) == 0o640
