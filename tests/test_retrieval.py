"""The receiver's knowledge bases (lamsc.retrieval): search against brute force, files, merging, refusal of
damaged bases, registration, the no-retrieval path, and the kb commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.retrieval.align import (SIDELOBE_GAP, Aligned, align, align_all, box, composite, orientation_correlation,
                                   orientations, peak_to_sidelobe)
from lamsc.retrieval.base import KnowledgeBase, entry_id
from lamsc.retrieval.fusion import FusionConfig, FusionNet
from lamsc.retrieval.index import build_index, search
from lamsc.retrieval.keys import image_keys
from lamsc.retrieval.merge import MergePolicy, merge
from lamsc.retrieval.refine import Retriever
from lamsc.retrieval.scenes import scene_image, scene_views
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.model import LamscModel
from lamsc.semcom.transmission import Receiver, Transmitter, analog_link, reconstruction, transmit


@pytest.fixture(scope="module")
def scenes():
    """Three real photographs as scenes (scikit-image's astronaut, coffee, chelsea), short side 256."""
    photos = {p.name: scene_image(p.pixels) for p in bundled_photos(("astronaut", "coffee", "chelsea"))}
    return photos


def crops(scene: np.ndarray, n: int, side: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, scene.shape[0] - side), rng.integers(0, scene.shape[1] - side)
        out.append(np.ascontiguousarray(scene[y: y + side, x: x + side]))
    return out


def brute_force(keys: np.ndarray, queries: np.ndarray, k: int):
    d = ((queries[:, None, :].astype(np.float64) - keys[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order


def test_exact_search_matches_numpy_brute_force(scenes):
    keys = image_keys(np.stack(crops(scenes["astronaut"], 300) + crops(scenes["coffee"], 300, seed=1)))
    queries = image_keys(np.stack(crops(scenes["chelsea"], 20, seed=2) + crops(scenes["coffee"], 20, seed=3)))
    dist, ids = search(build_index(keys, "flat"), queries, 5)
    ref_d, ref_i = brute_force(keys, queries, 5)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-5)
    # ids agree wherever the distances are not tied to float32 precision
    untied = np.abs(np.diff(ref_d, axis=1)).min(1) > 1e-5
    assert untied.sum() > 30 and (ids[untied] == ref_i[untied]).all()


def test_ivf_probing_every_list_is_exact():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((4000, 64)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    index = build_index(keys, "ivf")
    index.nprobe = index.nlist
    dist, ids = search(index, keys[:50] + 0.01, 3)
    ref_d, ref_i = brute_force(keys, keys[:50] + 0.01, 3)
    assert (ids == ref_i).all()
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-5)


def test_a_base_round_trips_through_its_files(tmp_path, scenes):
    images = crops(scenes["astronaut"], 12) + crops(scenes["coffee"], 12, seed=1)
    labels = ["astronaut"] * 12 + ["coffee"] * 12
    base = KnowledgeBase.build("cam-1", "local", images, labels, times=list(range(24)))
    base.save(tmp_path / "kb")
    back = KnowledgeBase.open(tmp_path / "kb")
    assert (back.name, back.kind, back.revision, len(back)) == ("cam-1", "local", 1, 24)
    assert back.ids == base.ids and back.labels == base.labels and back.times == base.times
    np.testing.assert_array_equal(back.keys, base.keys)
    by_id = {entry_id(img): img for img in images}
    for i, entry in enumerate(back.ids):
        np.testing.assert_array_equal(back.content(i), by_id[entry])  # kept raw: exact
    assert back.content_hash == base.content_hash
    q = image_keys(np.stack(images[:3]))
    assert [[h.id for h in hits] for hits in back.query(q, 3)] == [[h.id for h in hits] for hits in base.query(q, 3)]
    assert back.query(q, 1)[0][0].id == entry_id(images[0]) and back.query(q, 1)[0][0].distance < 1e-5


def test_a_damaged_or_foreign_base_is_refused_in_one_line(tmp_path, scenes):
    base = KnowledgeBase.build("b", "global", crops(scenes["coffee"], 4))
    root = base.save(tmp_path / "kb")
    content = bytearray((root / "content.bin").read_bytes())
    content[len(content) // 2] ^= 0xFF
    (root / "content.bin").write_bytes(bytes(content))
    with pytest.raises(UserError, match="damaged: content.bin"):
        KnowledgeBase.open(root)
    base.save(root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["key"]["kind"] = "clip-vit-b32"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="keyed by clip-vit-b32"):
        KnowledgeBase.open(root)
    with pytest.raises(UserError, match="not a knowledge base"):
        KnowledgeBase.open(tmp_path)
    assert main(["kb", "info", str(root)]) == 2


def test_merging_gives_the_same_base_whatever_the_order(scenes):
    a_img, b_img = crops(scenes["astronaut"], 10), crops(scenes["coffee"], 10, seed=1)
    shared = crops(scenes["chelsea"], 3, seed=2)
    a = KnowledgeBase.build("cam-a", "local", a_img + shared, ["astronaut"] * 10 + ["cat"] * 3, times=list(range(13)))
    b = KnowledgeBase.build("cam-b", "local", b_img + shared, ["coffee"] * 10 + ["cat"] * 3,
                            times=[100.0 + t for t in range(13)])
    c = KnowledgeBase.build("global", "global", crops(scenes["astronaut"], 5, seed=4), ["astronaut"] * 5,
                            times=[50.0] * 5)
    policy = MergePolicy(cap=25, max_age=95.0, near_duplicate=0.0)
    orders = [[a, b, c], [c, b, a], [b, a, c]]
    merged = [merge(o, policy) for o in orders]
    assert len({m.content_hash for m in merged}) == 1
    assert all(m.files() == merged[0].files() for m in merged)
    assert len({json.dumps(m.manifest()) for m in merged}) == 1
    m = merged[0]
    # the shared images are one entry each, carrying the newest delivery (cam-b's)
    for img in shared:
        i = m.ids.index(entry_id(img))
        assert (m.labels[i], m.sources[i]) == ("cat", "cam-b")
    # stale: older than 95 s before the newest (112) are gone; of 28 distinct entries, 10 are older than 17
    assert min(m.times) >= 112 - 95 and len(m) == 10 + 3 + 5
    assert m.revision == 2 and m.parents == sorted({a.content_hash, b.content_hash, c.content_hash})
    capped = merge([a, b, c], MergePolicy(cap=4, near_duplicate=0.0))
    assert sorted(capped.times) == [109.0, 110.0, 111.0, 112.0]


def test_near_duplicates_keep_the_newer_entry(scenes):
    img = crops(scenes["coffee"], 1)[0]
    brighter = np.clip(img.astype(int) + 2, 0, 255).astype(np.uint8)  # the same view, a little more light
    a = KnowledgeBase.build("a", "local", [img], ["coffee"], times=[1.0])
    b = KnowledgeBase.build("b", "local", [brighter], ["coffee"], times=[2.0])
    assert len(merge([a, b], MergePolicy(near_duplicate=0.0))) == 2
    for order in ([a, b], [b, a]):
        m = merge(order)
        assert len(m) == 1 and m.ids == [entry_id(brighter)]


def test_registration_recovers_a_known_shift(scenes):
    scene = scenes["coffee"]
    view = scene[40:168, 60:188]
    for dy, dx in ((0, 0), (7, -12), (-16, 15)):
        moved = scene[40 + dy: 168 + dy, 60 + dx: 188 + dx]
        relit = np.clip(moved * 0.7 + 20, 0, 255).astype(np.uint8)  # other light: registration is blind to it
        a = align(view, relit)
        assert a.shift == (dy, dx) and a.agreement > 0.95
        inside = a.coverage > 0
        assert np.abs(a.image[inside] * 255 - view[inside]).mean() < 3  # light matched back


def test_box_is_the_mean_of_the_pixels_the_box_covers():
    a = np.random.default_rng(2).random((20, 17, 3))
    for side in (1, 3, 9):
        r = side // 2
        direct = np.array([[a[max(y - r, 0): y + r + 1, max(x - r, 0): x + r + 1].mean((0, 1)) for x in range(17)]
                           for y in range(20)])
        np.testing.assert_allclose(box(a, side), direct, atol=1e-6)
        np.testing.assert_allclose(box(a[..., 1], side), direct[..., 1], atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        box(a, 4)


def test_orientation_correlation_matches_a_direct_float64_sum():
    rng = np.random.default_rng(0)
    target, moving = rng.random((20, 24)), rng.random((14, 12))
    total, norm, n = orientation_correlation(target, moving)
    a, b = orientations(target).astype(np.complex128), orientations(moving).astype(np.complex128)
    for dy, dx in ((0, 0), (3, -5), (-13, 11), (19, 23), (6, 12)):
        # moving's pixel (y, x) lands on target's (y + dy, x + dx): sum over the pixels both have
        pairs = [(y + dy, x + dx, y, x) for y in range(14) for x in range(12)
                 if 0 <= y + dy < 20 and 0 <= x + dx < 24]
        direct = sum((np.conj(a[ty, tx]) * b[my, mx]).real for ty, tx, my, mx in pairs)
        ea = sum(abs(a[ty, tx]) ** 2 for ty, tx, _, _ in pairs)
        eb = sum(abs(b[my, mx]) ** 2 for _, _, my, mx in pairs)
        at = (dy + 13, dx + 11)
        assert n[at] == len(pairs)
        assert total[at] == pytest.approx(direct, abs=1e-3 * len(pairs))
        assert norm[at] == pytest.approx(direct / np.sqrt(ea * eb), abs=1e-3)


def test_registration_holds_under_gamma_and_occlusion_and_rejects_another_scene(scenes):
    scene, other = scenes["coffee"], scenes["astronaut"]
    view = scene[40:168, 60:188]
    moved = scene[49:177, 50:178].astype(np.float32) / 255.0
    relit = ((moved * 0.8) ** 1.25 * 255).round().astype(np.uint8)  # gain and gamma: not affine
    relit[10:60, 30:90] = other[100:150, 100:160]  # something passing in front
    a = align(view, relit)
    assert a.shift == (9, -10) and a.agreement > 0.5
    inside = (a.coverage > 0).copy()
    inside[10 + 9: 60 + 9, 30 - 10: 90 - 10] = False
    assert np.abs(a.image[inside] * 255 - view[inside]).mean() < 4  # the tone curve undoes the gamma
    assert align(view, other[100:228, 100:228]).agreement < 0.3


def test_only_accepted_references_have_their_light_matched(scenes):
    scene, other = scenes["coffee"], scenes["astronaut"]
    view = scene[40:168, 60:188]
    refs = [scene[49:177, 50:178], other[100:228, 100:228]]
    every = align_all(view, refs)
    some = align_all(view, refs, accept=0.5)
    assert [a.shift for a in some] == [a.shift for a in every]
    assert [a.agreement for a in some] == [a.agreement for a in every]
    assert [a.score for a in some] == [a.agreement for a in some]  # no sharpness weight: the score is the agreement
    weighted = align_all(view, refs, accept=0.5, sharpness_weight=0.05)
    assert [a.score for a in weighted] == pytest.approx([a.agreement + 0.05 * a.sharpness for a in weighted])
    assert weighted[0].sharpness > 3 * max(weighted[1].sharpness, 1.0)  # the same scene peaks at one shift
    np.testing.assert_array_equal(some[0].image, every[0].image)  # accepted: the same light match
    assert every[1].image is not None and some[1].image is None    # another scene: never light-matched


def test_peak_to_sidelobe_matches_a_direct_float64_computation():
    rng = np.random.default_rng(3)
    norm = rng.normal(0.1, 0.05, (30, 40))
    valid = rng.random((30, 40)) < 0.8
    peak = (12, 7)
    norm[peak], valid[peak] = 0.9, True
    lobe = [norm[y, x] for y in range(30) for x in range(40)
            if valid[y, x] and (abs(y - peak[0]) > SIDELOBE_GAP or abs(x - peak[1]) > SIDELOBE_GAP)]
    direct = (0.9 - np.mean(lobe, dtype=np.float64)) / np.std(lobe, dtype=np.float64)
    assert peak_to_sidelobe(norm, valid, peak) == pytest.approx(direct, rel=1e-9)
    assert peak_to_sidelobe(norm, np.zeros_like(valid), peak) == 0.0  # no sidelobe to compare with


def test_the_acceptance_rule_keeps_every_other_scene_out_and_most_of_the_own_scene_in():
    from lamsc.retrieval.training import THRESHOLD_MARGIN, acceptance_rule

    wrong = [(0.40, 1.0), (0.30, 2.0)]           # textures that line up: high agreement, no distinct peak
    right = [(0.38, 8.0), (0.45, 6.0), (0.70, 4.0)]
    threshold, w, accepted = acceptance_rule(right, wrong, (0.0, 0.05))
    # w = 0: threshold 0.42 takes 2; w = 0.05: max(0.45, 0.40) + margin = 0.47 takes all 3 (0.78, 0.75, 0.90)
    assert (w, accepted) == (0.05, 3) and threshold == pytest.approx(0.45 + THRESHOLD_MARGIN)
    assert all(a + w * p < threshold for a, p in wrong)
    # a tie goes to the smaller weight
    assert acceptance_rule([(0.9, 0.0)], wrong, (0.0, 0.05))[1] == 0.0


def test_composite_takes_each_pixel_from_the_reference_that_agrees():
    rng = np.random.default_rng(1)
    decoded = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    truth = decoded.astype(np.float32) / 255.0
    occluded = truth.copy()
    occluded[8:24, 8:24] = 1 - occluded[8:24, 8:24]
    half = np.zeros((48, 48), np.float32)
    half[:, :30] = 1
    # two placed references: one covering everything with an occluded patch, one covering the left part
    refs = [Aligned(occluded, np.ones((48, 48), np.float32), (0, 0), 0.9, 1.0),
            Aligned(truth * half[..., None], half, (0, 0), 0.8, 30 / 48)]
    image, coverage = composite(decoded, refs)
    assert coverage.min() == 1
    np.testing.assert_allclose(image[12:20, 12:20], truth[12:20, 12:20])  # the occluded patch, from the other
    np.testing.assert_allclose(image[:, 40:], occluded[:, 40:])  # only the first covers there


def tiny_codec() -> LamscModel:
    torch.manual_seed(0)
    return LamscModel(ModelConfig(channels=8, width=16, num_levels=4, segments=2)).eval()


def test_without_a_base_near_enough_the_receiver_output_is_bit_identical(scenes):
    codec = tiny_codec()
    view = np.ascontiguousarray(scenes["coffee"][:64, :96])
    tx = Transmitter(codec, FallbackSegmenter())
    unrelated = KnowledgeBase.build("other", "global", crops(scenes["astronaut"], 6, side=64), ["astronaut"] * 6)
    retriever = Retriever([unrelated], FusionNet(FusionConfig(threshold=0.999)))
    plain, assisted = Receiver(codec), Receiver(codec, refine=retriever)
    sent = tx.send(view, 5.0)
    unpacked = analog_link(sent.payload, Channel("awgn", 5.0), seed=3)
    a, b = plain.receive_features(unpacked, 5.0), assisted.receive_features(unpacked, 5.0)
    assert retriever.last["agreement"] < 0.999 and not retriever.last["used"]
    np.testing.assert_array_equal(a.image, b.image)
    assert b.retrieved is None
    # and the plain receiver is the model's decoder itself, nothing added
    f = unpacked.features
    with torch.inference_mode():
        out = codec.decode(torch.from_numpy(f.values)[None], torch.from_numpy(f.levels.astype(np.int64))[None],
                           torch.tensor([5.0]))
    np.testing.assert_array_equal(reconstruction({k: v.numpy() for k, v in out.items()}, 64, 96).image, a.image)


def test_retrieval_fuses_a_view_of_a_scene_in_the_base(scenes):
    codec = tiny_codec()
    rng = np.random.default_rng(0)
    views = scene_views(scenes["chelsea"], "chelsea", 2, rng, view=96, occlusion=0.0)
    base = KnowledgeBase.build("cam", "local", [views[0].pixels], ["chelsea"])
    retriever = Retriever([base], FusionNet(FusionConfig(threshold=-0.5)))
    rec = transmit(views[1].pixels, Transmitter(codec, FallbackSegmenter()), Receiver(codec, refine=retriever),
                   Channel("awgn", 0.0), seed=0).reconstruction
    assert retriever.last["used"] and rec.retrieved["label"] == "chelsea"
    assert rec.retrieved["entries"][0]["id"] == base.ids[0]
    # an untrained network starts at alpha 0.5 with no residual: half way to the reference where it covers
    assert not np.array_equal(rec.image, retriever.last["decoded"])


def test_a_fusion_network_round_trips_and_a_damaged_one_is_refused(tmp_path):
    torch.manual_seed(0)
    net = FusionNet(FusionConfig(width=8, blocks=1, threshold=0.5))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    path = net.save(tmp_path / "f")
    back = FusionNet.load(tmp_path / "f")
    x = [torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16), torch.tensor([3.0])]
    assert torch.equal(net(*x), back(*x)) and back.config.threshold == 0.5
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="not a lamsc fusion network"):
        FusionNet.load(tmp_path / "f")


def test_the_reference_is_stretched_about_its_mean_over_the_coverage():
    """FusionNet.stretched against a float64 reference: each channel's mean over the covered pixels, the gain
    exp(a + b s + c s^2) of the SNR placed in the codec's range; zero coefficients leave the reference as it is."""
    torch.manual_seed(1)
    net = FusionNet(FusionConfig())
    reference, coverage = torch.rand(2, 3, 8, 8) * 0.5 + 0.25, (torch.rand(2, 1, 8, 8) > 0.3).float()
    s = torch.tensor([0.0, 0.75])
    assert torch.equal(net.stretched(reference, coverage, s), reference * coverage)
    with torch.no_grad():
        net.stretch.copy_(torch.tensor([[0.1, -0.2, 0.05], [0.3, 0.0, -0.1], [-0.2, 0.4, 0.2]]))
    r, c, k = reference.double().numpy(), coverage.double().numpy(), net.stretch.detach().double().numpy()
    expected = np.zeros_like(r)
    for b in range(2):
        sb = s[b].item()
        for ch in range(3):
            mean = (r[b, ch] * c[b, 0]).sum() / c[b, 0].sum()
            gain = np.exp(k[0, ch] + k[1, ch] * sb + k[2, ch] * sb ** 2)
            expected[b, ch] = np.clip(mean + (r[b, ch] - mean) * gain, 0, 1) * c[b, 0]
    np.testing.assert_allclose(net.stretched(reference, coverage, s).detach().numpy(), expected, atol=1e-6)


def test_kb_commands_build_add_merge_query_info(tmp_path, scenes, capsys):
    from PIL import Image

    for name, seed in (("astronaut", 0), ("coffee", 1)):
        folder = tmp_path / "img" / name
        folder.mkdir(parents=True)
        for i, c in enumerate(crops(scenes[name], 3, side=48, seed=seed)):
            Image.fromarray(c).save(folder / f"{i}.png")
    imgs = tmp_path / "img"
    assert main(["kb", "build", str(tmp_path / "a"), str(imgs / "astronaut"), "--label", "astronaut", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)["results"]
    assert built["entries"] == 3 and built["kind"] == "local" and built["labels"] == {"astronaut": 3}
    assert main(["kb", "add", str(tmp_path / "a"), str(imgs / "coffee"), "--label", "coffee", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)["results"]
    assert (added["entries"], added["added"], added["revision"]) == (6, 3, 2)
    assert main(["kb", "build", str(tmp_path / "b"), str(imgs / "coffee"), "--kind", "global", "--json"]) == 0
    capsys.readouterr()
    outs = []
    for order in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "b", tmp_path / "a"]):
        out = tmp_path / f"m{len(outs)}"
        assert main(["kb", "merge", *map(str, order), "--out", str(out), "--near-duplicate", "0", "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["results"])
    assert outs[0]["content_hash"] == outs[1]["content_hash"] and outs[0]["entries"] == 6
    assert main(["kb", "merge", str(tmp_path / "a"), "--out", str(tmp_path / "m2"), "--name", "fleet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]["name"] == "fleet"
    assert main(["kb", "query", str(imgs / "coffee" / "0.png"), "--kb", str(tmp_path / "a"), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]["images"][0]["entries"]
    assert hits[0]["label"] == "coffee" and hits[0]["distance"] < 1e-5 and hits[0]["agreement"] > 0.99
    assert main(["kb", "info", str(tmp_path / "m0")]) == 0
    assert "6 entries" in capsys.readouterr().err
    assert main(["kb", "build", str(tmp_path / "a"), str(imgs / "coffee")]) == 2  # already a base there


def test_transmit_and_profile_take_kb(tmp_path, scenes, capsys):
    from PIL import Image

    from lamsc.runtime.profiler import ProfileConfig, profile_link
    from lamsc.semcom.images import NamedImage

    scene = scenes["coffee"]
    view, earlier = scene[60:156, 80:176], scene[64:160, 70:166]  # the same place, 4 and 10 pixels apart
    Image.fromarray(view).save(tmp_path / "view.png")
    KnowledgeBase.build("cam", "local", [earlier], ["coffee"]).save(tmp_path / "kb")
    assert main(["transmit", str(tmp_path / "view.png"), "--snr", "0", "--kb", str(tmp_path / "kb"),
                 "--out", str(tmp_path / "tx"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["results"]["images"][0]
    kb = row["kb"]
    assert kb["agreement"] > 0.5 and np.isfinite(kb["psnr_without"]) and set(kb["seconds"]) >= {"key", "search"}
    assert (kb["retrieved"] is not None) == kb["used"]
    # the same analog link as the transmit above (an SDR radio, 0 dB, ASC's own choice, noise seed 0): the
    # receiver retrieves from the same reconstruction, so it agrees with the knowledge base as much
    result = profile_link(ProfileConfig(images=[NamedImage("view", np.ascontiguousarray(view))], energy="model",
                                        radio="sdr", snr_db=0.0, repeats=1, out=tmp_path / "p", kb=[tmp_path / "kb"]))
    assert result.images[0]["lamsc"]["kb"]["agreement"] == pytest.approx(kb["agreement"], abs=1e-4)


def test_fusion_training_runs_in_the_training_loop_and_resumes(tmp_path, monkeypatch):
    from lamsc.retrieval import training
    from lamsc.retrieval.training import CALIBRATION_SNRS, CALIBRATION_VIEWS, FusionJob, train_fusion

    # an untrained codec registers nothing at a threshold: every example trains here (fused_at is tested apart)
    monkeypatch.setattr(training, "fused_at", lambda made, threshold: made)

    photos = bundled_photos(("astronaut", "coffee"))
    calibration = bundled_photos(("chelsea", "coins"))
    job = dict(photos=photos, calibration=calibration, codec=tiny_codec(), views=1, batch=2, crop=32, out=tmp_path)
    first = train_fusion(FusionJob(steps=3, **job))
    state = torch.load(tmp_path / "trainer.pt", weights_only=True)
    assert state["step"] == 3 and first.network.is_file()
    assert -1.0 <= first.config.threshold <= 0.999
    cal = first.config.trained["calibration"]
    sent = 2 * CALIBRATION_VIEWS * len(CALIBRATION_SNRS)  # each photograph's views at each SNR
    assert cal["own_scene_pairs"] <= 2 * sent and 0 < cal["other_scene_pairs"] <= sent  # one other scene each
    assert cal["sharpness_weight"] == first.config.sharpness_weight and cal["threshold"] == first.config.threshold
    more = train_fusion(FusionJob(steps=5, **job))
    history = torch.load(tmp_path / "trainer.pt", weights_only=True)["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5] and history[:3] == state["history"]
    assert FusionNet.load(more.network).config.threshold == first.config.threshold


def test_fusion_learns_on_the_pairs_the_receiver_fuses_and_on_every_wrong_match():
    from lamsc.retrieval.training import Example, fused_at

    blank = np.zeros((4, 4, 3), np.uint8)
    made = [Example(blank, blank, blank, blank[..., 0], 0.0, score, wrong)
            for score, wrong in ((0.2, False), (0.35, False), (0.9, False), (0.1, True), (0.5, True))]
    assert [(e.score, e.other_scene) for e in fused_at(made, 0.35)] == [(0.35, False), (0.9, False), (0.1, True),
                                                                           (0.5, True)]


def test_the_gain_sweep_measures_the_plain_receiver_beside_retrieval(tmp_path, scenes):
    from lamsc.retrieval.sweep import SweepConfig, sweep_gain

    codec = tiny_codec()
    rng = np.random.default_rng(1)
    views = scene_views(scenes["chelsea"], "chelsea", 2, rng, view=64, shift=8, occlusion=0.0)
    retriever = Retriever([KnowledgeBase.build("cam", "local", [views[0].pixels], ["chelsea"])],
                          FusionNet(FusionConfig(threshold=-0.5)))
    result = sweep_gain(SweepConfig({"seen": [("v", views[1].pixels)]}, snrs=(0.0, 20.0), seed=7, out=tmp_path),
                        codec, FallbackSegmenter(), retriever)
    tx = Transmitter(codec, FallbackSegmenter())
    for k, row in enumerate(result.rows):  # the "without" column is what a receiver without retrieval gets
        plain = transmit(views[1].pixels, tx, Receiver(codec), Channel("awgn", row["snr_db"]), seed=7 + k)
        assert row["psnr"] == pytest.approx(plain.psnr, abs=1e-9) and row["used"]
    assert set(result.summary["seen"]) == {"0", "20"}
    assert (tmp_path / "gain.png").stat().st_size > 0 and json.loads((tmp_path / "gain.json").read_text())["rows"]


def test_kb_help_shows_no_python_type_placeholders(capsys):
    for sub in ("build", "add", "merge", "query", "info", "train"):
        assert main(["kb", sub, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--json" in out and "<bool>" not in out and "<list[" not in out, sub


def test_a_base_grown_in_its_own_folder_holds_what_it_wrote(tmp_path, scenes):
    first = crops(scenes["coffee"], 3, seed=1)
    KnowledgeBase.build("cam", "local", first, ["coffee"] * 3).save(tmp_path / "kb")
    base = KnowledgeBase.open(tmp_path / "kb")  # entries memory-mapped from the files it is saved over
    more = crops(scenes["astronaut"], 4, seed=2)
    assert base.add(more, ["astronaut"] * 4) == 4
    base.save(tmp_path / "kb")
    again = KnowledgeBase.open(tmp_path / "kb")
    assert base.content_hash == again.content_hash
    by_id = {entry_id(img): img for img in first + more}
    for i, ident in enumerate(again.ids):
        np.testing.assert_array_equal(base.content(i), by_id[ident])
        np.testing.assert_array_equal(again.content(i), by_id[ident])
