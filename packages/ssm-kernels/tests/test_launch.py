"""FastLaunch: direct launches of compiled Triton kernels (ssm_kernels._launch).

The CPU tests drive the caching logic with a stand-in for Triton's launch (recording what a compiled kernel
would be launched with); the GPU test launches a real kernel through every specialisation change.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from ssm_kernels import _launch  # noqa: E402
from ssm_kernels._launch import FastLaunch, spec_key  # noqa: E402

# The CPU tests need Triton installed: CI runs them in its Triton session (-m interpret); the GPU tests also carry
# the gpu marker and skip without CUDA.
pytestmark = pytest.mark.interpret


def _scale(x_ptr, y_ptr, n, s, BLOCK: tl.constexpr, TWICE: tl.constexpr = False):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    v = tl.load(x_ptr + offs, mask=m) * s
    if TWICE:
        v = v * 2.0
    tl.store(y_ptr + offs, v, mask=m)


def _compiled_jit(fn):
    """``triton.jit`` as on a GPU machine even under TRITON_INTERPRET=1 (the CI's Triton session), so the caching
    logic is tested there too (a JITFunction is only inspected here, never compiled or launched on the CPU)."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        return triton.jit(fn)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


_scale_kernel = _compiled_jit(_scale)
_tuned_scale_kernel = triton.autotune(configs=[triton.Config({"BLOCK": 64}, num_warps=2)], key=["n"])(
    _compiled_jit(_scale)
)


class _Compiled:
    """Stands in for triton's CompiledKernel: records the direct launches."""

    function = "fn-handle"
    packed_metadata = "meta"

    def __init__(self, tag):
        self.tag = tag
        self.runs = []

    def run(self, *a):
        self.runs.append(a)


class _FakeTriton:
    """Stands in for ``kernel[grid](...)`` (Triton's own launch path): counts calls, returns a new _Compiled."""

    def __init__(self, real, config=None):
        self.real = real
        self.calls = []
        self.compiled = []
        if config is not None:
            self.best_config = config

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            c = _Compiled(len(self.compiled))
            self.compiled.append(c)
            return c

        return launch

    def __getattr__(self, name):  # keys, fn, ... of the real kernel
        return getattr(self.real, name)


@pytest.fixture
def direct(monkeypatch):
    assert isinstance(_scale_kernel, triton.runtime.JITFunction)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SSM_KERNELS_FAST_LAUNCH", raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(_launch, "_raw_stream", lambda device: 7)


def _fast(kernel, config=None):
    fl = FastLaunch(kernel)
    fake = _FakeTriton(kernel, config)
    fl.kernel = fake
    return fl, fake


def test_spec_key_mirrors_triton_specialisation():
    x = torch.zeros(64)
    assert spec_key([x]) == spec_key([torch.ones(64)])
    assert spec_key([x]) != spec_key([x[1:]])  # 4-byte offset: not 16-byte aligned
    assert spec_key([x]) != spec_key([x.double()])
    assert spec_key([32]) == spec_key([48]) != spec_key([40])  # divisibility by 16
    assert spec_key([1]) != spec_key([17]) and spec_key([1]) != spec_key([2])
    assert spec_key([2**31]) != spec_key([2**4]) and spec_key([2**40]) != spec_key([2**31])
    assert spec_key([True]) == spec_key([False]) != spec_key([1])
    assert spec_key([0.5]) == spec_key([2.0]) and spec_key([None]) != spec_key([0.0])


def test_second_call_launches_the_compiled_kernel(direct):
    fl, fake = _fast(_scale_kernel)
    x, y = torch.zeros(100), torch.zeros(100)
    grid = lambda meta: (triton.cdiv(meta["n"], meta["BLOCK"]),)
    fl[grid](x, y, 100, 2.0, BLOCK=32)
    assert len(fake.calls) == 1 and fake.compiled[0].runs == []
    fl[grid](x, y, 100, 3.0, BLOCK=32)
    assert len(fake.calls) == 1
    (run,) = fake.compiled[0].runs
    # grid from the named arguments, the stream, the compiled handles, no hooks, then every argument in
    # signature order: the runtime ones as passed, the constexprs (TWICE from its default)
    assert run[:9] == (4, 1, 1, 7, "fn-handle", "meta", None, None, None)
    assert run[9] is x and run[10] is y and run[11:] == (100, 3.0, 32, False)


@pytest.mark.parametrize(
    "change",
    ["misaligned", "dtype", "n_not_div16", "n_is_1", "constexpr", "num_warps", "device"],
)
def test_every_specialisation_change_goes_through_triton(direct, monkeypatch, change):
    fl, fake = _fast(_scale_kernel)
    x, y = torch.zeros(128), torch.zeros(128)
    args, kw = [x, y, 32, 1.0], {"BLOCK": 32}
    fl[(1,)](*args, **kw)
    fl[(1,)](*args, **kw)
    assert len(fake.calls) == 1
    if change == "misaligned":
        args[0] = x[1:]
    elif change == "dtype":
        args[1] = y.half()
    elif change == "n_not_div16":
        args[2] = 33
    elif change == "n_is_1":
        args[2] = 1
    elif change == "constexpr":
        kw["TWICE"] = True
    elif change == "num_warps":
        kw["num_warps"] = 8
    else:
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    fl[(1,)](*args, **kw)
    assert len(fake.calls) == 2
    fl[(1,)](*args, **kw)
    assert len(fake.calls) == 2 and len(fake.compiled[1].runs) == 1


def test_autotuned_kernel_keys_on_tuning_arguments_and_uses_the_tuned_config(direct):
    fl, fake = _fast(_tuned_scale_kernel, config=triton.Config({"BLOCK": 64}, num_warps=2))
    x, y = torch.zeros(128), torch.zeros(128)
    fl[(1,)](x, y, 32, 1.0)
    fl[(1,)](x, y, 32, 1.0)
    assert len(fake.calls) == 1
    assert fake.compiled[0].runs[0][13:] == (64, False)  # BLOCK from the tuned config
    fl[(1,)](x, y, 48, 1.0)  # same specialisation as 32 but another autotune key
    assert len(fake.calls) == 2


def test_fallbacks_use_triton_every_time(direct, monkeypatch):
    x, y = torch.zeros(64), torch.zeros(64)
    fl, fake = _fast(_scale_kernel)
    monkeypatch.setenv("SSM_KERNELS_FAST_LAUNCH", "0")
    for _ in range(3):
        fl[(1,)](x, y, 64, 1.0, BLOCK=32)
    assert len(fake.calls) == 3
    monkeypatch.delenv("SSM_KERNELS_FAST_LAUNCH")
    hook = triton.knobs.runtime.launch_enter_hook
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", lambda *a: None)  # a profiler's hook
    for _ in range(2):
        fl[(1,)](x, y, 64, 1.0, BLOCK=32)
    assert len(fake.calls) == 5
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", hook)
    # a runtime argument passed by keyword: the kernel stops using the direct path (no tensors in keys)
    fl2, fake2 = _fast(_scale_kernel)
    for _ in range(3):
        fl2[(1,)](x, y, 64, s=1.0, BLOCK=32)
    assert len(fake2.calls) == 3 and not fl2._cache


def test_unknown_launcher_signature_falls_back_to_triton(direct):
    """A compiled kernel whose launcher rejects the arguments (another Triton version): warn once, relaunch
    through Triton, and keep using Triton's path."""
    fl, fake = _fast(_scale_kernel)
    x, y = torch.zeros(64), torch.zeros(64)
    fl[(1,)](x, y, 64, 1.0, BLOCK=32)

    def bad_run(*a):
        raise TypeError("launcher takes 12 positional arguments")

    fake.compiled[0].run = bad_run
    with pytest.warns(RuntimeWarning, match="direct Triton launches disabled"):
        fl[(1,)](x, y, 64, 1.0, BLOCK=32)
    assert len(fake.calls) == 2
    fl[(1,)](x, y, 64, 1.0, BLOCK=32)
    assert len(fake.calls) == 3


def test_interpreter_uses_tritons_launch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not _launch.fast_launch_enabled()


def _fast_calls(tree):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Subscript)
            and isinstance(node.func.value, ast.Call)
            and getattr(node.func.value.func, "id", None) == "fast"
        ):
            yield node


