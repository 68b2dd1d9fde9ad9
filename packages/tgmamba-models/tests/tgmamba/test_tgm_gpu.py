"""TGMamba on CUDA (marker gpu): README example, fused (Triton graph scan) vs the per-step PyG
reference in fp64 on CPU (outputs and every gradient), streaming, stability at L = 2000."""

import copy

import pytest
import torch

from ssm_kernels.testing import assert_close_to_reference, requires_cuda, seed_all
from tgmamba_models import TGMamba, TGMambaClassifier, TGMambaClassifierConfig

pytestmark = [pytest.mark.gpu, requires_cuda]


def _graph(batch, V):
    src = [b * V + v for b in range(batch) for v in range(V - 1)]
    dst = [b * V + v + 1 for b in range(batch) for v in range(V - 1)]
    ei = torch.tensor([src + dst, dst + src])
    return ei, torch.linspace(0.2, 1.0, ei.shape[1], dtype=torch.float64)


def test_readme_example_cuda():
    batch, length, dim = 2, 64, 32
    x = torch.randn(batch, length, dim).to("cuda")
    model = TGMamba(d_model=dim, d_state=16, d_conv=4, expand=2).to("cuda")
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def _grads(model, x, ei, ew, gout, path):
    x = x.clone().requires_grad_(True)
    y = model(x, ei, ew, path=path)
    g = torch.autograd.grad((y * gout).sum(), [x, *model.parameters()], allow_unused=True)
    return y, g


@pytest.mark.parametrize("conv_type", ["gcnconv", "chebconv", "graphconv", "none"])
@pytest.mark.parametrize("batch,V,L", [(3, 19, 10), (2, 5, 67), (1, 3, 1)], ids=["tusz-like", "odd-L67", "L1"])
def test_cuda_fused_matches_fp64_reference(conv_type, batch, V, L):
    seed_all(0)
    m64 = TGMamba(d_model=16, d_state=8, num_vertices=V, conv_type=conv_type, attn_time_varying=True,
                  attn_softmax_temp=0.5).double()  # fmt: skip
    with torch.no_grad():
        for layer in (m64.gconv_A, m64.gconv_C):
            if layer is not None:
                for p in layer.parameters():
                    p.add_(0.2 * torch.randn_like(p))
    m32_cpu = copy.deepcopy(m64).float()
    m32 = copy.deepcopy(m32_cpu).cuda()
    x = torch.randn(batch * V, L, 16, dtype=torch.float64)
    ei, ew = _graph(batch, V)
    gout = torch.randn_like(x)
    y_hi, g_hi = _grads(m64, x, ei, ew, gout, "reference")
    y_lo, g_lo = _grads(m32_cpu, x.float(), ei, ew.float(), gout.float(), "reference")
    y_f, g_f = _grads(m32, x.float().cuda(), ei.cuda(), ew.float().cuda(), gout.float().cuda(), "fused")
    assert_close_to_reference("y", y_f, y_hi, y_lo, factor=4)
    names = ["x"] + [n for n, _ in m64.named_parameters()]
    for n, a, hi, lo in zip(names, g_f, g_hi, g_lo):
        if hi is not None:
            assert_close_to_reference(f"d{n}", a, hi, lo, factor=4, floor=1e-4)


@pytest.mark.parametrize("conv_type", ["gcnconv", "chebconv", "graphconv", "none", "gatv2conv"])
def test_cuda_streaming_matches_forward(conv_type):
    seed_all(1)
    batch, V, L = 2, 19, 24
    m = TGMamba(d_model=16, d_state=8, num_vertices=V, conv_type=conv_type).cuda()
    x = torch.randn(batch * V, L, 16, device="cuda")
    ei, ew = _graph(batch, V)
    ei, ew = ei.cuda(), ew.float().cuda()
    with torch.no_grad():
        y = m(x, ei, ew)
    cache = m.allocate_inference_cache(batch)
    ys = torch.stack([m.step(x[:, t], cache, ei, ew) for t in range(L)], 1)
    assert_close_to_reference("y_stream", ys, y, floor=1e-4)


def test_cuda_classifier_trains_finite_at_L2000():
    seed_all(2)
    V = 19
    cfg = TGMambaClassifierConfig(num_vertices=V, in_features=1, num_classes=2, num_layers=2, attn_time_varying=True)
    m = TGMambaClassifier(cfg).cuda()
    ei, ew = _graph(4, V)
    x = 3 * torch.randn(4 * V, 2000, 1, device="cuda")
    yb = torch.tensor([0, 1, 0, 1], device="cuda")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(4):
        opt.zero_grad()
        logits = m(x, ei.cuda(), ew.float().cuda())
        assert torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, yb).backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
