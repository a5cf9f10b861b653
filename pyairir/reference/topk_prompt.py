import torch
import torch.nn.functional as F


def topk_prompt(logits: torch.Tensor, prompts: torch.Tensor, height: int, width: int, k: int,
                renormalize: bool) -> torch.Tensor:
    """A prompt from gate logits (B, n) and prompt components prompts (n, C, s, s) (CPL Eq. 2-3).

    w = top-k(softmax(logits)) (renormalised to sum to one if asked), p = sum of the k selected
    components weighted by w, resized bilinearly (align_corners=False) to (height, width).
    Returns (B, C, height, width). With k = n this is PromptIR's dense prompt.
    """
    weights, selection = F.softmax(logits, dim=1).topk(k, dim=1)
    if renormalize:
        weights = weights / weights.sum(dim=1, keepdim=True)
    mixed = (weights[:, :, None, None, None] * prompts[selection]).sum(dim=1)
    return F.interpolate(mixed, size=(height, width), mode="bilinear", align_corners=False)
