"""DeepSupervision: weighted sum of the loss over the scales, integer targets shrunk exactly."""

from __future__ import annotations

import torch

from rrcunet.losses import DeepSupervision, FocalGeneralizedDiceLoss


def test_list_is_weighted_sum_over_scales_with_nearest_targets():
    gen = torch.Generator().manual_seed(0)
    base = FocalGeneralizedDiceLoss()
    target = torch.randint(0, 3, (1, 1, 8, 8, 4), generator=gen)
    logits = [torch.randn(1, 3, 8, 8, 4, generator=gen), torch.randn(1, 3, 4, 4, 2, generator=gen),
              torch.randn(1, 3, 2, 2, 1, generator=gen)]
    # nearest-exact shrinking by s takes source voxel floor((i + 0.5) * s): 2i + 1, then 4i + 2
    half, quarter = target[..., 1::2, 1::2, 1::2], target[..., 2::4, 2::4, 2::4]
    expected = base(logits[0], target) + 0.5 * base(logits[1], half) + 0.25 * base(logits[2], quarter)
    got = DeepSupervision(base)(logits, target)
    torch.testing.assert_close(got, expected)


def test_single_tensor_is_the_plain_loss():
    gen = torch.Generator().manual_seed(1)
    base = FocalGeneralizedDiceLoss()
    logits, target = torch.randn(1, 3, 8, 8, 4, generator=gen), torch.randint(0, 3, (1, 1, 8, 8, 4), generator=gen)
    torch.testing.assert_close(DeepSupervision(base)(logits, target), base(logits, target))
