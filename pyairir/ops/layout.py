"""The two memory layouts pyairir ops accept: dense NCHW and dense channels_last."""

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


def check_dense(x: torch.Tensor, name: str, where: str) -> None:
    if not is_dense(x):
        raise ValueError(
            f"{where}: {name} must be contiguous in NCHW or channels_last memory format, "
            f"got strides {x.stride()} for shape {tuple(x.shape)}"
        )
