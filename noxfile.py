"""Nox sessions for the TGMamba monorepo. Every session runs in a fresh virtualenv.

    nox -l                                   list sessions
    nox -s tests                             all three packages' tests (one session each)
    nox -s "tests(package='ssm-kernels')"    one package: only what it declares is installed
    nox -s interpret                         Triton kernels on CPU (TRITON_INTERPRET=1, tiny shapes)
    nox -s lint                              ruff
    nox -s tools                             tests of tools/ (README table, benchmark baseline, CI summary)
    nox -s build                             sdist + wheel of each package; ssm-kernels wheel checked alone
    nox -s bench                             pytest-benchmark suites; compares with a stored baseline if any
    nox -s train -- [tgmamba-train flags]    the main job: train + evaluate on the embedded default data

Torch: on a machine without a CUDA GPU the sessions install the CPU build of torch (TORCH_SPEC,
default ``torch==2.13.0``). A wheel of that version in a pip find-links folder is used as is; otherwise
the CPU wheel index is used so a fresh machine does not download a multi-GB CUDA build.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = {
    "ssm-kernels": ROOT / "packages" / "ssm-kernels",
    "tgmamba-models": ROOT / "packages" / "tgmamba-models",
    "tgmamba-train": ROOT / "packages" / "tgmamba-train",
}
# local siblings each package needs installed from this checkout (in dependency order)
SIBLINGS = {
    "ssm-kernels": [],
    "tgmamba-models": ["ssm-kernels"],
    "tgmamba-train": ["ssm-kernels", "tgmamba-models"],
}
IMPORT_NAMES = {"ssm-kernels": "ssm_kernels", "tgmamba-models": "tgmamba_models", "tgmamba-train": "tgmamba_train"}
PYTHON = os.environ.get("NOX_PYTHON", f"{sys.version_info.major}.{sys.version_info.minor}")
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI = "https://pypi.org/simple"
PYTEST = ["python", "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]

nox.options.sessions = ["lint", "tools", "tests", "interpret", "build"]
nox.options.reuse_existing_virtualenvs = False


def _has_cuda_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def _local_torch_wheel(spec: str) -> bool:
    """A torch wheel matching ``spec`` (==version) lies in a PIP_FIND_LINKS folder."""
    if "==" not in spec:
        return False
    version = spec.split("==", 1)[1].strip()
    for folder in os.environ.get("PIP_FIND_LINKS", "").split():
        folder = folder.removeprefix("file://")
        if glob.glob(os.path.join(folder, f"torch-{version}*.whl")):
            return True
    return False


def install_torch(session: nox.Session) -> None:
    """Install torch first so no dependency pulls a CUDA build on a CPU-only machine."""
    if _has_cuda_gpu() or _local_torch_wheel(TORCH_SPEC):
        session.install(TORCH_SPEC)
    else:
        session.install(TORCH_SPEC, "--index-url", CPU_INDEX, "--extra-index-url", PYPI)


def install_package(session: nox.Session, package: str, extras: str = "test", editable: bool = False) -> None:
    install_torch(session)
    for sibling in SIBLINGS[package]:
        session.install(str(PACKAGES[sibling]))
    target = f"{PACKAGES[package]}[{extras}]" if extras else str(PACKAGES[package])
    session.install(*(["-e"] if editable else []), target)


def run_pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    """Run pytest; exit code 5 (no tests collected) is an error: a suite that runs nothing is broken."""
    session.run(*PYTEST, *args, *session.posargs, env=env or {})


@nox.session(python=PYTHON)
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's CPU tests, with only what that package declares installed (plus local siblings)."""
    install_package(session, package)
    env = {}
    if package == "ssm-kernels":
        # prove the kernels package works with torch + einops alone
        env["SSM_KERNELS_EXPECT_MINIMAL"] = "1"
        session.run(
            "python",
            "-c",
            "import importlib.util as u, ssm_kernels; "
            "bad=[m for m in ('triton','torch_geometric','lightning') if u.find_spec(m)]; "
            "assert not bad, f'ssm-kernels test venv must not contain {bad}'; "
            "print('ssm_kernels', ssm_kernels.__version__, 'imports without triton/PyG/lightning')",
        )
    markers = "not gpu and not slow and not interpret"
    run_pytest(session, str(PACKAGES[package] / "tests"), "-m", markers, "-p", "no:cacheprovider", env=env)