def test_package_launches_pass_only_constexprs_by_keyword():
    """Every ``fast(k)[grid](...)`` in the package passes runtime arguments positionally."""
    import ssm_kernels

    root = Path(ssm_kernels.__file__).parent
    options = {"num_warps", "num_stages", "num_ctas", "maxnreg"}
    seen = 0
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        defs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        for call in _fast_calls(tree):
            seen += 1
            name = call.func.value.args[0].id
            if name not in defs:  # a launcher taking the kernel as a parameter (graph scan's _launch)
                continue
            constexprs = {
                a.arg for a in defs[name].args.args if a.annotation and "constexpr" in ast.unparse(a.annotation)
            }
            for kw in call.keywords:
                if kw.arg is not None:
                    assert kw.arg in constexprs | options, f"{path.name}: {name} gets runtime {kw.arg!r} by keyword"
    assert seen >= 15


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_direct_launches_match_tritons(monkeypatch):
    monkeypatch.delenv("SSM_KERNELS_FAST_LAUNCH", raising=False)
    fl = FastLaunch(_scale_kernel)
    base = torch.randn(4099, device="cuda")
    cases = [(0, 4096, 1.5, False), (0, 4096, 2.5, False), (1, 4096, 2.5, False), (0, 4097, 0.5, False),
             (0, 1, 3.0, False), (3, 4000, -1.0, True), (0, 4096, 1.5, False)]  # fmt: skip
    for off, n, s, twice in cases:
        x = base[off : off + n]
        y = torch.full((n + 5,), 7.0, device="cuda")
        fl[lambda meta: (triton.cdiv(meta["n"], meta["BLOCK"]),)](x, y, n, s, BLOCK=128, TWICE=twice)
        torch.cuda.synchronize()
        want = x * s * (2.0 if twice else 1.0)
        torch.testing.assert_close(y[:n], want, rtol=0, atol=0)
        assert (y[n:] == 7.0).all()
    # aligned/misaligned x, n divisible by 16 / not / 1, TWICE: five specialisations, all kept
    assert len(fl._cache) == 5 and all(c is not None for c, _ in fl._cache.values())


