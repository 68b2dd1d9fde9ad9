"""Training forward+backward replayed from CUDA graphs, one graph per input signature.

At short sequences (the TUSZ template: 256 clips of 19 electrodes, L = 10) a TGMamba block launches a few hundred
small kernels per forward+backward and the GPU waits on the host that issues them. Capturing the model's forward and
backward once and replaying them removes that host work: on the H200 the TUSZ block's fwd+bwd goes from 10.4 ms
eager to 4.4 ms replayed (``benchmarks/results``).

:class:`CUDAGraphedForward` wraps a model. A call in training mode with CUDA tensors replays the graph captured for
that call's signature (shapes, dtypes, which inputs require grad, autocast dtype); the first call of a new signature
captures it (``torch.cuda.make_graphed_callables``: a few warm-up iterations on a side stream, then the capture).
Anything else runs the model eagerly: evaluation mode, CPU tensors, non-tensor arguments, grad disabled, and
signatures past ``max_graphs`` (each graph keeps its own memory pool, about one eager step's activations).

Contract of a replay (what capture freezes):
- Python runs only at capture. Shape-dependent branches, host-side checks and anything reading a tensor's value on
  the host are baked in, so :class:`CUDAGraphedForward` turns off ``validate_inputs`` (the NaN and edge-range
  checks of the TGMamba modules, which need a host sync) on every submodule while it captures; pass ``check`` to
  validate inputs before each replay instead.
- The returned tensors are the graph's static outputs: the next replay of that graph overwrites them. Use them
  (loss, backward) before the next call, or clone them.
- Parameters are read in place, so optimizer steps between replays are seen; replacing a parameter tensor (not its
  values: ``load_state_dict(..., assign=True)``, moving the model to another device or dtype) is not, so call
  :meth:`CUDAGraphedForward.reset` after that. Dropout draws fresh numbers at every replay (torch's graph-safe generator).
- Under autocast the graph is captured with autocast's weight cache off (the capture needs it) and in the
  autocast dtype of the call; a call under another autocast state is another signature.
- Gradients reach the parameters through the normal autograd path (``.grad`` accumulates, hooks run), so
  optimizers, gradient clipping and accumulation work unchanged. Multi-process data parallel (DDP) is not supported
  by this wrapper.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CUDAGraphedForward"]


class _Forward(nn.Module):
    """The wrapped model as a fresh module per graph: ``make_graphed_callables`` patches the forward of the module
    it is given, which must not be the user's model (other signatures and eval mode still call it eagerly)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Tensor) -> Any:
        return self.model(*args)


def _autocast_dtype() -> torch.dtype | None:
    return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None


def _autocast(dtype: torch.dtype | None):
    """CUDA autocast to ``dtype`` with the weight cache off (CUDA graph capture rejects the cache); none for None."""
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _validation_off(model: nn.Module):
    """Set ``validate_inputs = False`` on every submodule that has it, restoring the values afterwards."""
    saved = [(m, m.validate_inputs) for m in model.modules() if hasattr(m, "validate_inputs")]
    try:
        for m, _ in saved:
            m.validate_inputs = False
        yield
    finally:
        for m, value in saved:
            m.validate_inputs = value


class CUDAGraphedForward:
    """Call ``model(*args)`` through CUDA graphs in training, eagerly otherwise.

    Args:
        model: the module to run (for example a :class:`~tgmamba_models.TGMambaClassifier`). It must be
            capturable: no host syncs and no data-dependent shapes in its forward and backward once its input
            checks are off (the TGMamba modules are).
        max_graphs: how many signatures get a graph; later new signatures run eagerly (with one warning).
        num_warmup_iters: eager iterations on a side stream before each capture (``make_graphed_callables``).
        check: optional ``check(*args)`` run eagerly before every graphed call (e.g. a NaN check of the batch).

    ``graphed(*args)`` returns what ``model(*args)`` returns (a tensor or a tuple of tensors).

    Example::

        graphed = CUDAGraphedForward(classifier)
        for x, y in loader:                       # fixed batch shape: one capture, then replays
            loss = F.cross_entropy(graphed(x, edge_index, edge_weight), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        max_graphs: int = 2,
        num_warmup_iters: int = 3,
        check: Callable[..., None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if max_graphs < 0:
            raise ValueError(f"max_graphs must be >= 0, got {max_graphs}")
        if num_warmup_iters < 1:
            raise ValueError(
                f"num_warmup_iters must be >= 1 (the capture needs warmed-up kernels), got {num_warmup_iters}"
            )
        self.model = model
        self.max_graphs = max_graphs
        self.num_warmup_iters = num_warmup_iters
        self.check = check
        self._graphs: dict[tuple, nn.Module] = {}
        self._warned = False

    @property
    def num_graphs(self) -> int:
        """Signatures captured so far."""
        return len(self._graphs)

    def reset(self) -> None:
        """Drop every captured graph (and its memory pool, once nothing else holds it)."""
        self._graphs.clear()
        self._warned = False

    def _signature(self, args: tuple) -> tuple | None:
        """The graph key of a call, or None when the call runs eagerly."""
        if not (self.model.training and torch.is_grad_enabled() and args):
            return None
        if not all(isinstance(a, Tensor) and a.is_cuda for a in args):
            return None
        device = args[0].device
        if any(a.device != device for a in args):
            return None
        return (device, _autocast_dtype(), *((tuple(a.shape), a.dtype, a.requires_grad) for a in args))

    def _capture(self, args: tuple) -> nn.Module:
        # a call's replay runs under the autocast settings of its capture (``__call__``)
        with _validation_off(self.model), _autocast(_autocast_dtype()):
            return torch.cuda.make_graphed_callables(
                _Forward(self.model), args, num_warmup_iters=self.num_warmup_iters, allow_unused_input=True
            )

    def __call__(self, *args: Any) -> Any:
        key = self._signature(args)
        if key is None:
            return self.model(*args)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs:
                if not self._warned:
                    warnings.warn(
                        f"CUDAGraphedForward: more than max_graphs={self.max_graphs} input signatures; new "
                        "signatures run eagerly",
                        stacklevel=2,
                    )
                    self._warned = True
                return self.model(*args)
        if self.check is not None:
            self.check(*args)
        if graphed is None:
            graphed = self._graphs[key] = self._capture(args)
        with _autocast(key[1]):
            return graphed(*args)
