"""CUDA paths that no CPU test reaches (issue 21). Marked ``gpu``; each test skips, with the reason,
where PyTorch sees no CUDA device. ``benchmarks/gpu_check.sh`` runs them with the GPU timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"no CUDA GPU visible to PyTorch {torch.__version__} (this is a CPU build or machine); "
                              "run benchmarks/gpu_check.sh where a GPU is lent"),
]

PAPER = {"base_filters": 32, "levels": 5}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_paper_network_forward_and_backward_under_autocast(dtype):
    from rrcunet.losses import build_loss
    from rrcunet.models import build_model

    torch.manual_seed(0)
    net = build_model("rrcunet", in_channels=2, out_channels=3, **PAPER).cuda()
    x = torch.randn(1, 2, 256, 256, 48, device="cuda")
    label = torch.randint(0, 3, (1, 1, 256, 256, 48), device="cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    with torch.autocast("cuda", dtype=dtype):
        out = net(x)
        loss = build_loss("focal_gdl")(out.float(), label)
    scaler.scale(loss).backward()
    assert out.shape == (1, 3, 256, 256, 48) and torch.isfinite(loss)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_sliding_window_inference_runs_on_the_device(tmp_path):
    from rrcunet.inference import InferenceConfig, Predictor
    from tests.inference.helpers import save_tiny_model

    tiny_model = save_tiny_model(tmp_path / "tiny.safetensors")
    gpu = Predictor.from_file(tiny_model, config=InferenceConfig(device="cuda", sliding_window=True,
                                                                 roi_size=(32, 32, 16)))
    cpu = Predictor.from_file(tiny_model, config=InferenceConfig(device="cpu", bf16=False, sliding_window=True,
                                                                 roi_size=(32, 32, 16)))
    x = torch.randn(2, 64, 64, 32, generator=torch.Generator().manual_seed(0))
    assert next(gpu.model.parameters()).is_cuda
    torch.testing.assert_close(gpu.run_network(x), cpu.run_network(x), atol=1e-3, rtol=1e-3)


def test_nccl_ddp_with_one_process(monkeypatch):
    """One training step of the network wrapped in DistributedDataParallel over an NCCL group of one."""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from rrcunet.models import build_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        net = DistributedDataParallel(build_model("rrcunet", base_filters=8, levels=4).cuda(), device_ids=[0])
        out = net(torch.randn(1, 2, 64, 64, 32, device="cuda"))
        out.float().square().mean().backward()
        assert dist.get_backend() == "nccl"
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


def test_predict_on_the_gpu_matches_the_cpu_on_phantoms(tmp_path):
    from rrcunet.cli.main import main
    from rrcunet.io import read_image, write_volume
    from rrcunet.synthetic import PhantomConfig, generate_phantom

    for seed in (1, 2):
        write_volume(generate_phantom(seed, config=PhantomConfig.preset("small")).image, tmp_path / "in" / f"p{seed}.nii.gz")
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "gpu"), "--device", "cuda", "--fp32",
                 "--no-progress"]) == 0
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "cpu"), "--device", "cpu", "--fp32",
                 "--no-progress"]) == 0
    for seed in (1, 2):
        a = np.asarray(read_image(tmp_path / "gpu" / f"p{seed}_seg.nii.gz", kind="label").array)
        b = np.asarray(read_image(tmp_path / "cpu" / f"p{seed}_seg.nii.gz", kind="label").array)
        assert (a == b).mean() > 0.999
