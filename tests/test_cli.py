"""The lamsc command: help, version, the demo, and the one-namespace layout."""

import importlib
import inspect
import json
import re
import os
import subprocess
import sys

import pytest
import typer
from PIL import Image

from lamsc import __version__
from lamsc.allocator import KEEP_BYTES, user_tunes_malloc
from lamsc.cli import COMMANDS, app, command_summary, main
from lamsc.commands.demo import DEMO_MAX_RATE_INCREASE
from lamsc.semcom.config import REFERENCE_CBR
from lamsc.semcom.images import BUNDLED_PHOTOS


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lamsc {__version__}"


def test_a_run_imports_only_its_own_commands_code():
    """``lamsc --version`` and the root's help load no command, ``lamsc transmit`` not the compression stack
    (torch_pruning, NNCF)."""
    code = ("import sys\nfrom lamsc.cli import main\nmain(sys.argv[1:])\n"
            "print(sorted(m for m in ('torch', 'torch_pruning', 'nncf') if m in sys.modules))")
    loaded = {args[0]: subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1]
              for args in (["--version"], ["--help"], ["transmit", "--help"])}
    assert loaded == {"--version": "[]", "--help": "[]", "transmit": "['torch']"}


@pytest.mark.parametrize("args", [["--help"], ["--help", "transmit"]])  # the root's --help wins over a command
def test_help_lists_every_subcommand(args, capsys):
    assert main(args) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^│ (\w+) ", out, re.MULTILINE)  # the first column of the Commands panel
    assert sorted(listed) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_root_help_summarises_each_command_by_its_own_help(name):
    """The root's help reads each summary from the command's source; it is the help the imported command has."""
    command = getattr(importlib.import_module(f"lamsc.commands.{name}"), name)
    own = command.info.help if isinstance(command, typer.Typer) else inspect.getdoc(command)
    assert command_summary(name) == own and own


def test_usage_errors_are_one_message_and_status_2(capsys):
    assert main(["segment"]) == 2
    assert main(["export", "--precision-typo", "int8"]) == 2
    err = capsys.readouterr().err
    # click's wording differs between typer's vendored copy (0.29+) and the click older typers use
    assert "missing argument 'images" in err.lower() and "no such option" in err.lower() and "--precision-typo" in err
    assert "Traceback" not in err
    assert main(["transmt"]) == 2
    assert capsys.readouterr().err.count("'transmit'") == 1  # one suggestion, whichever of click and typer gives it


def test_demo_writes_overlays_and_overview(tmp_path, capsys):
    # the demo's own path on three of its photographs and a short distillation: the job, in a fraction of its time
    assert main(["demo", "--out", str(tmp_path), "--json", "--photos", "3", "--steps", "8"]) == 0
    overview = Image.open(tmp_path / "overview.png")
    assert overview.width >= 320 and overview.height >= 320
    assert len(list((tmp_path / "segments").glob("*_segments.png"))) == 3
    captured = capsys.readouterr()
    out = captured.out
    assert '"segmenter": "fallback' in out
    # piped stderr carries the status lines alone: no blank line left behind by a progress bar
    assert all(line.strip() for line in captured.err.strip().splitlines()), captured.err
    # every photograph at every SNR sent within the field's budget, header and depth map included
    for rows in json.loads(out)["results"]["transmit"].values():
        assert len(rows) == 3 and all(0.5 * REFERENCE_CBR < r["lamsc"]["cbr"] <= REFERENCE_CBR for r in rows)
    # Which candidate fits depends on this machine's timing; the rule the choice follows does not.
    compressed = json.loads(out)["results"]["compress"]
    students = [c for c in compressed["candidates"] if c["name"] == "prune-0.50-fp32"]
    assert len(students) == 1 and students[0]["cost"]["latency_ms"] > 0
    limit = compressed["budget"]["latency_ms"]
    assert limit == pytest.approx(0.6 * compressed["teacher"]["cost"]["latency_ms"], rel=1e-3)
    fits = [c for c in compressed["candidates"] if c["cost"]["latency_ms"] <= limit
            and c["quality"]["bits_x_teacher"] <= 1 + DEMO_MAX_RATE_INCREASE]
    if fits:
        assert compressed["chosen"]["name"] == max(fits, key=lambda c: c["quality"]["psnr"])["name"]
    else:
        assert compressed["chosen"] is None and compressed["shortfall"]


