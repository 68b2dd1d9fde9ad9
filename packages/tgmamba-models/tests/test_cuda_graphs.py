"""CUDAGraphedForward: eager fallbacks and argument checks on CPU; on CUDA (marker gpu) graphed training steps of the
TGMamba classifier against eager ones (losses and parameters after AdamW steps), one graph per signature, eval and
autocast behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ssm_kernels.testing import requires_cuda, seed_all
from tgmamba_models import TGMambaClassifier, TGMambaClassifierConfig
from tgmamba_models.cuda_graphs import CUDAGraphedForward, _validation_off

V, L, F_IN = 5, 7, 3


def _ring(device="cpu"):
    src = list(range(V)) + [(v + 1) % V for v in range(V)]
    dst = [(v + 1) % V for v in range(V)] + list(range(V))
    ei = torch.tensor([src, dst], device=device)
    return ei, torch.linspace(0.3, 1.0, ei.shape[1], device=device)


def _classifier(device="cpu", dropout=0.0, **kw):
    seed_all(0)
    cfg = TGMambaClassifierConfig(
        num_vertices=V, in_features=F_IN, num_classes=2, d_model=16, d_state=8, num_layers=2, dropout=dropout,
        conv_type="graphconv", attn_time_varying=True, **kw,
    )  # fmt: skip
    return TGMambaClassifier(cfg).to(device)


def test_cpu_calls_run_eagerly():
    model = _classifier()
    graphed = CUDAGraphedForward(model)
    x = torch.randn(4, V, L, F_IN)
    ei, ew = _ring()
    torch.testing.assert_close(graphed(x, ei, ew), model(x, ei, ew), rtol=0, atol=0)
    assert graphed.num_graphs == 0


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        CUDAGraphedForward(lambda x: x)
    with pytest.raises(ValueError, match="max_graphs"):
        CUDAGraphedForward(torch.nn.Linear(2, 2), max_graphs=-1)
    with pytest.raises(ValueError, match="num_warmup_iters"):
        CUDAGraphedForward(torch.nn.Linear(2, 2), num_warmup_iters=0)


def test_validation_off_restores_every_flag():
    model = _classifier()
    model.blocks[1].validate_inputs = False  # a mixed state comes back as it was
    before = [m.validate_inputs for m in model.modules() if hasattr(m, "validate_inputs")]
    assert len(before) == 3  # the classifier and its two blocks
    with pytest.raises(RuntimeError, match="inside"):
        with _validation_off(model):
            assert not any(m.validate_inputs for m in model.modules() if hasattr(m, "validate_inputs"))
            raise RuntimeError("inside")
    assert [m.validate_inputs for m in model.modules() if hasattr(m, "validate_inputs")] == before


# ---------------------------------------------------------------------------------------------------- CUDA


def _train(model, call, batches, ei, ew):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(call(x, ei, ew), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _batches(sizes, device="cuda"):
    g = torch.Generator(device="cpu").manual_seed(1)
    return [
        (torch.randn(b, V, L, F_IN, generator=g).to(device), torch.randint(0, 2, (b,), generator=g).to(device))
        for b in sizes
    ]


@pytest.mark.gpu
@requires_cuda
def test_cuda_graphed_training_matches_eager():
    """Four AdamW steps on one batch shape: one capture, then replays; the losses and the trained parameters
    equal an eager copy's (the same kernels in the same order)."""
    ei, ew = _ring("cuda")
    eager = _classifier("cuda")
    model = copy.deepcopy(eager)
    graphed = CUDAGraphedForward(model)
    batches = _batches([6, 6, 6, 6])
    want = _train(eager, eager, batches, ei, ew)
    got = _train(model, graphed, batches, ei, ew)
    assert graphed.num_graphs == 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert model.validate_inputs and all(b.validate_inputs for b in model.blocks)


@pytest.mark.gpu
@requires_cuda
def test_cuda_one_graph_per_signature_then_eager():
    """A new batch size gets its own graph up to max_graphs; past it the call runs eagerly, with one warning; the
    losses still equal eager training's."""
    ei, ew = _ring("cuda")
    eager = _classifier("cuda")
    model = copy.deepcopy(eager)
    graphed = CUDAGraphedForward(model, max_graphs=2)
    batches = _batches([6, 3, 6, 5, 3, 5])
    want = _train(eager, eager, batches, ei, ew)
    with pytest.warns(UserWarning, match="max_graphs=2"):
        got = _train(model, graphed, batches, ei, ew)
    assert graphed.num_graphs == 2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    graphed.reset()
    assert graphed.num_graphs == 0


@pytest.mark.gpu
@requires_cuda
def test_cuda_eval_and_no_grad_run_eagerly():
    """Evaluation and grad-disabled calls run the model itself, with its input checks."""
    ei, ew = _ring("cuda")
    model = _classifier("cuda")
    graphed = CUDAGraphedForward(model)
    x = torch.randn(4, V, L, F_IN, device="cuda")
    model.eval()
    torch.testing.assert_close(graphed(x, ei, ew), model(x, ei, ew), rtol=0, atol=0)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        graphed(x, ei, ew)
    model.train()
    with torch.no_grad(), pytest.raises(ValueError, match="NaN"):
        graphed(x, ei, ew)
    assert graphed.num_graphs == 0


def _loss_and_grads(model, call, x, y, ei, ew):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(call(x, ei, ew), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.gpu
@requires_cuda
def test_cuda_graphed_autocast_and_dropout():
    """Under bf16 autocast (Lightning's bf16-mixed) the graph is captured and replayed in bf16 and is a signature of
    its own: a replay's loss and gradients match eager autocast's to bf16 rounding (cuBLAS may pick other kernels
    under capture, so not bit for bit). With dropout every replay draws new masks."""
    ei, ew = _ring("cuda")
    eager = _classifier("cuda")
    model = copy.deepcopy(eager)
    graphed = CUDAGraphedForward(model)
    (x, y) = _batches([6])[0]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        want_loss, want = _loss_and_grads(eager, eager, x, y, ei, ew)
        _loss_and_grads(model, graphed, x, y, ei, ew)  # the capture
        got_loss, got = _loss_and_grads(model, graphed, x, y, ei, ew)  # a replay
    assert graphed.num_graphs == 1
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-2, atol=1e-3)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g - w).norm() <= 3e-2 * w.norm() + 1e-6
    graphed(x, ei, ew)  # fp32 now: a second graph
    assert graphed.num_graphs == 2

    dropped = CUDAGraphedForward(_classifier("cuda", dropout=0.5))
    outs = [dropped(x, ei, ew).detach().clone() for _ in range(3)]
    assert dropped.num_graphs == 1
    assert not torch.equal(outs[1], outs[2])  # replays draw fresh dropout masks