@nox.session(python=PYTHON)
def interpret(session: nox.Session) -> None:
    """Triton kernels on the CPU through the Triton interpreter, on tiny shapes."""
    install_package(session, "ssm-kernels", extras="triton,test")
    session.install("numpy")
    # auto dispatch picks Triton for CPU tensors under the interpreter; tests that force a backend
    # (and those that check float64 still goes to the reference) set it themselves
    env = {"TRITON_INTERPRET": "1"}
    run_pytest(session, str(PACKAGES["ssm-kernels"] / "tests"), "-m", "interpret", "-p", "no:cacheprovider", env=env)
    # the models on those kernels (the TGMamba block's fused path, the Mamba mixers)
    install_package(session, "tgmamba-models")
    run_pytest(session, str(PACKAGES["tgmamba-models"] / "tests"), "-m", "interpret", "-p", "no:cacheprovider", env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check + format check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))


@nox.session(python=PYTHON)
def tools(session: nox.Session) -> None:
    """Tests of the repository tools (README table renderer, benchmark baseline merger, CI summary)."""
    session.install("pytest>=8")
    run_pytest(session, str(ROOT / "tools" / "tests"), "-p", "no:cacheprovider")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build sdist + wheel of every package; install the ssm-kernels wheel alone and check its contents."""
    session.install("build", "hatchling")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for name, path in PACKAGES.items():
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(dist / name), str(path))
    wheels = glob.glob(str(dist / "ssm-kernels" / "ssm_kernels-*.whl"))
    if len(wheels) != 1:
        session.error(f"expected one ssm-kernels wheel, found {wheels}")
    session.run("python", str(ROOT / "tools" / "check_wheel.py"), wheels[0])
    # a brand-new venv holding only torch + the ssm-kernels wheel
    venv = Path(session.create_tmp()) / "wheel-only"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    pip_torch = [py, "-m", "pip", "install", "-q", TORCH_SPEC]
    if not (_has_cuda_gpu() or _local_torch_wheel(TORCH_SPEC)):
        pip_torch += ["--index-url", CPU_INDEX, "--extra-index-url", PYPI]
    session.run(*pip_torch, external=True)
    session.run(py, "-m", "pip", "install", "-q", wheels[0], external=True)
    session.run(
        py,
        "-c",
        "import torch, ssm_kernels as s; from ssm_kernels import graph_selective_scan_ref, selective_scan_ref; "
        "print('ssm_kernels', s.__version__, 'from wheel OK')",
        external=True,
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """pytest-benchmark suites of all packages. Saves JSON under .benchmarks/ and compares with a baseline:
    the committed reports matching BENCH_BASELINE (e.g. 'packages/*/benchmarks/results/*-h200.json' on an H200),
    else the newest stored run of this machine when one exists. Fails on a median regression > BENCH_THRESHOLD
    (default 25%)."""
    install_package(session, "tgmamba-train")
    session.install("pytest-benchmark>=4", "numpy")
    threshold = os.environ.get("BENCH_THRESHOLD", "25%")
    storage = ROOT / ".benchmarks"
    args = [
        "--benchmark-only",
        f"--benchmark-storage=file://{storage}",
        "--benchmark-autosave",
        "--benchmark-columns=median,iqr,ops,rounds",
        "--benchmark-sort=name",
    ]
    # compare with the committed reports named by BENCH_BASELINE (a glob, e.g. the H200 reports on an H200),
    # else with the newest stored run for this machine, if any
    baseline = os.environ.get("BENCH_BASELINE")
    if baseline:
        merged = storage / "baseline.json"
        session.run("python", str(ROOT / "tools" / "bench_baseline.py"), str(merged), baseline, external=False)
        args += [f"--benchmark-compare={merged}", f"--benchmark-compare-fail=median:{threshold}"]
    elif list(storage.glob("*/*.json")):
        args += ["--benchmark-compare", f"--benchmark-compare-fail=median:{threshold}"]
    paths = [str(p / "benchmarks") for p in PACKAGES.values()]
    run_pytest(session, *paths, *args, "-p", "no:cacheprovider")
    session.run("python", str(ROOT / "tools" / "render_bench.py"), "--from-storage", str(storage), external=False)


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """The main job: install the stack (CPU torch unless a GPU is present) and run ``tgmamba-train``."""
    install_package(session, "tgmamba-train", extras="")
    session.run("tgmamba-train", *session.posargs)
