"""``lamsc transmit --json`` against a stored answer on a fixed seed: the document's keys and values.

Regenerate only on request, when a change is meant to alter what users see:

    LAMSC_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_golden.py

Timings and paths are this machine's and are compared by key only. Quality figures are compared within a
tolerance that covers float arithmetic on other CPUs (0.01 dB, 1e-4 SSIM), and the rate within 1%: a feature
whose ASC depth sits on a level boundary may take the other level there. Everything else exactly.
"""

import json
import math
import os
from pathlib import Path

import pytest

from lamsc.cli import main

GOLDEN = Path(__file__).parent / "golden"
BY_KEY_ONLY = {"seconds", "picture", "received"}
TOLERANCE = {"psnr": 0.01, "ssim": 1e-4, "ms_ssim": 1e-4}  # absolute
RELATIVE = {"bits": 0.01, "channel_uses": 0.01, "cbr": 0.01, "kept_ratio": 0.01, "side_bits": 0.01, "coded_bits": 0.01}


def compare(got, want, where="document"):
    """Every difference as "path: got vs want"."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else got} vs {sorted(want)}"]
        return [d for k in want if k not in BY_KEY_ONLY for d in compare(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: {got} vs {want}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{where}[{i}]")]
    key = where.rsplit(".", 1)[-1]
    if key in TOLERANCE or key in RELATIVE:
        ok = isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=RELATIVE.get(key, 0),
                                                            abs_tol=TOLERANCE.get(key, 0))
        return [] if ok else [f"{where}: {got} vs {want}"]
    return [] if got == want else [f"{where}: {got} vs {want}"]


@pytest.mark.parametrize("case,args", [
    ("transmit_awgn10", ["--snr", "10"]),
    ("transmit_awgn0_no_asc", ["--snr", "0", "--no-asc"]),
    ("transmit_digital_qpsk", ["--channel", "digital-qpsk", "--snr", "12"]),
    ("transmit_digital_mode", ["--snr", "10", "--digital", "--step", "0.5"]),  # the shipped density, 5G LDPC
])
def test_transmit_json_matches_the_golden_answer(case, args, tmp_path, capsys):
    from PIL import Image
    from skimage import data

    image = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(image)
    assert main(["transmit", str(image), *args, "--seed", "0", "--out", str(tmp_path / "out"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    path = GOLDEN / f"{case}.json"
    if os.environ.get("LAMSC_REGEN_GOLDEN"):
        path.write_text(json.dumps(got, indent=2) + "\n")
        pytest.skip(f"regenerated {path.name}")
    assert path.is_file(), f"{path} missing: run with LAMSC_REGEN_GOLDEN=1 once, and commit it"
    differences = compare(got, json.loads(path.read_text()))
    assert not differences, "\n".join(differences[:20])
