"""Distillation: the uncompressed model teaches its compressed copy, on real photographs; resumable.

- ``distil_codec``: output distillation of the codec and heads. Teacher and student see the same crop,
  segments, SNR, channel noise and ASC levels: the teacher's own levels for half the batches, random
  levels (the nested dropout the codec was trained with) for the rest, so the student's decoder serves
  every depth as the teacher's does. Crops are colour-augmented (``colour_augment``) so the student
  also meets inputs unlike the training photographs. The loss is the student's image against the
  teacher's image and the photo, its depth map against the teacher's (so it sends as much as the
  teacher), and its task logits against the teacher's.
- ``distil_encoder``: feature distillation of the SKB image encoder (MobileSAM's and NanoSAM's recipe):
  mean squared error between the student's and the teacher's 256 x 64 x 64 image embeddings. Teacher
  embeddings are computed once per photograph and cached, because the teacher is the slow part.

Both train in the one resumable loop (semcom.loop): every ``checkpoint_every`` steps the student and the
trainer state are written to ``out``; running again with the same folder resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from lamsc.semcom.asc import random_levels
from lamsc.semcom.channels import Channel, analog_real
from lamsc.semcom.files import honour_umask
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.config import DOWNSAMPLING
from lamsc.semcom.images import LUMA
from lamsc.semcom.model import LamscModel
from lamsc.semcom.training import Batches, TrainingImage


# The depth map decides how much is sent: weighted like the image terms, so the student's rate follows the
# teacher's (at 0.01 a pruned student sent a third less and lost 1.4 dB on held-out photographs).
DEPTH_WEIGHT = 1.0


@dataclass
class DistillConfig:
    """A distillation recipe, for the codec (``distil_codec``) and an SKB image encoder (``distil_encoder``).

    ``precision`` applies to the codec: bf16 autocast where the CPU computes in bf16, as training does; the
    SKB's encoder distils in fp32, its embeddings scored by cosine against the teacher's."""

    steps: int = 300
    crop: int = 128
    batch: int = 8
    lr: float = 3e-4
    # Student image vs teacher image, beside student image vs photo (weight 1). On the default codec pruned
    # by half, 400 steps, scored on the bundled photographs: 4 -> -1.05 dB, 1 -> -0.74, 0.25 -> -0.64, 0 -> -0.73.
    teacher_weight: float = 0.25
    augment: bool = True          # codec: colour augmentation of the crops (see ``colour_augment``)
    checkpoint_every: int = 100
    seed: int = 0
    precision: str = "auto"       # codec: auto | fp32 | bf16, as training (semcom.loop.autocast_bf16)


def distil_codec(teacher: LamscModel, student: LamscModel, images: list[TrainingImage], cfg: DistillConfig,
                 out: Path, progress=None) -> LamscModel:
    """Train ``student`` (a pruned copy of ``teacher``) to reproduce it; writes ``out/model.*``.

    ``progress(step, total, logs)`` follows every step. Raises UserError for no images.
    """
    teacher.eval().requires_grad_(False)
    student.requires_grad_(True)  # a copy of the teacher may have been made after it was frozen
    for net in (teacher, student):  # NHWC while training, as the training loop runs (semcom.training.train)
        net.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = Batches(images, student.config.segments, cfg.crop, cfg.batch, cfg.seed)
    run = TrainingRun(out / "distill_state.pt", student, gen, batches.rng, lambda: student.save(out / "model"),
                      cfg.checkpoint_every, precision=cfg.precision, weights=out / "model.safetensors")
    lo, hi = student.config.snr_range

    def step():
        batch = batches.next()
        x, masks = batch["x"], batch["masks"]
        if cfg.augment:
            x = colour_augment(x, gen)
        x = x.contiguous(memory_format=torch.channels_last)
        snr = lo + (hi - lo) * torch.rand(x.shape[0], generator=gen)
        with torch.no_grad():
            t_depth = teacher.encode(x, masks, snr)
            levels = t_depth["levels"]
            if torch.rand(1, generator=gen).item() < 0.5:
                levels = random_levels(levels.shape, student.config.num_levels, generator=gen)
            t_enc = teacher.with_levels(t_depth, levels)  # the same features: the encoder runs once
        s_enc = student.encode(x, masks, snr, levels=levels)
        # ASC's depth from what it sees at inference (LamscModel.encode): the unmasked features, FiLM's SNR
        depth = student.mask_net(s_enc["features"], F.avg_pool2d(s_enc["importance"], DOWNSAMPLING),
                                 student.snr_input(snr))
        noise_state = gen.get_state()
        t_rx, s_rx = (_through_channel(e["z"], e["mask"], snr, gen, noise_state) for e in (t_enc, s_enc))
        with torch.no_grad():
            t_out = teacher.decode(t_rx, levels, snr)
        s_out = student.decode(s_rx, levels, snr)
        loss = F.mse_loss(s_out["image"], x) + cfg.teacher_weight * F.mse_loss(s_out["image"], t_out["image"])
        loss = loss + DEPTH_WEIGHT * F.mse_loss(depth, t_depth["depth"])
        for key in ("class_logits", "seg_logits"):
            if key in t_out:
                loss = loss + 0.01 * F.mse_loss(s_out[key], t_out[key])
        with torch.no_grad():  # student vs teacher distortion on this batch, in dB (negative: student better)
            gap = float(10 * torch.log10(F.mse_loss(s_out["image"], x) / F.mse_loss(t_out["image"], x)))
        return loss, {"psnr_gap_db": gap}

    student.train()
    try:
        run.train(cfg.steps, step, torch.optim.Adam(student.parameters(), lr=cfg.lr), cfg.lr, progress=progress)
    finally:  # both come back contiguous, as models are built
        for net in (teacher, student):
            net.to(memory_format=torch.contiguous_format)
    return student.eval()


def colour_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Broaden the photographs' colours, image by image: greyscale with probability 1/4, else saturation
    x U(0.5, 1.5) and, with probability 1/4, the RGB channels permuted; then contrast x U(0.7, 1.3).

    Distillation only needs the teacher's behaviour on the inputs the student will meet, and the teacher
    labels any input. Measured on the default codec pruned by half, distilled on colour wallpapers and
    scored on the bundled photographs: the stained micrograph went from -1.66 to -1.24 dB against the
    teacher, the greyscale camera from -2.35 to -2.11 dB (its loss is its fine texture, not its colour),
    the mean from -0.60 to -0.57 dB.
    """
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen)
    grey = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    saturation = torch.where(u[:, 0] < 0.25, 0.0, 0.5 + u[:, 1]).view(b, 1, 1, 1)
    x = grey + saturation * (x - grey)
    orders = torch.stack([torch.randperm(3, generator=gen) if u[i, 2] < 0.25 else torch.arange(3) for i in range(b)])
    x = torch.stack([x[i, orders[i]] for i in range(b)])
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * (0.7 + 0.6 * u[:, 3]).view(b, 1, 1, 1) + mean).clamp(0, 1)


