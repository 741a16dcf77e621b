"""The deployment runtime without torch (lamsc[edge]): a bundle runs end to end, segment to metrics and energy,
and sends the same payload bytes as the full install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lamsc.export.bundle import write_bundle
from lamsc.runtime.profiler import ProfileConfig, profile_link
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.entropy import load_entropy_model
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model

BLOCKER = Path(__file__).with_name("edge_blocker.py")
# a venv with `pip install lamsc[edge]` alone (.ci/run makes one); unset or empty: the tests that need it skip
EDGE_PYTHON = os.environ.get("LAMSC_EDGE_PYTHON") or None
if EDGE_PYTHON:
    EDGE_PYTHON = os.path.abspath(EDGE_PYTHON)  # not resolved: the venv is its link, not the interpreter behind it


# the module's fixtures are built once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("edge")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(load_model(), tmp_path_factory.mktemp("edge") / "bundle", "fp32",
                        images=bundled_photos(["chelsea"]), entropy=load_entropy_model(DEFAULT_MODEL))


def full_install_payloads(bundle, images, out: Path, radio: str = "wifi") -> dict[str, str]:
    result = profile_link(ProfileConfig(bundle.root, "onnxruntime", images, radio=radio, repeats=1, out=out))
    return {r["image"]: r["lamsc"]["payload_sha256"] for r in result.images}


def edge_payloads(python: list[str], bundle, images, out: Path, radio: str = "wifi") -> tuple[dict[str, str], str]:
    args = ["profile", str(bundle.root), "--backend", "onnxruntime", "--radio", radio, "--repeats", "1", "--json",
            "--out", str(out)]
    for i in images:
        args += ["--images", str(i)]
    done = subprocess.run([*python, *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)["results"]["images"]
    return {r["image"]: r["lamsc"]["payload_sha256"] for r in rows}, done.stderr


@pytest.mark.parametrize("radio", ["wifi", "sdr"])  # the digital mode (entropy-coded) and the analog link
def test_a_bundle_runs_with_the_full_toolkit_unimportable(bundle, tmp_path, radio):
    files = []
    for item in bundled_photos(["coins", "rocket"]):
        files.append(tmp_path / f"{item.name}.png")
        Image.fromarray(item.pixels).save(files[-1])
    got, stderr = edge_payloads([sys.executable, str(BLOCKER)], bundle, files, tmp_path / "edge", radio)
    assert "imported: []" in stderr  # nothing on the path even tried torch, SAM, Sionna, faiss...
    assert got == full_install_payloads(bundle, files, tmp_path / "full", radio)


def test_a_command_of_the_full_toolkit_says_what_to_install():
    done = subprocess.run([sys.executable, str(BLOCKER), "compress", "--budget", "latency-ms=60%"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pip install 'lamsc[full]'" in lines[0] and "torch" in lines[0]


@pytest.mark.skipif(EDGE_PYTHON is None, reason="set LAMSC_EDGE_PYTHON to a lamsc[edge] venv's python "
                                                "(.ci/run makes one)")
def test_the_edge_install_has_no_torch_and_sends_the_full_installs_bytes(bundle, tmp_path):
    for package in ("torch", "segment_anything", "sionna"):
        probe = subprocess.run([EDGE_PYTHON, "-c", f"import {package}"], capture_output=True)
        assert probe.returncode != 0, f"{package} is installed in the edge venv"
    got, _ = edge_payloads([EDGE_PYTHON, "-m", "lamsc.cli"], bundle, [], tmp_path / "edge")  # bundled photographs
    assert got == full_install_payloads(bundle, None, tmp_path / "full")
