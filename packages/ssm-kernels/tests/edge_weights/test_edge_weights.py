"""edge_weights_fn: the reference against a per-(batch row, step) loop written from the definition, gradcheck, input
errors, and the Triton path (outputs and the gradients of q, k, g, adj0 and skip) against the reference: under
TRITON_INTERPRET=1 on tiny awkward shapes (marker ``interpret``) and on CUDA at TGMamba's shapes (marker ``gpu``)."""

from __future__ import annotations

import math

import pytest
import torch

from ssm_kernels import edge_weights_fn, edge_weights_ref
from ssm_kernels.backend import BackendUnavailableError, triton_available, triton_interpret
from ssm_kernels.testing import requires_cuda

needs_interpret = pytest.mark.skipif(
    not (triton_available() and triton_interpret()), reason="needs triton and TRITON_INTERPRET=1"
)
KW = dict(attn_scale=0.8, threshold=0.12, dyn_scale=0.35)


def _naive(q, k, g, adj0, skip, attn_scale, threshold, dyn_scale):
    """Scalar loops over (b, t, i, j) in float64, from the formula in edge_weights_fn's docstring."""
    emb = q if q is not None else g
    batch, T, V = emb.shape[:3]
    out = torch.zeros(batch, T, V, V, dtype=torch.float64)
    for b in range(batch):
        for t in range(T):
            a0 = None
            if adj0 is not None:
                a0 = adj0[min(b, adj0.shape[0] - 1), min(t, adj0.shape[1] - 1)].double()
            if q is not None:
                qt, kt = q[b, t].double(), k[b, t].double()
                S = torch.zeros(V, V, dtype=torch.float64)
                for i in range(V):
                    row = [float(qt[i] @ kt[j]) * attn_scale for j in range(V)]
                    m = max(row)
                    e = [math.exp(r - m) for r in row]
                    for j in range(V):
                        S[i, j] = e[j] / sum(e)
                base = torch.zeros(V, V, dtype=torch.float64)
                for i in range(V):
                    for j in range(V):
                        s = 0.5 * (S[i, j] + S[j, i])
                        base[i, j] = s if s >= threshold else 0.0
                if a0 is not None:
                    base = base + a0
            else:
                base = a0.clone()
            for i in range(V):
                for j in range(V):
                    if i == j:
                        continue
                    w = base[i, j]
                    if g is not None:
                        dyn = 1.0 / (1.0 + math.exp(-float(g[b, t, i].double() @ g[b, t, j].double()) * dyn_scale))
                        s = float(skip)
                        w = s * w + (1.0 - s) * dyn * (1.0 if w > 0 else 0.0)
                    out[b, t, i, j] = w
    return out