def _through_channel(z: torch.Tensor, mask: torch.Tensor, snr: torch.Tensor, gen: torch.Generator,
                     noise_state: torch.Tensor) -> torch.Tensor:
    """Features ``z`` (B, C, h, w) through AWGN at each image's SNR ``snr`` (B,) in dB, times ``mask``;
    ``gen`` is set to ``noise_state`` first, so teacher and student get the same noise draw."""
    gen.set_state(noise_state)
    return analog_real(z.reshape(z.shape[0], -1), Channel("awgn", 0.0), gen, snr_db=snr).view_as(z) * mask


def distil_encoder(student: torch.nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor],
                   cfg: DistillConfig, out: Path, progress=None, from_teacher: bool = False,
                   validation: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> torch.nn.Module:
    """Feature distillation of an image encoder on preprocessed images (each (1, 3, 1024, 1024); or on
    whatever ``student`` takes, such as a resized TinyViT's trunk features for its neck) towards
    the teacher's embeddings of them (``teacher_embeddings``, computed once for every student); the
    student's weights are checkpointed in ``out`` (the caller saves the finished SKB in its own format).

    ``from_teacher``: the student is the teacher's own network (pruned or resized), so this is fine-tuning:
    its batch-norm statistics stay the teacher's (a batch of two photographs would replace them: a resized
    MobileSAM went from cosine 0.85 to 0.01 in train mode), and the first 5% of steps warm the learning
    rate up (without, the first Adam step at lr 3e-5 took one from cosine 0.83 to 0.38).

    ``validation`` (held-out photographs and their teacher embeddings): the student is scored on them
    before training and at every checkpoint, and the best state is the one returned. Fine-tuning can lose:
    a scale-consistent resized random-weight MobileSAM fell from cosine 0.943 to 0.890 in 50 steps.
    """
    student.requires_grad_(True)
    gen = torch.Generator().manual_seed(cfg.seed)
    weights, best_file = out / "student_weights.safetensors", out / "student_best.safetensors"

    def checkpoint():
        if validation is not None:
            _keep_if_best(student, validation, run.state, best_file)
            _train(student, keep_norm_statistics=from_teacher)
        _save_weights(student, weights)

    run = TrainingRun(out / "distill_state.pt", student, gen, on_checkpoint=checkpoint, every=cfg.checkpoint_every,
                      weights=weights)
    if validation is not None and "best" not in run.state:
        _keep_if_best(student, validation, run.state, best_file)
    _train(student, keep_norm_statistics=from_teacher)

    def step():
        pick = torch.randint(len(inputs), (cfg.batch,), generator=gen).tolist()
        x, y = torch.cat([inputs[i] for i in pick]), torch.cat([targets[i] for i in pick])
        pred = student(x)
        return F.mse_loss(pred, y), {"cosine": embedding_cosine(pred.detach(), y)}

    run.train(cfg.steps, step, torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0), cfg.lr,
              warmup=max(1, cfg.steps // 20) if from_teacher else 0, progress=progress)
    if validation is not None:
        student.load_state_dict(load_file(str(best_file)))
    return student.eval()


@torch.no_grad()
def _keep_if_best(student: torch.nn.Module, validation, state: dict, best_file: Path) -> None:
    student.eval()
    cosine = sum(embedding_cosine(student(x), y) for x, y in zip(*validation)) / len(validation[0])
    state.setdefault("validation", []).append({"step": state["step"], "cosine": cosine})
    if cosine > state.get("best", {}).get("cosine", -2.0):
        state["best"] = {"step": state["step"], "cosine": cosine}
        _save_weights(student, best_file)


def _save_weights(module: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
    honour_umask(path)


def _train(model: torch.nn.Module, keep_norm_statistics: bool) -> None:
    model.train()
    if keep_norm_statistics:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


@torch.no_grad()
def teacher_embeddings(teacher: torch.nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The teacher encoder's embedding of each input: the targets of ``distil_encoder``."""
    return [teacher.eval()(x) for x in inputs]


def embedding_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over positions of the cosine between two (B, C, h, w) embeddings along C."""
    return float(F.cosine_similarity(a.flatten(2), b.flatten(2), dim=1).mean())


