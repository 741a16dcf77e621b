"""Shared fixtures: tiny SAM-family checkpoints built with the official builders and random weights,
saved in the official formats (a plain state dict through torch.save), and real photographs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lamsc.allocator import keep_freed_memory


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """A SAM-architecture model (ViT, dim 32, depth 2, one global block) from segment_anything's builder."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    model = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                       encoder_global_attn_indexes=[1], checkpoint=None)
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def mobilesam_checkpoint(tmp_path_factory):
    """MobileSAM (vit_t) from mobile_sam's builder, random weights, saved like the official mobile_sam.pt."""
    from lamsc.semcom.sam_architecture import mobile_sam

    torch.manual_seed(0)
    model = mobile_sam().build_sam_vit_t(checkpoint=None)
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def photo():
    """A real photograph (scikit-image's coffee, 400x600 RGB)."""
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def pytest_configure(config):
    """Under pytest-xdist each worker runs on its own share of the cores (two workers on two cores: one core
    each): torch, ONNX Runtime (lamsc.export.sessions.usable_cores) and the processes a test starts all
    follow the worker's CPU affinity, so that workers do not oversubscribe the CPU."""
    _refuse_ungrouped_loadgroup(config)
    keep_freed_memory()  # as the lamsc command runs: large freed blocks are reused, not re-faulted
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if workers < 2 or not worker.startswith("gw"):
        return
    if hasattr(os, "sched_setaffinity"):
        cores, i = sorted(os.sched_getaffinity(0)), int(worker[2:])
        share = cores[i % workers::workers] if len(cores) >= workers else [cores[i % len(cores)]]
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))
    else:  # no affinity call (macOS, Windows): threads alone divide the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _refuse_ungrouped_loadgroup(config):
    """``--dist loadgroup`` runs each xdist_group on one worker, which those groups' module fixtures rely on.
    pytest 9.2 makes pytest-xdist 3.8 drop the groups without a word (pytest-dev/pytest-xdist#1386)."""
    from importlib.metadata import version

    from packaging.version import Version

    if config.getoption("dist", "no") == "loadgroup" and Version(pytest.__version__).release >= (9, 2) \
            and Version(version("pytest-xdist")) <= Version("3.8.0"):
        raise pytest.UsageError(f"pytest {pytest.__version__} with pytest-xdist {version('pytest-xdist')} ignores "
                                "xdist_group under --dist loadgroup; install the test extra's pytest<9.2")


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global random state, whichever tests ran before it in this process."""
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip, saying why, where there is no CUDA device or no built kernel library."""
    if not any("gpu" in item.keywords for item in items):
        return
    from lamsc.kernels import library

    reason = None
    if not torch.cuda.is_available():
        reason = "needs a CUDA device (none here)"
    elif library() is None:
        reason = "needs build/liblamsc_kernels.so: cmake -S . -B build && cmake --build build"
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