def test_demo_refuses_counts_out_of_range_before_any_work(tmp_path, capsys):
    for flags in (["--photos", "0"], ["--photos", str(len(BUNDLED_PHOTOS) + 1)], ["--steps", "0"]):
        assert main(["demo", "--out", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err
        assert flags[0] in err and "Traceback" not in err
    assert not (tmp_path / "segments").exists()  # refused before any work


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_freed_memory_serves_a_large_block_from_the_heap():
    """glibc's own accounting (mallinfo2: bytes in mmapped blocks) says where a 100 MiB block came from:
    mapped for it alone by default, from the heap once freed blocks are kept; a malloc setting of the user's
    own leaves the default in place."""
    code = ("import ctypes, numpy as np\n"
            "from lamsc.allocator import keep_freed_memory\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks "
            "uordblks fordblks keepcost'.split()]\n"
            "libc = ctypes.CDLL(None)\n"
            "libc.mallinfo2.restype = Info\n"
            "a = np.ones(100 << 20, np.uint8)\n"
            "mapped = libc.mallinfo2().hblkhd\n"
            "del a\n"
            "kept = keep_freed_memory()\n"
            "a = np.ones(100 << 20, np.uint8)\n"
            "print(mapped >= 100 << 20, kept, libc.mallinfo2().hblkhd < 100 << 20)\n")
    env = {k: v for k, v in os.environ.items() if not user_tunes_malloc({k: v})}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if "mallinfo2" in done.stderr:
        pytest.skip("a C library without mallinfo2 (glibc before 2.33, or not glibc)")
    mapped, kept, from_heap = done.stdout.split()
    if 0 < int(kept) < 100 << 20:
        pytest.skip(f"this glibc keeps blocks up to {int(kept) >> 20} MiB only")
    assert (mapped, kept, from_heap) == ("True", str(KEEP_BYTES), "True"), done.stderr
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert done.stdout.split() == ["True", "0", "False"], done.stderr
    assert user_tunes_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not user_tunes_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "PATH": "/bin"})


def test_stage_folders_import_only_under_lamsc(tmp_path):
    code = ("import importlib\n"
            "for bare in ('semcom', 'compress', 'export', 'runtime'):\n"
            "    try:\n"
            "        importlib.import_module(bare)\n"
            "    except ModuleNotFoundError:\n"
            "        pass\n"
            "    else:\n"
            "        raise SystemExit(f'{bare} is importable under a bare name')\n"
            "for stage in ('semcom', 'compress', 'export', 'runtime'):\n"
            "    importlib.import_module('lamsc.' + stage)\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_a_built_wheel_holds_every_package(tmp_path):
    """A non-editable install (a wheel, as on a Jetson or a GPU machine) has every subpackage of the source
    tree and the shipped model, not only what an editable install happens to reach."""
    import zipfile
    from pathlib import Path

    import shutil

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # setuptools builds in the tree it is given: a copy keeps the checkout clean
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(".git", ".venv", ".whl", "build", "lamsc-out",
                                                                "results", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("lamsc-*.whl"))).namelist()
    folders = {"lamsc": root / "lamsc", "lamsc/semcom": root / "semcom", "lamsc/compress": root / "compress",
               "lamsc/export": root / "export", "lamsc/runtime": root / "runtime", "lamsc/kernels": root / "kernels",
               "lamsc/retrieval": root / "retrieval"}
    for prefix, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            module = f"{prefix}/{init.relative_to(folder).as_posix()}"
            assert module in names, f"{module} is not in the wheel: add its package to pyproject.toml"
    assert any(n.startswith("lamsc/semcom/default_model/") and n.endswith(".safetensors") for n in names)
    assert any(n.startswith("lamsc/retrieval/default_fusion/") and n.endswith(".safetensors") for n in names)


