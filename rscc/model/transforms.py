"""Evaluation image transforms of the backbones: PIL image -> (3, H, W) normalised tensor."""
from __future__ import annotations

from collections.abc import Callable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clip_transform(image_size: int) -> Callable:
    """open_clip's evaluation transform: resize (bicubic), centre crop, CLIP mean/std."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return open_clip.image_transform(image_size, is_train=False, mean=OPENAI_DATASET_MEAN,
                                     std=OPENAI_DATASET_STD)


def resize_normalise(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
    """RGB, resize to ``image_size`` square (a no-op for images of that size), [0, 1], then (x - mean) / std."""
    from torchvision import transforms as T

    return T.Compose([
        T.Lambda(_to_rgb),
        T.Resize((image_size, image_size)),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def imagenet_transform(image_size: int) -> Callable:
    """ImageNet normalisation at ``image_size`` px."""
    return resize_normalise(image_size, IMAGENET_MEAN, IMAGENET_STD)


def symmetric_transform(image_size: int) -> Callable:
    """Inputs in [-1, 1] (mean = std = 0.5) at ``image_size`` px: geoembed's normalisation."""
    return resize_normalise(image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _to_rgb(image):
    return image.convert("RGB") if hasattr(image, "convert") else image

