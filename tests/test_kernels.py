"""Kernels: references against independent checks everywhere; CUDA against the references on a GPU;
the CMake build wherever nvcc is installed."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lamsc.semcom.asc_levels import depth_levels
from lamsc.semcom.asc_pack import asc_pack, asc_unpack
from lamsc.semcom.payload import Features, assemble, depth_map_section, level_bits, pack, parse, unpack

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(16, 1, 1), (16, 3, 5), (16, 17, 29), (8, 64, 64), (32, 33, 47), (16, 128, 128)]


def _inputs(c, h, w, seed, depth_kind="random"):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(c, h, w, generator=g) * 2
    depth = {"random": torch.rand(h, w, generator=g), "all": torch.ones(h, w),
             "least": torch.full((h, w), 1e-3)}[depth_kind]
    return values, depth


@pytest.mark.parametrize("c,h,w", SIZES)
@pytest.mark.parametrize("depth_kind", ["random", "all", "least"])
def test_asc_reference_is_the_payload_writer(c, h, w, depth_kind):
    values, depth = (t.numpy() for t in _inputs(c, h, w, seed=h * w, depth_kind=depth_kind))
    packed = asc_pack(values, depth, 8, 8)
    assert packed.backend == "reference"
    features = Features(values, packed.levels, 8)
    depth_map, coded = depth_map_section(packed.levels, 8)  # the shorter of the bit-packed and range-coded maps
    payload = assemble(h * 8, w * 8, (c, h, w), 8, 8, packed.scale, None, depth_map, packed.value_bytes,
                       depth_coded=coded)
    assert payload == pack(features, h * 8, w * 8, 8)
    assert parse(payload).level_bytes == packed.level_bytes  # what the CUDA unpack reads, after a coded map too
    restored, backend = asc_unpack(parse(payload))
    assert backend == "reference"
    assert np.array_equal(restored, unpack(payload).features.values)
    assert packed.count == features.kept_count


def test_cmake_builds_the_kernels(tmp_path):
    if shutil.which("nvcc") is None or shutil.which("cmake") is None:
        pytest.skip("needs nvcc and cmake on PATH (CI has both)")
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build)], check=True, capture_output=True)
    done = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lib = ctypes.CDLL(str(build / "liblamsc_kernels.so"))  # loads without a GPU: CUDA starts on first call
    for symbol in ("lamsc_asc_pack", "lamsc_asc_unpack"):
        assert hasattr(lib, symbol)


@pytest.mark.gpu
@pytest.mark.parametrize("c,h,w", SIZES + [(16, 1, 1000), (16, 128, 192)])
@pytest.mark.parametrize("depth_kind", ["random", "all", "least"])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_asc_kernels_are_bit_identical_to_the_reference(c, h, w, depth_kind, bits):
    for seed in range(3):  # fresh random inputs each time
        values, depth = (t.numpy() for t in _inputs(c, h, w, seed * 7919 + h, depth_kind))
        ref = asc_pack(values, depth, 8, bits)
        got = asc_pack(values, depth, 8, bits, "cuda")
        assert got.backend == "cuda"
        assert np.array_equal(got.levels, ref.levels)
        assert got.scale == ref.scale and got.count == ref.count
        assert got.level_bytes == ref.level_bytes and got.value_bytes == ref.value_bytes
        payload = assemble(h * 8, w * 8, (c, h, w), 8, bits, ref.scale, None, ref.level_bytes, ref.value_bytes)
        restored, backend = asc_unpack(parse(payload), "cuda")
        assert backend == "cuda"
        assert np.array_equal(restored.cpu().numpy(), asc_unpack(parse(payload))[0])


@pytest.mark.parametrize("c,h,w", SIZES[:4])
def test_torch_pack_path_matches_the_reference(c, h, w):
    from lamsc.kernels.asc import asc_pack_torch

    values, depth = _inputs(c, h, w, seed=c + h)
    level_bits_t, value_bytes_t, scale = asc_pack_torch(values, depth_levels(depth, 8), 8, 8, level_bits(8))
    ref = asc_pack(values.numpy(), depth.numpy(), 8, 8)
    assert bytes(value_bytes_t.numpy()) == ref.value_bytes and bytes(level_bits_t.numpy()) == ref.level_bytes
    assert scale == ref.scale


@pytest.mark.parametrize("module", ["lamsc.kernels", "lamsc.semcom", "lamsc.kernels.asc", "lamsc.semcom.asc_pack"])
def test_each_package_imports_first(module):
    """A fresh process importing the kernels first (as benchmarks/kernels_bench.py does) or the model first."""
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
