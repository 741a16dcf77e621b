"""The Python API the commands wrap: every name ``lamsc`` lists resolves, and ``import lamsc`` stays light."""

import subprocess
import sys

import lamsc


def test_every_listed_name_resolves_to_its_stage():
    for name in lamsc.__all__:
        obj = getattr(lamsc, name)
        if name not in ("UserError", "__version__"):
            assert obj.__module__ == lamsc._API[name], name


def test_import_lamsc_loads_no_stage():
    code = "import sys, lamsc; print(sorted(m for m in sys.modules if m.startswith(('torch', 'lamsc.'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['lamsc.errors']"


def test_the_profile_call_returns_a_readable_result(tmp_path):
    result = lamsc.profile_link(lamsc.ProfileConfig(images=[lamsc.bundled_photos(["coins"])[0]], energy="model",
                                                    repeats=1, out=tmp_path))
    assert repr(result).startswith("ProfileResult(1 images on torch (cpu), awgn 10 dB:")
    assert (tmp_path / "profile.json").is_file() and result.images[0]["image"] == "coins"
    assert result.energy_meter["estimate"] is True  # the declared model, labelled an estimate
