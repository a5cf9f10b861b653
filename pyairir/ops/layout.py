"""The two memory layouts pyairir ops accept: dense NCHW and dense channels_last (and, for the
attention ops' operands, channel slices of either)."""

import torch


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """torch.channels_last if x is dense channels_last (and not also dense NCHW), else torch.contiguous_format."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def is_dense(x: torch.Tensor) -> bool:
    """Whether x is dense in NCHW or in channels_last."""
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def dense_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t made dense in x's layout (a no-op when it already is), e.g. for a gradient arriving expanded."""
    return t.contiguous(memory_format=memory_format(x))


def densified(x: object) -> object:
    """x itself if it is dense NCHW or channels_last (or not a 4-D tensor: the checks say what is
    wrong), else a dense NCHW copy: what the Python entry points run the kernels on for any other
    strides (a channel slice, a broadcast batch)."""
    return dense_like(x, x) if isinstance(x, torch.Tensor) and x.dim() == 4 else x


def check_dense(x: torch.Tensor, name: str, where: str) -> None:
    if not is_dense(x):
        raise ValueError(
            f"{where}: {name} must be contiguous in NCHW or channels_last memory format, "
            f"got strides {x.stride()} for shape {tuple(x.shape)}"
        )


def pixel_major(t: torch.Tensor) -> bool:
    """Whether t's channels are adjacent in memory (channels_last, or a channel slice of it)."""
    return t.stride(1) == 1 and t.shape[1] > 1


def pixel_major_format(t: torch.Tensor) -> torch.memory_format:
    """The layout of an attention op's dense result for an operand t: channels_last if t is pixel-major."""
    return torch.channels_last if pixel_major(t) else torch.contiguous_format


def is_slice_of_dense(t: torch.Tensor) -> bool:
    """Whether t (B, C, H, W) is NCHW or channels_last, or a channel slice of such a tensor: its pixels
    flatten to one axis and its channels or its pixels have unit stride (csrc/head_operand.h)."""
    h, w = t.shape[-2:]
    return (h == 1 or t.stride(2) == w * t.stride(3)) and (t.stride(1) == 1 or t.stride(3) == 1)
