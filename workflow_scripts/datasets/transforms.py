"""The paper's image transforms on PIL images (torchvision.transforms.v2).

eval  = [square step] -> Resize(resize, shorter side, bilinear) -> CenterCrop(crop) -> float
        in [0, 1] -> Normalize(mean, std)
train = [square step] -> Resize(resize) -> RandomResizedCrop(crop) -> RandomHorizontalFlip ->
        float -> Normalize
With ``normalize=False`` both end at the uint8 crop (``ToImage``): the data-loader workers then
ship uint8 batches (a quarter of float32's bytes) and :func:`normalize_batch` runs the last two
steps on the device, bit-identical to doing them per image (the same elementwise ops).
The square step is the table's ``preprocessing``: ``pad_square`` (zero padding, the image
centred; CUB, CIFAR-100), ``crop_square`` (centre crop to the shorter side; Pascal) or ``none``.
``spec`` is the configuration's ``transform`` section (resize/crop may be null = skip).
"""

from __future__ import annotations

from PIL import Image


def pad_to_square(img: Image.Image) -> Image.Image:
    """Zero-pad to a square of the longer side; the extra pixel of an odd difference goes
    right/bottom."""
    w, h = img.size
    side = max(w, h)
    if w == h:
        return img
    out = Image.new(img.mode, (side, side), 0)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def crop_to_square(img: Image.Image) -> Image.Image:
    """Centre-crop to a square of the shorter side (torchvision's CenterCrop rounding)."""
    w, h = img.size
    side = min(w, h)
    left = int(round((w - side) / 2.0))
    top = int(round((h - side) / 2.0))
    return img.crop((left, top, left + side, top + side))


SQUARE = {"none": None, "pad_square": pad_to_square, "crop_square": crop_to_square}


def _square(preprocessing: str | None):
    from torchvision.transforms import v2

    key = preprocessing or "none"
    if key not in SQUARE:
        raise ValueError(f"unknown preprocessing '{key}' (known: {', '.join(SQUARE)})")
    return [v2.Lambda(SQUARE[key])] if SQUARE[key] else []


def _finish(spec: dict, normalize: bool = True):
    import torch
    from torchvision.transforms import v2

    if not normalize:
        return [v2.ToImage()]
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(spec["mean"]), std=list(spec["std"])),
    ]


def normalize_batch(images, spec: dict):
    """uint8 [B, 3, H, W] (on any device) -> float32 in [0, 1] -> Normalize(mean, std): the last
    two steps of the transforms, batched (torchvision's own functional ops)."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    x = TF.to_dtype(images, torch.float32, scale=True)
    return TF.normalize(x, mean=list(spec["mean"]), std=list(spec["std"]))


def _mode(spec: dict):
    from torchvision.transforms import v2

    return v2.InterpolationMode(spec["interpolation"])


def eval_transform(spec: dict, preprocessing: str | None = None, normalize: bool = True):
    """PIL image -> normalised float tensor [3, crop, crop] (the frozen protocols' input), or
    the uint8 crop with ``normalize=False``."""
    from torchvision.transforms import v2

    steps = _square(preprocessing)
    if spec.get("resize"):
        steps.append(v2.Resize(spec["resize"], interpolation=_mode(spec), antialias=True))
    if spec.get("crop"):
        steps.append(v2.CenterCrop(spec["crop"]))
    return v2.Compose(steps + _finish(spec, normalize))


def train_transform(spec: dict, preprocessing: str | None = None, normalize: bool = True):
    """PIL image -> augmented normalised tensor (fine-tuning, few-shot, online probe).

    RandomResizedCrop uses torchvision's defaults (scale 0.08-1, ratio 3/4-4/3); the
    authors' exact scale range is not stated.
    """
    from torchvision.transforms import v2

    steps = _square(preprocessing)
    if spec.get("resize"):
        steps.append(v2.Resize(spec["resize"], interpolation=_mode(spec), antialias=True))
    size = spec.get("crop") or spec.get("resize")
    if size:
        steps.append(v2.RandomResizedCrop(size, interpolation=_mode(spec), antialias=True))
    steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _finish(spec, normalize))
