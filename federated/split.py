"""Where the model is cut between a device and the server, and what each side computes per step.

Federated split fine-tuning (arXiv 2503.22064, Sec. III; SplitFed, Thapa et al., AAAI 2022): a device runs
the front of the model on its own images and sends the activations at the cut ("smashed data") up; the
server runs the back and sends their gradients down. The images and their labels stay on the device, so the
loss is computed there too (the U-shaped form of split learning): the server's outputs come down as
activations and their gradients go up. The gradient of a distortion loss with respect to the reconstruction is
proportional to the reconstruction error, so a server that keeps its reconstruction could estimate the image
from it; the receiver reconstructs the image in deployment anyway, and this is the limit of the guarantee.

The split point ``transmitter`` cuts at the transmitter's output, so the channel sits at the cut and
fine-tuning sees the noise the link will: the device runs ASI, the encoder and the ASC mask network
(``LamscModel.encode``); the server the channel, the decoder and the task heads (``LamscModel.decode``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamsc.errors import UserError
from lamsc.semcom.channels import Channel, analog_real
from lamsc.semcom.config import power_normalise
from lamsc.semcom.model import LamscModel
from lamsc.semcom.training import reconstruction_loss


@dataclass(frozen=True)
class SplitPoint:
    """A named cut: the model's submodules on each side and the activations that cross it."""

    name: str
    device_modules: tuple[str, ...]
    server_modules: tuple[str, ...]
    smashed: tuple[str, ...]       # the activations sent up, by name; ``levels`` (integers) carry no gradient
    about: str


SPLIT_POINTS = {
    "transmitter": SplitPoint(
        "transmitter", ("asi", "encoder", "mask_net"), ("decoder", "classifier", "segmenter_head"),
        ("z", "mask", "levels"),
        "after ASC: the kept, power-normalised features and their depth levels; the channel sits at the cut"),
}
DIFFERENTIABLE = ("z", "mask")  # the smashed activations whose gradients come back down
# Fine-tuning starts from a converged model: with Adam's first steps at 3e-4, eight centralised steps of the shipped
# model on night-shifted photographs cost 2.2 dB of held-out PSNR; at 1e-4 a hundred steps on thermal ones gain.
FINE_TUNE_LR = 1e-4
# Held-out images are scored with ASC keeping this fraction of the features, for every method and round, so that
# what is compared is the quality of the features sent, not how many ASC chose to send.
EVAL_RATE = 0.5


def split_point(name: str) -> SplitPoint:
    """The split point called ``name``; UserError naming the known ones otherwise."""
    if name not in SPLIT_POINTS:
        raise UserError(f"unknown split point {name!r}; choose one of {', '.join(SPLIT_POINTS)} "
                        "(a cut before the encoder would send the image itself)")
    return SPLIT_POINTS[name]


def device_forward(model: LamscModel, x: torch.Tensor, masks: torch.Tensor, snr_db: torch.Tensor,
                   rate: float | None = None) -> tuple[dict, dict]:
    """The device's front on images (B, 3, H, W) in [0, 1], SKB masks (B, K, H, W) and the SNR (B,) in dB that
    the server's channel will apply -> (smashed, kept): ``smashed`` z and mask (B, C, H/8, W/8) and levels
    (B, H/8, W/8), which go up; ``kept``, which never leaves: the ASI map ``integrated`` (B, 1, H, W) that
    weighs the loss, the ``importance`` map the encoder took, and the mask and levels (``device_recompute``).
    ``rate``: the fraction of features ASC keeps (None: its own choice)."""
    fraction = None if rate is None else torch.full((x.shape[0],), float(rate))
    enc = model.encode(x, masks, snr_db, asc=True, rate=fraction)
    smashed = {"z": enc["z"], "mask": enc["mask"], "levels": enc["levels"]}
    return smashed, {"integrated": enc["integrated"], "importance": enc["importance"], "mask": enc["mask"],
                     "levels": enc["levels"]}


def device_recompute(model: LamscModel, x: torch.Tensor, kept: dict, snr_db: torch.Tensor) -> dict:
    """``device_forward``'s smashed activations again, for the backward pass, from the images (B, 3, H, W) and
    what ``device_forward`` kept: only the encoder runs. Exact when ASI and the ASC mask network are frozen (as
    on a device, lamsc.federated.device.adapted_model): the importance map and the mask then carry no gradient
    and are the same as in the first pass. ValueError if either has trainable weights."""
    if any(p.requires_grad for m in (model.asi, model.mask_net) for p in m.parameters()):
        raise ValueError("ASI or the ASC mask network trains: recompute with device_forward instead")
    z = model.features(x, kept["importance"], snr_db)
    return {"z": power_normalise(z, kept["mask"]), "mask": kept["mask"], "levels": kept["levels"]}


def server_forward(model: LamscModel, smashed: dict, snr_db: torch.Tensor, channel: str,
                   generator: torch.Generator) -> dict:
    """The server's back: the channel (``channel`` at the SNR of each row, noise from ``generator``) on the
    smashed activations of ``device_forward``, then the decoder and heads -> ``LamscModel.decode``'s dict
    (image (B, 3, H, W) in [0, 1], class and segmentation logits where the model has those heads)."""
    z, mask = smashed["z"], smashed["mask"]
    b = z.shape[0]
    lo = model.config.snr_range[0]
    # the channel in float32, as the centralised recipe runs it (lamsc.semcom.training.link_loss)
    noisy = analog_real(z.reshape(b, -1).float(), Channel(channel, lo), generator, snr_db=snr_db).view_as(z) * mask
    return model.decode(noisy, smashed["levels"], snr_db)


def draw_snr(model: LamscModel, batch: int, generator: torch.Generator) -> torch.Tensor:
    """SNRs (batch,) in dB drawn uniformly over the model's range, as the centralised recipe draws them."""
    lo, hi = model.config.snr_range
    return lo + (hi - lo) * torch.rand(batch, generator=generator, device=generator.device)


def eval_generator(seed: int, client: int, image: int) -> torch.Generator:
    """The channel noise of held-out image ``image`` of ``client``: the same in every round and every method,
    so that held-out metrics differ only by the model."""
    return torch.Generator().manual_seed(seed * 1_000_003 + client * 1009 + image)


def device_loss(outputs: dict, batch: dict, kept: dict, importance_weight: float) -> tuple[torch.Tensor, dict]:
    """The loss a device computes on the server's ``outputs`` for its ``batch`` (x, category, label) with the
    ASI map in ``kept``: the centralised recipe's ``reconstruction_loss``. ASC sends at its own rate and its
    mask network stays frozen (it sees the features detached), so no rate term has anything to train here.
    Returns the loss and logs (PSNR in dB)."""
    loss, psnr = reconstruction_loss(outputs, batch, kept["integrated"], importance_weight)
    return loss, {"psnr": psnr}


def surrogate(values: dict, grads: dict, loss_value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """A scalar whose gradient with respect to each tensor in ``values`` is the matching tensor in ``grads``
    (received from the other side) and whose value is ``loss_value``: what one side back-propagates."""
    s = sum((values[k] * grads[k].to(values[k].dtype)).sum() for k in grads)
    return s - s.detach() + loss_value
