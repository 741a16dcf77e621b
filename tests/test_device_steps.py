"""The steps an export writes for the device, JETSON.md and build_engines.sh, name only what exists: pip
extras that pyproject.toml declares, libraries the CMake build produces, trtexec options TensorRT 10
documents, and files in the folder each step says it runs in."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lamsc.export.bundle import PRECISIONS, Bundle, write_bundle
from lamsc.export.device_steps import CMAKE_MINIMUM, write_device_steps
from lamsc.export.tensorrt import TRTEXEC_OPTIONS
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.model import LamscModel

ROOT = Path(__file__).resolve().parents[1]  # lamsc's source tree
FOLDERS = {"lamsc's source tree": "source", "this bundle's folder": "bundle"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle of a small random model, verified on one photograph."""
    torch.manual_seed(0)
    model = LamscModel(ModelConfig(channels=8, width=16, num_levels=4, segments=2)).eval()
    return write_bundle(model, tmp_path_factory.mktemp("export") / "tiny-bundle", "fp32",
                        images=bundled_photos(["coffee"]))


@pytest.fixture(scope="module", params=PRECISIONS)
def device(request, bundle, tmp_path_factory) -> SimpleNamespace:
    """A copy of the bundle with the device steps written for its graphs at each precision (they read only
    the manifest)."""
    out = tmp_path_factory.mktemp(request.param) / "tiny-bundle"
    shutil.copytree(bundle.root, out)
    write_device_steps(Bundle(out, {**bundle.manifest, "precision": request.param}))
    return SimpleNamespace(root=out, precision=request.param, graphs=bundle.graphs)


@pytest.fixture(scope="module")
def cmake_outputs(bundle, tmp_path_factory) -> set[str]:
    """The files the CMake build produces: configured with the options JETSON.md gives, where cmake and
    nvcc are here (CMake's file API names each target's artifacts), else add_library's SHARED targets."""
    shared = {f"lib{name}.so" for name in re.findall(r"add_library\((\w+)\s+SHARED", cmake_lists())}
    if shutil.which("cmake") is None or (shutil.which("nvcc") is None and "CUDACXX" not in os.environ):
        return shared
    configure = shlex.split(cmake_step(bundle.root)["configure"])
    options = [a for a in configure[1:] if a.startswith("-D")]
    build = tmp_path_factory.mktemp("cmake")
    (build / ".cmake/api/v1/query").mkdir(parents=True)
    (build / ".cmake/api/v1/query/codemodel-v2").touch()
    done = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *options], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reply = build / ".cmake/api/v1/reply"
    index = json.loads(max(reply.glob("index-*.json")).read_text())
    codemodel = next(o for o in index["objects"] if o["kind"] == "codemodel")
    targets = json.loads((reply / codemodel["jsonFile"]).read_text())["configurations"][0]["targets"]
    built = {Path(a["path"]).name for t in targets
             for a in json.loads((reply / t["jsonFile"]).read_text()).get("artifacts", [])}
    assert built == shared  # what the parse would have said
    return built


def cmake_lists() -> str:
    return (ROOT / "CMakeLists.txt").read_text()


def jetson_steps(md: str) -> tuple[dict[str, str], list[tuple[str, str, list[str]]]]:
    """JETSON.md's folders ({"source" | "bundle": path on the device}) and its numbered steps as
    (text, folder kind the text names, command lines of its code block)."""
    folders = {FOLDERS[name]: path for name, path in re.findall(r"^- (.+?) \(.*copied to `([^`]+)`", md, re.M)}
    steps = []
    for text in re.split(r"^\d+\. ", md, flags=re.M)[1:]:
        named = re.search(r"\b[Ii]n (lamsc's source tree|this bundle's folder)", text)
        blocks = re.findall(r"```\n(.*?)```", text, re.S)
        commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
        steps.append((text, FOLDERS[named.group(1)] if named else None, commands))
    return folders, steps


def cmake_step(bundle_dir: Path) -> dict[str, str]:
    """The configure command of JETSON.md and the build folder it names."""
    _, steps = jetson_steps((bundle_dir / "JETSON.md").read_text())
    line = next(c for _, _, commands in steps for c in commands if c.startswith("cmake -S"))
    configure = line.split("&&")[0].strip()
    args = shlex.split(configure)
    return {"configure": configure, "source": args[args.index("-S") + 1], "build": args[args.index("-B") + 1]}


def trtexec_lines(bundle_dir: Path) -> list[list[str]]:
    script = (bundle_dir / "build_engines.sh").read_text()
    return [shlex.split(line) for line in script.splitlines() if line.startswith("trtexec ")]


