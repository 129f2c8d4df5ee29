"""Run by ``torch.distributed.run`` in test_ddp.py (2 CPU processes, gloo).

1. Train with the given overrides, then save this rank's final weights (``rank<R>.safetensors``).
2. Run the validation step (:func:`evaluate` + pooled reduction + :func:`val_metrics`) on
   hand-made cases, 2 on rank 0 and 1 on rank 1, with a stand-in network whose logits are the
   one-hot of a prediction stored in the image; rank 0 writes the metrics to ``reduce.json``.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py RUN_DIR KEY=VALUE ...``
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from rrcunet.losses import build_loss
from rrcunet.training import load_config, train
from rrcunet.models.model_file import model_tensors
from rrcunet.training.distributed import setup_distributed
from rrcunet.training.trainer import evaluate, reduce_val_sums, val_metrics

# (prediction, truth) per case along a 4-voxel line; tumour = 2.
CASES = {0: [([2, 2, 0, 0], [2, 2, 0, 0]), ([2, 0, 0, 0], [2, 2, 0, 0])], 1: [([0, 0, 0, 2], [2, 0, 0, 0])]}


class OneHotOfImage(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pred = image[:, 0].long()
        return 10.0 * torch.nn.functional.one_hot(pred, 3).permute(0, 4, 1, 2, 3).float()


def main() -> None:
    run_dir, overrides = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")  # train() then uses this group and leaves it open
    result = train(load_config(None, overrides), run_dir)
    rank = dist.get_rank()
    save_file(model_tensors(result.model), os.path.join(run_dir, f"rank{rank}.safetensors"))

    ctx = setup_distributed("cpu")
    batches = [{"image": torch.tensor(p, dtype=torch.float32).view(1, 1, 4, 1, 1),
                "label": torch.tensor(t).view(1, 1, 4, 1, 1)} for p, t in CASES[rank]]
    sums = evaluate(model=OneHotOfImage(), batches=batches, loss_fn=build_loss(), device=torch.device("cpu"),
                    n_classes=3)
    metrics = val_metrics(reduce_val_sums(sums, ctx), {0: "background", 1: "lung", 2: "tumour"}, 2)
    if rank == 0:
        with open(os.path.join(run_dir, "reduce.json"), "w") as fh:
            json.dump(metrics, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