def _ops_on(dev: str = "cuda"):
    """One call of every Triton op with gradients: (name, closure returning the tensors to compare)."""
    import ssm_kernels as sk
    from ssm_kernels.norms.interface import rms_norm_gated_fn
    from ssm_kernels.testing.causal_conv1d import make_conv1d_inputs
    from ssm_kernels.testing.graph_scan import make_graph_scan_inputs
    from ssm_kernels.testing.ssd import make_inputs
    from ssm_kernels.testing.state_update import make_state_update_inputs

    def with_grads(fn, leaves):
        def run():
            ls = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
            out = fn(**ls)
            out = out[0] if isinstance(out, tuple) else out
            gen = torch.Generator(device=dev).manual_seed(1)
            g = torch.randn(out.shape, generator=gen, device=dev, dtype=out.dtype)
            grads = torch.autograd.grad(out, list(ls.values()), g, allow_unused=True)
            return [out, *[x for x in grads if x is not None]]

        return run

    ssd = {k: v for k, v in make_inputs(2, 300, 4, 32, 1, 16, dtype=torch.bfloat16, device=dev).items()}
    ssd_leaves = {k: v for k, v in ssd.items() if v is not None}
    yield "ssd", with_grads(lambda **a: sk.mamba_chunk_scan_combined(chunk_size=64, dt_softplus=True,
                                                                      backend="triton", **a), ssd_leaves)  # fmt: skip
    gs = make_graph_scan_inputs(batch=2, V=5, D=8, N=4, L=40, K=2, T="L", mix_C=True, with_D=True, with_z=True,
                                with_bias=True, softplus=True, device=dev)  # fmt: skip
    gs_leaves = {k: v for k, v in gs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    gs_rest = {k: v for k, v in gs.items() if k not in gs_leaves}
    yield "graph_scan", with_grads(lambda **a: sk.graph_selective_scan_fn(**a, **gs_rest),
                                   gs_leaves)  # fmt: skip
    cv = {k: v for k, v in make_conv1d_inputs(2, 64, 37, 4, device=dev).items() if v is not None}
    yield "causal_conv1d", with_grads(lambda **a: sk.causal_conv1d_fn(**a, activation="silu", backend="triton"), cv)
    x = torch.randn(37, 96, device=dev)
    w = torch.randn(96, device=dev)
    zz = torch.randn(37, 96, device=dev)
    yield "rms_norm_gated", with_grads(lambda **a: rms_norm_gated_fn(**a, eps=1e-5, group_size=32,
                                                                        backend="triton"),
                                       {"x": x, "weight": w, "z": zz})  # fmt: skip
    r = torch.randn(37, 96, device=dev)
    yield "layer_norm", with_grads(lambda **a: sk.layer_norm_fn(**a, eps=1e-5, prenorm=True, backend="triton"),
                                   {"x": x, "weight": w, "bias": torch.randn(96, device=dev), "residual": r})  # fmt: skip
    su = make_state_update_inputs(3, 4, 16, 8, device=dev)

    def state_update():
        st = su["state"].clone()
        out = sk.selective_state_update(st, **{k: v for k, v in su.items() if k != "state"}, dt_softplus=True,
                                        backend="triton")  # fmt: skip
        return [out, st]

    yield "state_update", state_update


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_every_op_same_results_with_direct_launches(monkeypatch):
    """Each op: Triton's launch, then two direct-launch calls (the first fills the cache, the second uses
    it): same tensors, bit for bit (same compiled kernels and configs; these shapes use no atomics)."""
    monkeypatch.setenv("SSM_KERNELS_BACKEND_GRAPH_SCAN", "triton")
    for name, run in _ops_on("cuda"):
        monkeypatch.setenv("SSM_KERNELS_FAST_LAUNCH", "0")
        want = run()
        monkeypatch.setenv("SSM_KERNELS_FAST_LAUNCH", "1")
        for _ in range(2):
            got = run()
            assert len(got) == len(want), name
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")
