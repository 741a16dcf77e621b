"""The Python API the commands wrap: every name ``lamsc`` lists resolves, and ``import lamsc`` stays light."""

import json
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
    assert json.loads((tmp_path / "profile.json").read_text())["files"]["png"] == str(tmp_path / "energy.png")
    assert result.energy_meter["estimate"] is True  # the declared model, labelled an estimate


def test_stages_resolve_after_a_bare_import():
    done = subprocess.run([sys.executable, "-c", "import lamsc; print(lamsc.runtime.backends.OnnxRuntimeBackend"
                           ".__name__, 'compress' in dir(lamsc))"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["OnnxRuntimeBackend", "True"]


def test_endpoints_on_other_devices_leave_the_callers_model_where_it_is():
    model = lamsc.load_model()
    backend = lamsc.semcom.torch_backend.TorchBackend(model, device="meta")  # a device with no data: nothing runs
    assert next(backend.modules["transmitter"].parameters()).device.type == "meta"
    assert next(model.parameters()).device.type == "cpu"
    assert repr(backend) == "TorchBackend(torch (meta): transmitter, receiver)"


def test_configs_refuse_bad_values_before_any_work(tmp_path):
    import pytest

    with pytest.raises(lamsc.UserError, match="at least 1 timed run"):
        lamsc.ProfileConfig(repeats=0)
    for bad, message in (({"steps": {"codecs": 5}}, "the stages are asi, codec, asc"),
                         ({"precision": "bf17"}, "unknown training precision 'bf17'"),
                         ({"importance": tmp_path / "none"}, "importance folder"),
                         ({"recipe": "fastest"}, "unknown preset 'fastest'")):
        with pytest.raises(lamsc.UserError, match=message):
            lamsc.train_model(lamsc.TrainJob(bundled=True, out=tmp_path / "run", **bad))
        assert not (tmp_path / "run").exists()  # refused before segmenting or writing anything