def _inputs(batch, T, V, E, F, adj_shape=(1, 1), dtype=torch.float32, g_dtype=None, device="cpu", strided=False,
            seed=0, q_scale=1.0):  # fmt: skip
    """q, k (strided: the two halves of one (.., 2E) projection, as EdgeLearner's), g, adj0 (a sparse-ish
    non-negative graph of the given leading shape), skip."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        qk = torch.randn(batch, T, V, 2 * E, generator=gen) * q_scale
        q, k = qk.chunk(2, dim=-1)
    else:
        q = torch.randn(batch, T, V, E, generator=gen) * q_scale
        k = torch.randn(batch, T, V, E, generator=gen) * q_scale
    g = torch.randn(batch, T, V, F, generator=gen)
    adj0 = torch.rand(*adj_shape, V, V, generator=gen) * (torch.rand(*adj_shape, V, V, generator=gen) < 0.4)
    skip = torch.tensor(0.3)
    cast = dict(device=device, dtype=dtype)
    return (q.to(**cast), k.to(**cast), g.to(device=device, dtype=g_dtype or dtype), adj0.to(**cast),
            skip.to(**cast))  # fmt: skip


VARIANTS = {  # which of q / k, g, adj0 a call gets
    "attn-dyn-adj": (True, True, True),
    "attn-dyn": (True, True, False),
    "attn-adj": (True, False, True),
    "attn": (True, False, False),
    "dyn-adj": (False, True, True),
}


def _pick(variant, q, k, g, adj0, skip):
    has_q, has_g, has_a = VARIANTS[variant]
    return (q if has_q else None, k if has_q else None, g if has_g else None, adj0 if has_a else None,
            skip if has_g else None)  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("adj_shape", [(1, 1), (2, 3)], ids=["adj-shared", "adj-per-step"])
def test_reference_matches_naive(variant, adj_shape):
    args = _pick(variant, *_inputs(2, 3, 5, 4, 3, adj_shape, strided=True, q_scale=0.6))
    got = edge_weights_ref(*args, **KW)
    assert got.shape == (2, 3, 5, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _naive(*args, **KW), rtol=1e-5, atol=1e-6)


def test_reference_prunes_and_keeps_edges():
    """The threshold removes weak attention edges (some entries 0, some not) and the result has no self loops."""
    q, k, g, adj0, skip = _inputs(2, 3, 6, 4, 3, q_scale=1.5)
    out = edge_weights_ref(q, k, None, None, None, **KW)
    off = out[..., ~torch.eye(6, dtype=torch.bool)]
    assert (off == 0).any() and (off > 0).any()
    assert (out.diagonal(dim1=-2, dim2=-1) == 0).all()


def test_reference_gradcheck():
    q, k, g, adj0, skip = _inputs(2, 2, 4, 3, 3, (2, 1), dtype=torch.float64, seed=5, q_scale=0.5)
    args = [t.clone().requires_grad_(True) for t in (q, k, g, adj0, skip)]

    def fn(*a):
        return edge_weights_ref(*a, attn_scale=0.8, threshold=0.1, dyn_scale=0.35)

    sym = None  # no attention entry within gradcheck's step of the threshold (it would see the jump)
    with torch.no_grad():
        s = torch.softmax(q @ k.transpose(-1, -2) * 0.8, -1)
        sym = 0.5 * (s + s.transpose(-1, -2))
    assert (sym - 0.1).abs().min() > 1e-4
    assert torch.autograd.gradcheck(fn, args)


def test_bad_inputs_name_the_argument():
    q, k, g, adj0, skip = _inputs(2, 3, 5, 4, 3)
    with pytest.raises(ValueError, match="q and k must be given together"):
        edge_weights_fn(q, None, g, adj0, skip, **KW)
    with pytest.raises(ValueError, match="nothing to compute"):
        edge_weights_fn(None, None, None, adj0, None, **KW)
    with pytest.raises(ValueError, match="adj0 is required"):
        edge_weights_fn(None, None, g, None, skip, **KW)
    with pytest.raises(ValueError, match="q must have shape"):
        edge_weights_fn(q[0], k[0], g, adj0, skip, **KW)
    with pytest.raises(ValueError, match="k must have shape"):
        edge_weights_fn(q, k[:, :2], g, adj0, skip, **KW)
    with pytest.raises(ValueError, match="k must have q's feature size"):
        edge_weights_fn(q, k[..., :2], g, adj0, skip, **KW)
    with pytest.raises(ValueError, match="g must have shape"):
        edge_weights_fn(q, k, g[:, :, :4], adj0, skip, **KW)
    with pytest.raises(ValueError, match="skip is required"):
        edge_weights_fn(q, k, g, adj0, None, **KW)
    with pytest.raises(ValueError, match="skip must have shape"):
        edge_weights_fn(q, k, g, adj0, skip.view(1), **KW)
    with pytest.raises(ValueError, match="adj0 must have shape"):
        edge_weights_fn(q, k, g, adj0[..., :4], skip, **KW)
    with pytest.raises(ValueError, match="adj0 must have shape"):
        edge_weights_fn(q, k, g, adj0.expand(1, 2, 5, 5), skip, **KW)
    with pytest.raises(TypeError, match="g must have dtype"):
        edge_weights_fn(q, k, g.to(torch.int64), adj0, skip, **KW)
    with pytest.raises(ValueError, match="threshold must be finite"):
        edge_weights_fn(q, k, g, adj0, skip, attn_scale=1.0, threshold=float("nan"), dyn_scale=1.0)


def _near_threshold_steps(q, k, kw, margin=1e-5):
    """(batch, T) mask of the steps whose symmetric attention has an entry within ``margin`` of the threshold (float64
    reference values): fp32 rounding may put such an entry on either side of it, a jump of about the threshold in the
    output. At the raw shape's 11.5 million entries about 1% of the steps have one (321 of 32,000 in run31b); the
    comparison leaves them out."""
    if q is None:
        return None
    s = torch.softmax(q.double() @ k.double().transpose(-1, -2) * kw["attn_scale"], -1)
    sym = 0.5 * (s + s.transpose(-1, -2))
    near = ((sym - kw["threshold"]).abs() < margin).any(-1).any(-1)
    assert near.float().mean() < 0.05, f"{int(near.sum())} steps near the threshold: the case tests too little"
    return near


def _check_against_reference(args, rtol, atol, kw=KW, half_grads=()):
    """The dispatched op (Triton under TRITON_INTERPRET=1 / on CUDA) against the float64 reference: output and the
    gradients of every given input (those named in ``half_grads`` are returned in a half dtype: bf16 rounding).
    Steps with an attention entry at the threshold (``_near_threshold_steps``) are left out of the output's
    comparison and get no output gradient."""
    names = ["q", "k", "g", "adj0", "skip"]
    mine = [None if t is None else t.detach().clone().requires_grad_(True) for t in args]
    ref = [None if t is None else t.detach().double().requires_grad_(True) for t in args]
    out = edge_weights_fn(*mine, **kw)
    want = edge_weights_ref(*ref, **kw)
    assert type(out.grad_fn).__name__ == "_EdgeWeightsBackward", "the Triton path did not run"
    assert out.shape == want.shape
    gen = torch.Generator().manual_seed(1)
    go = torch.randn(out.shape, generator=gen).to(out)
    near = _near_threshold_steps(args[0], args[1], kw)
    if near is not None:
        go[near] = 0.0
    out.backward(go)
    want.backward(go.double())
    keep = slice(None) if near is None else ~near
    torch.testing.assert_close(out.double()[keep], want[keep], rtol=rtol, atol=atol, msg="out")
    for n, a, b in zip(names, mine, ref):
        if a is None:
            continue
        assert a.grad is not None, f"d{n} is missing"
        assert a.grad.dtype == a.dtype and a.grad.shape == a.shape, f"d{n} dtype / shape"
        scale = b.grad.abs().max().item()
        r, t = (1e-2, 1e-2) if n in half_grads else (rtol, atol)
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=r, atol=t * max(1.0, scale), msg=f"d{n}")
    return out


INTERP_CASES = [
    # id, (batch, T, V, E, F), adj0 leading shape, strided q / k
    ("V5-E20-F12", (2, 3, 5, 20, 12), (1, 1), True),
    ("V17-E33-F7", (1, 2, 17, 33, 7), (1, 2), False),
    ("V3-T1", (3, 1, 3, 4, 40), (3, 1), True),
    ("V2-E1", (2, 2, 2, 1, 1), (2, 2), False),
]


@pytest.mark.interpret
@needs_interpret
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape,adj_shape,strided", [c[1:] for c in INTERP_CASES], ids=[c[0] for c in INTERP_CASES])
def test_triton_interpret(shape, adj_shape, strided, variant):
    batch, T, V, E, F = shape
    args = _pick(variant, *_inputs(batch, T, V, E, F, adj_shape, strided=strided, seed=V, q_scale=0.5))
    _check_against_reference(args, rtol=1e-5, atol=1e-5)


@pytest.mark.interpret
@needs_interpret
def test_triton_interpret_half_g_and_no_grad():
    """bf16 g with fp32 q / k (a bf16 EdgeLearner's edge MLP): the result is fp32; inference skips autograd."""
    args = _inputs(2, 3, 6, 8, 16, (2, 3), g_dtype=torch.bfloat16, seed=2, q_scale=0.5)
    out = _check_against_reference(args, rtol=1e-5, atol=1e-5, half_grads=("g",))
    assert out.dtype == torch.float32
    with torch.no_grad():
        again = edge_weights_fn(*args, **KW)
    assert again.grad_fn is None
    torch.testing.assert_close(again, out.detach(), rtol=0, atol=0)


@pytest.mark.interpret
@needs_interpret
def test_triton_interpret_large_v_and_forcing(monkeypatch):
    """V > 64 goes to the reference under auto; forcing Triton there raises, naming the limit."""
    args = _inputs(1, 1, 65, 4, 4, seed=3)
    out = edge_weights_fn(*args, **KW)
    assert out.grad_fn is None or "_EdgeWeights" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, edge_weights_ref(*args, **KW))
    monkeypatch.setenv("SSM_KERNELS_BACKEND_EDGE_WEIGHTS", "triton")
    with pytest.raises(BackendUnavailableError, match="V <= 64"):
        edge_weights_fn(*args, **KW)


GPU_CASES = [
    # id, (batch, T, V, E, F), adj0 leading shape
    ("tusz", (256, 10, 19, 32, 32), (256, 1)),
    ("raw", (16, 2000, 19, 32, 32), (16, 1)),
    ("V64-E96", (4, 50, 64, 96, 96), (1, 1)),
    ("V8-T1", (64, 1, 8, 16, 24), (64, 1)),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("variant", ["attn-dyn-adj", "attn", "dyn-adj"])
@pytest.mark.parametrize("shape,adj_shape", [c[1:] for c in GPU_CASES], ids=[c[0] for c in GPU_CASES])
def test_triton_gpu(shape, adj_shape, variant):
    batch, T, V, E, F = shape
    # EdgeLearner's scales at d_model 32: 1 / (sqrt(32) * 0.01) and 1 / sqrt(32)
    kw = dict(attn_scale=1 / (math.sqrt(E) * 0.01), threshold=0.1, dyn_scale=1 / math.sqrt(F))
    args = _pick(variant, *_inputs(batch, T, V, E, F, adj_shape, device="cuda", strided=True, seed=V, q_scale=0.1))
    _check_against_reference(args, rtol=1e-4, atol=1e-4, kw=kw)