def test_pip_extras_are_those_pyproject_declares(device):
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    md = (device.root / "JETSON.md").read_text()
    _, parsed = jetson_steps(md)
    named = [set(spec.split(",")) for _, _, commands in parsed for c in commands if c.startswith("pip install")
             for spec in re.findall(r"\[([\w,-]+)\]", c)]
    named += [{name} for name in re.findall(r"the `([\w-]+)` extra", md)]
    named += [set(spec.split(",")) for spec in re.findall(r"lamsc\[([\w,-]+)\]", md)]
    assert named  # the install names lamsc's extras
    for spec in named:
        assert spec <= extras, spec


def test_libraries_named_are_what_the_cmake_build_produces(device, cmake_outputs):
    md = (device.root / "JETSON.md").read_text()
    named = set(re.findall(r"\blib\w+\.so\b", md + (device.root / "build_engines.sh").read_text()))
    assert named and named <= cmake_outputs, named - cmake_outputs
    # where the build step writes the library is where the profile step has lamsc load it from
    folders, parsed = jetson_steps(md)
    cmake = cmake_step(device.root)
    exported = [c.split("=", 1)[1] for _, _, commands in parsed for c in commands
                if c.startswith("export LAMSC_KERNELS_LIB=")]
    assert exported and all(Path(p).name in cmake_outputs for p in exported)
    assert {str(Path(p).parent) for p in exported} == {f"{folders['source']}/{cmake['build']}"}
    assert f"cmake_minimum_required(VERSION {CMAKE_MINIMUM})" in cmake_lists()  # the version JETSON.md asks for


def test_trtexec_options_are_documented_for_tensorrt_10(device):
    lines = trtexec_lines(device.root)
    assert [Path(a.split("=", 1)[1]).stem for args in lines for a in args if a.startswith("--onnx=")] == device.graphs
    for args in lines:
        assert {a.split("=")[0] for a in args[1:]} <= TRTEXEC_OPTIONS, args
    precision = {"fp32": set(), "fp16": {"--fp16"}, "int8": {"--int8", "--fp16"}}[device.precision]
    assert all({a for a in args if a in ("--fp16", "--int8")} == precision for args in lines)


def test_every_step_runs_in_the_folder_it_names(device):
    """Each step that has commands starts in the folder its text names, and what it uses is in that folder."""
    md = (device.root / "JETSON.md").read_text()
    folders, parsed = jetson_steps(md)
    assert set(folders) == {"source", "bundle"} and folders["bundle"].endswith("/" + device.root.name)
    here = {"source": ROOT, "bundle": device.root}  # each folder of the device, as it is on this machine
    with_commands = [(kind, commands) for _, kind, commands in parsed if commands]
    assert {kind for kind, _ in with_commands} == {"source", "bundle"}
    for kind, commands in with_commands:
        assert commands[0] == f"cd {folders[kind]}", commands
        folder = here[kind]
        for c in commands[1:]:
            args = shlex.split(c.split("&&")[0])
            if args[0] == "sh":
                assert (folder / args[1]).is_file(), c
            elif args[:2] == ["pip", "install"] and "--index-url" not in args and not args[2].startswith("cmake"):
                assert (folder / args[2].split("[")[0] / "pyproject.toml").is_file(), c
            elif args[:2] == ["cmake", "-S"]:
                assert (folder / args[2] / "CMakeLists.txt").is_file(), c
            elif args[:2] == ["lamsc", "profile"]:
                assert (folder / args[2] / "manifest.json").is_file(), c


def test_the_masking_runs_after_the_transmitter_engine_and_no_plugin_is_named(device):
    md, script = (device.root / "JETSON.md").read_text(), (device.root / "build_engines.sh").read_text()
    prose = " ".join(md.split())
    assert "runs after the transmitter engine, as lamsc's CUDA kernel from `liblamsc_kernels.so`" in prose
    assert "plugin" not in md.lower() and "plugin" not in script.lower()


def test_build_engines_runs_in_the_bundle_folder_from_anywhere(device, tmp_path):
    """build_engines.sh with a stand-in trtexec that needs each ONNX file it is given and writes the engine:
    called from another folder, it reads and writes in the bundle's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    stub = bin_dir / "trtexec"
    stub.write_text('#!/bin/sh\necho "$(pwd)" >> "$TRTEXEC_LOG"\n'
                    'for a in "$@"; do case "$a" in\n'
                    '  --onnx=*) test -f "${a#--onnx=}" || exit 3 ;;\n'
                    '  --saveEngine=*) : > "${a#--saveEngine=}" ;;\n'
                    'esac; done\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TRTEXEC_LOG": str(log)}
    done = subprocess.run(["sh", str(device.root / "build_engines.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == [str(device.root)] * len(device.graphs)
    for name in device.graphs:
        assert (device.root / "engines" / f"{name}.engine").is_file()
