"""Parameter counts of the registered models (the table behind ``rrcunet models --params``).

Models are built on PyTorch's ``meta`` device, so counting the full-size networks allocates no
weights and takes well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rrcunet.formatting import table
from rrcunet.models.registry import build_model

# The variants in the table: (model name, options beyond the defaults). The RRc rows cover both
# readings of each ambiguity (join, up_channels), the entry-kernel choice, and t (shared weights).
PARAM_TABLE_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("rrcunet", {}),
    ("rrcunet", {"t": 3}),
    ("rrcunet", {"join": "add"}),
    ("rrcunet", {"up_channels": "halve"}),
    ("rrcunet", {"join": "add", "up_channels": "halve"}),
    ("rrcunet", {"entry_kernel_size": 3}),
    ("rrcunet", {"join": "add", "entry_kernel_size": 3}),
    ("cgpd", {}),
    ("residual", {}),
    ("recurrent", {}),
    ("unet", {}),
)


@dataclass(frozen=True)
class ParamCount:
    """Trainable parameters of one model, split by part."""

    model: str
    options: str
    encoder: int
    decoder: int
    head: int
    total: int


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Count parameters per top-level part (``encoder``, ``decoder``, ``head``, ...) and ``total``.

    Works on ``meta``-device models (it reads shapes only).
    """
    counts: dict[str, int] = {}
    for key, p in model.named_parameters():
        part = key.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


def parameter_table(
    *, base_filters: int = 32, variants: Sequence[tuple[str, dict[str, Any]]] = PARAM_TABLE_VARIANTS
) -> list[ParamCount]:
    """Parameter counts of ``variants`` at ``base_filters``, plus ``coordunet`` at its own defaults.

    Args:
        base_filters: level-0 filters for the U-Net variants (the paper: 32).
        variants: (model name, options) pairs.
    """
    rows = []
    with torch.device("meta"):
        for name, opts in variants:
            counts = count_parameters(build_model(name, base_filters=base_filters, **opts))
            label = ", ".join(f"{k}={v}" for k, v in opts.items()) or "defaults"
            rows.append(ParamCount(name, label, counts["encoder"], counts["decoder"], counts["head"], counts["total"]))
        counts = count_parameters(build_model("coordunet"))
        rows.append(ParamCount("coordunet", "defaults (own: base 16, 4 levels)", counts["encoder"],
                               counts["decoder"], counts["head"], counts["total"]))
    return rows


def format_parameter_table(rows: Sequence[ParamCount], *, markdown: bool = False) -> str:
    """Render :func:`parameter_table` rows as plain text or a Markdown table.

    The last column is the total relative to the plain ``unet`` row (when present).
    """
    ref = next((r.total for r in rows if r.model == "unet" and r.options == "defaults"), None)
    body = [{"model": r.model, "options": r.options, "encoder": f"{r.encoder:,}", "decoder": f"{r.decoder:,}",
             "head": f"{r.head:,}", "total": f"{r.total:,}", "vs unet": r.total / ref if ref else math.nan}
            for r in rows]
    return table(body, digits=3, right=("encoder", "decoder", "head", "total", "vs unet"), markdown=markdown)