def test_ci_runs_the_readme_test_command():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme_commands = root.joinpath("README.md").read_text().split("```")[1].splitlines()[1:3]
    assert "lamsc demo" in readme_commands[0] and "pytest" in readme_commands[1]
    assert readme_commands[1] in root.joinpath(".ci", "run").read_text().splitlines()


def test_json_stdout_holds_only_the_document(capsys):
    from lamsc.commands.output import emit_json, json_only_stdout

    with json_only_stdout():
        print("Statistics collection 100%")  # what NNCF prints while it quantises
        emit_json("x", {"a": 1})
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"name": "x", "results": {"a": 1}}
    assert "Statistics collection" in captured.err


def test_help_shows_no_python_type_placeholders(capsys):
    """On/off flags take no value and list parameters take paths: --help says so, not <bool> or <list[Path]>."""
    for command in ("transmit", "segment", "train", "compress", "export", "profile", "demo"):
        main([command, "--help"])
        out = capsys.readouterr().out
        assert "--json" in out and "<bool>" not in out and "<list[" not in out, command
    main(["compress", "--help"])
    assert "PATH..." in capsys.readouterr().out
    main(["export", "--help"])  # a positional argument's help is shown beside it
    assert "lamsc model (.safetensors with its .json)" in capsys.readouterr().out


@pytest.mark.parametrize("flags,message", [
    (["--points-per-side", "0"], "'--points-per-side': 0 is not in the range x>=1"),
    (["--points-per-side", "16", "--min-area", "100"], "--points-per-side, --min-area set SAM's mask generation"),
])
def test_segment_refuses_sam_settings_it_cannot_use(flags, message, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48), "grey").save(image)
    assert main(["segment", str(image), "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*_segments.png"))


@pytest.mark.parametrize("flags,message", [
    (["--snr", "inf"], "give a finite one"),
    (["--backend", "tensorrt"], "runs an exported bundle"),
    (["--backend", "onnx"], "unknown backend 'onnx'; choose one of torch, onnxruntime, tensorrt"),
    (["--cbr", "0.02", "--no-asc"], "needs ASC on"),
    (["--digital", "--kept", "0"], "a kept fraction of 0: give one in (0, 1]"),
])
def test_transmit_refuses_what_it_cannot_do_in_one_line(flags, message, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48), "grey").save(image)
    assert main(["transmit", str(image), "--out", str(tmp_path), *flags]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert "note:" not in captured.out + captured.err  # no note about a value then refused


def test_the_readmes_python_example_runs(capsys):
    """The README's Python quick start, run as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("LinkResult(name='lamsc', bits=") and "lost=False" in printed


@pytest.mark.parametrize("command", [["profile", "{missing}"], ["transmit", "{image}", "--model", "{missing}"]])
def test_a_missing_bundle_or_model_is_named_as_either(command, tmp_path, capsys):
    image, missing = tmp_path / "x.png", tmp_path / "nothing-here"
    Image.new("RGB", (64, 48), "grey").save(image)
    args = [a.format(image=image, missing=missing) for a in command]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{missing} not found: give an exported bundle folder" in err and ".safetensors" in err


def test_one_name_per_input_across_commands():
    """A SAM checkpoint for the SKB is --checkpoint wherever a command takes one (compress's --sam is the model it
    compresses), a lamsc model alone is MODEL or --model (profile's SOURCE is a model or a bundle)."""
    for name in COMMANDS:
        main([name, "--help"])
    root = typer.main.get_command(app)
    commands = [(n, c) for n, c in root.commands.items()]
    commands += [(f"{n} {s}", sub) for n, c in root.commands.items() for s, sub in getattr(c, "commands", {}).items()]
    seen = 0
    for name, command in commands:
        for param in command.params:
            if "checkpoint" in param.name:
                assert "--checkpoint" in param.opts, (name, param.opts)
                seen += 1
            if param.name == "model":
                assert param.opts == ["--model"] or param.human_readable_name == "MODEL", (name, param.opts)
    assert seen >= 6
