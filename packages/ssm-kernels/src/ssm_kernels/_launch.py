"""Direct launches of compiled Triton kernels: less host work per call.

A launch through ``kernel[grid](*args)`` costs the host tens of microseconds per kernel before the GPU sees
it: Triton binds and specialises every argument, reads its settings from the environment and builds its
cache key; an autotuned kernel first builds several dictionaries to find its tuned config. For ops whose
kernels take a few hundred microseconds (SSD at its benchmark shapes, the small ops of a decoding step)
that host work is a large share of the wall time, because the GPU waits for each launch.

:class:`FastLaunch` wraps a ``triton.jit`` kernel (or an ``@triton.autotune`` one). The first call with a
new *specialisation* goes through Triton as usual (compiling and autotuning as needed) and keeps the
compiled kernel and the tuned config. Later calls with the same specialisation launch that compiled kernel
directly, the way Triton itself launches it. The specialisation key mirrors what Triton specialises on:

* tensors: dtype and whether the data pointer is 16-byte aligned;
* integers: whether the value is 1, whether it is divisible by 16, and its integer width class;
* booleans, floats and ``None``: the type; other values (strings, constexpr objects): the value;
* keyword arguments (the kernels' constexprs and launch options): their values;
* an autotuned kernel's key arguments: their values (the tuned config depends on them);
* the current CUDA device.

The direct path is skipped (Triton's own launch is used) under ``TRITON_INTERPRET=1``, when Triton's launch
hooks are set (profilers such as proton use them), when ``SSM_KERNELS_FAST_LAUNCH=0``, or when the compiled
kernel does not expose the launcher this code expects (another Triton version).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import warnings
import weakref

import torch
import triton

from .backend import triton_interpret

__all__ = ["FastLaunch", "clear_launch_caches", "fast", "fast_launch_enabled"]

_INSTANCES: weakref.WeakSet = weakref.WeakSet()
_I32 = (-(2**31), 2**31)
_U32 = 2**32
_I64 = (-(2**63), 2**63)
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what Triton's own launch uses


def _switched_on() -> bool:
    return os.environ.get("SSM_KERNELS_FAST_LAUNCH", "1") != "0"


def fast_launch_enabled() -> bool:
    """Whether direct launches are used (``SSM_KERNELS_FAST_LAUNCH``, default on; never under the interpreter)."""
    return _switched_on() and not triton_interpret()


def clear_launch_caches() -> None:
    """Forget every kept compiled kernel (for example after clearing the autotuners' choices)."""
    for inst in list(_INSTANCES):
        inst.clear()


def _int_class(a: int) -> int:
    if _I32[0] <= a < _I32[1]:
        return 0
    if 0 <= a < _U32:
        return 1
    return 2 if _I64[0] <= a < _I64[1] else 3


def spec_key(args) -> tuple:
    """What Triton specialises a kernel on for these positional arguments (see the module docstring)."""
    out = []
    for a in args:
        t = type(a)
        if t is bool or t is float or a is None:
            out.append(t)
        elif t is int:
            out.append(1 if a == 1 else (a % 16 == 0, _int_class(a)))
        elif isinstance(a, torch.Tensor):
            out.append((a.dtype, a.data_ptr() % 16 == 0))
        else:
            out.append(a)
    return tuple(out)


def _hook_set(hook) -> bool:
    # None when unset (Triton <= 3.6); an empty HookChain in newer versions
    return hook is not None and bool(getattr(hook, "calls", True))


def _launch_hooks_set() -> bool:
    rt = triton.knobs.runtime
    return _hook_set(rt.launch_enter_hook) or _hook_set(rt.launch_exit_hook)


class FastLaunch:
    """``FastLaunch(kernel)[grid](*args, **constexprs)``: same call as ``kernel[grid](...)``, less host work.

    ``grid`` is a tuple or a callable of the named arguments (as with Triton). Runtime arguments must be
    passed positionally and constexprs and launch options (``num_warps``) by keyword, as every launcher in
    this package does.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self._autotuned = isinstance(kernel, triton.runtime.Autotuner)
        jit = kernel.fn if self._autotuned else kernel
        self._usable = isinstance(jit, triton.runtime.JITFunction)
        if self._usable:
            self._names = list(jit.arg_names)
            sig = inspect.signature(jit.fn)
            self._defaults = {
                n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
            }
            keys = list(kernel.keys) if self._autotuned else []
            # positions whose values (not just their specialisation) select the compiled kernel or config
            by_value = {self._names.index(k) for k in keys if k in self._names}
            by_value |= {i for i, prm in enumerate(jit.params) if prm.is_constexpr}
            self._value_pos = tuple(sorted(by_value))
            self._runtime_names = {prm.name for prm in jit.params if not prm.is_constexpr}
        self._cache: dict = {}
        self._lock = threading.Lock()
        _INSTANCES.add(self)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __getitem__(self, grid):
        def launcher(*args, **kwargs):
            return self.launch(grid, args, kwargs)

        return launcher

    def launch(self, grid, args, kwargs) -> None:
        # (_usable is False for kernels decorated under the interpreter, so no TRITON_INTERPRET check here)
        if not self._usable or not _switched_on() or _launch_hooks_set():
            self.kernel[grid](*args, **kwargs)
            return
        device = torch.cuda.current_device()
        by_value = tuple(args[i] for i in self._value_pos if i < len(args))
        key = (device, spec_key(args), tuple(kwargs.items()), by_value)
        entry = self._cache.get(key)
        if entry is None:
            self._first(key, grid, args, kwargs)
            return
        compiled, tail = entry
        if compiled is None:  # this specialisation cannot be launched directly
            self.kernel[grid](*args, **kwargs)
            return
        values = (*args, *tail)
        if callable(grid):
            grid = grid(dict(zip(self._names, values)))
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        stream = _raw_stream(device) if _raw_stream is not None else torch.cuda.current_stream(device).cuda_stream
        try:
            compiled.run(
                grid[0], g1, g2, stream, compiled.function, compiled.packed_metadata, None, None, None, *values
            )
        except TypeError as exc:  # a Triton whose launcher takes other arguments: use Triton's launch from now on
            self._usable = False
            warnings.warn(
                f"ssm_kernels: direct Triton launches disabled for {getattr(self.kernel, '__name__', self.kernel)} "
                f"(triton {triton.__version__}: {exc}); using Triton's launch",
                RuntimeWarning,
                stacklevel=3,
            )
            self.kernel[grid](*args, **kwargs)

    def _first(self, key, grid, args, kwargs) -> None:
        """Launch through Triton (compiling / autotuning as needed) and keep the compiled kernel, or a
        marker that this specialisation keeps using Triton's launch."""
        compiled = self.kernel[grid](*args, **kwargs)
        if any(k in self._runtime_names for k in kwargs):
            # a runtime argument by keyword would put its value (a tensor) into the cache key: not supported
            self._usable = False
            return
        entry = self._entry(compiled, args, kwargs)
        with self._lock:
            self._cache[key] = entry if entry is not None else (None, None)

    def _entry(self, compiled, args, kwargs):
        if hasattr(compiled, "result"):  # asynchronous compilation mode
            compiled = compiled.result()
        if not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
            return None  # not the launcher layout this code knows
        config = self.kernel.best_config if self._autotuned else None
        if config is not None and config.pre_hook is not None:
            return None  # the config's hook must run before every launch
        known = {**self._defaults, **(config.kwargs if config is not None else {}), **kwargs}
        names = self._names[len(args) :]
        if any(n not in known for n in names):
            return None  # an argument this code cannot resolve
        return compiled, tuple(known[n] for n in names)


@functools.cache
def fast(kernel) -> FastLaunch:
    """The :class:`FastLaunch` of ``kernel`` (one per kernel): ``fast(kernel)[grid](*args, **constexprs)``."""
    return FastLaunch(kernel)
