"""Benchmarks of selective_state_update (one decoding step): Triton vs the PyTorch reference.

GPU (H200):
    python -m pytest -c pyproject.toml packages/ssm-kernels/benchmarks/bench_state_update.py -m gpu \
        --benchmark-only --benchmark-save=state_update
CPU (tiny, reference only) runs in the default suite with --benchmark-disable.

Cases are ``<shape>-<dtype>-<backend>``; inputs bf16, state fp32, with D, z, dt_bias and softplus;
Mamba-2 uses per-head dt, A, D, dt_bias broadcast with stride 0 (as Mamba-2 calls it).
``bytes`` is the minimal traffic: the state read and written once, every other input read once
and the output written once.
"""

from __future__ import annotations

import pytest
import torch

from ssm_kernels.testing.bench import record, synced, tensor_bytes
from ssm_kernels.testing.state_update import make_state_update_inputs

SHAPES = {
    "mamba1-b64-d4096-n16": dict(batch=64, nheads=None, headdim=4096, dstate=16, ngroups=1),
    "mamba2-b64-h80-p64-n128": dict(batch=64, nheads=80, headdim=64, dstate=128, ngroups=1, tie_hdim=True),
    "cpu_tiny": dict(batch=2, nheads=4, headdim=8, dstate=16, ngroups=1),
}


def _cases():
    cases = [
        pytest.param(shape, be, id=f"{shape}-bf16-{be}", marks=pytest.mark.gpu)
        for shape in ("mamba1-b64-d4096-n16", "mamba2-b64-h80-p64-n128")
        for be in ("triton", "reference")
    ]
    cases.append(pytest.param("cpu_tiny", "reference", id="cpu_tiny-bf16-reference"))
    return cases


@pytest.mark.parametrize("shape,backend", _cases())
def test_state_update(benchmark, shape, backend):
    from ssm_kernels import selective_state_update

    if shape != "cpu_tiny" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "triton":
        pytest.importorskip("triton")
    device = "cuda" if shape != "cpu_tiny" else "cpu"
    inp = make_state_update_inputs(**SHAPES[shape], dtype=torch.bfloat16, state_dtype=torch.float32, device=device)

    def call():
        with torch.no_grad():
            return selective_state_update(**inp, dt_softplus=True, backend=backend)

    run = synced(call, device)
    rounds = dict(rounds=3, warmup_rounds=1) if shape == "cpu_tiny" else dict(rounds=50, warmup_rounds=5)
    benchmark.pedantic(run, **rounds)
    st = inp["state"]
    # state read + written, x / z / B / C read, out written; stride-0 broadcasts count once per distinct element
    small = sum(t.untyped_storage().nbytes() for t in (inp["dt"], inp["A"], inp["D"], inp["dt_bias"]))
    moved = 2 * tensor_bytes(st) + 2 * tensor_bytes(inp["x"]) + tensor_bytes(inp["z"], inp["B"], inp["C"]) + small
    record(benchmark, op="selective_state_update", shape=SHAPES[shape], dtype="bfloat16", backend=backend,
           device=device, bytes_moved=moved, items=inp["x"].shape[0], item_name="tokens", state_dtype="float32")  # fmt: skip
