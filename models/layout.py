"""The one input layout of every backbone: a float video batch in NCTHW."""

import torch

VIDEO_DIMS = 5
RGB_CHANNELS = 3


def check_video_layout(x: torch.Tensor, who: str) -> None:
    """Raise a ValueError naming ``who`` unless ``x`` is a float (N, 3, T, H, W) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor in NCTHW layout, got {type(x).__name__}")
    if x.dim() != VIDEO_DIMS or x.shape[1] != RGB_CHANNELS:
        hint = ""
        if x.dim() == VIDEO_DIMS and x.shape[-1] == RGB_CHANNELS:
            hint = " (it looks like NTHWC: permute(0, 4, 1, 2, 3) first)"
        elif x.dim() == VIDEO_DIMS and x.shape[2] == RGB_CHANNELS:
            hint = " (it looks like NTCHW: permute(0, 2, 1, 3, 4) first)"
        raise ValueError(
            f"{who} expects a video batch in NCTHW layout (N, {RGB_CHANNELS}, T, H, W), "
            f"got shape {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{who} expects a floating point video batch, got dtype {x.dtype}")
