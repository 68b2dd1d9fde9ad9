"""tgmamba-preprocess: convert published raw EEG corpora into tgmamba-train's on-disk format
(folder with manifest.json + float32 .npy shards; see tgmamba_train.data.store), or regenerate the embedded
EEG Eye State package data from the UCI ARFF file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import add_flag, run_cli

__all__ = ["build_parser", "main"]


def _common(p: argparse.ArgumentParser) -> None:
    add_flag(p, "out", required=True, help="output dataset folder (must not already hold a dataset)")
    add_flag(p, "val-fraction", type=float, default=0.15, help="share of groups (patients) for validation")
    add_flag(p, "test-fraction", type=float, default=0.15, help="share of groups (patients) for testing")
    add_flag(p, "seed", type=int, default=0, help="seed of the group split")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgmamba-preprocess", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eye-state", help="UCI EEG Eye State .arff -> compact .npz (the embedded default)")
    add_flag(e, "arff", required=True, help="path of 'EEG Eye State.arff'")
    add_flag(e, "out", default=None, help="output .npz (default: the package's data/default/eeg_eye_state.npz)")

    s = sub.add_parser("sleep-edf", help="Sleep-EDF PSG + hypnogram EDF pairs -> 30-s epochs, 5 stages")
    add_flag(s, "psg", nargs="*", default=[], help="PSG EDF files (pair them with --hypnogram in the same order)")
    add_flag(s, "hypnogram", nargs="*", default=[], help="hypnogram EDF+ files")
    add_flag(s, "input-dir", default=None, help="folder with *-PSG.edf and matching *-Hypnogram.edf files")
    add_flag(s, "channels", nargs="+", default=None, help="EDF labels to use (default: Fpz-Cz, Pz-Oz, EOG)")
    _common(s)

    t = sub.add_parser("tusz", help="TUH EEG Seizure Corpus EDF + .csv_bi/.tse_bi -> 10-s clips")
    add_flag(t, "input-dir", required=True, help="TUSZ root (the folder holding edf/{train,dev,eval} or EDF files)")
    add_flag(t, "feature", choices=("fft", "raw"), default="fft", help="fft -> (19, 10, 100), raw -> (19, 2000, 1)")
    _common(t)

    d = sub.add_parser("dodh", help="DOD-H .h5 records -> (16, 31, 129) spectrogram epochs, 5 stages (needs h5py)")
    add_flag(d, "input-dir", required=True)
    add_flag(d, "sfreq", type=float, default=250.0, help="signal rate when a dataset has no 'fs' attribute")
    _common(d)

    b = sub.add_parser("bci", help="Kaggle BCI Challenge @ NER 2015 csv -> 56-channel feedback epochs")
    add_flag(b, "input-dir", required=True, help="folder with Data_S*_Sess*.csv (or train/) and TrainLabels.csv")
    add_flag(b, "epoch-seconds", type=float, default=1.25)
    add_flag(b, "sfreq", type=float, default=128.0, help="resample epochs to this rate")
    add_flag(b, "frame", type=int, default=1, help="fold time into frames of this many samples (features)")
    _common(b)

    m = sub.add_parser("mamem", help="MAMEM SSVEP trials (.mat or EDF+) -> 8 occipital channels")
    add_flag(m, "input-dir", required=True)
    add_flag(m, "format", choices=("mat", "edf"), default="mat")
    add_flag(m, "data-key", default="data")
    add_flag(m, "labels-key", default="labels")
    add_flag(m, "sfreq", type=float, default=250.0, help="sampling rate of .mat trials (EDF: resample to this)")
    add_flag(m, "epoch-seconds", type=float, default=3.0, help="EDF trials: seconds from each annotation")
    add_flag(m, "frame", type=int, default=25, help="fold time into frames of this many samples (features)")
    add_flag(m, "channels", nargs="+", default=None)
    _common(m)
    return p


def _files(root: str, pattern: str) -> list[Path]:
    rootp = Path(root)
    if not rootp.is_dir():
        raise DataError(rootp, "input folder not found")
    files = sorted(rootp.rglob(pattern))
    if not files:
        raise DataError(rootp, f"no files matching {pattern!r}")
    return files


def _finish(args, items, writer_kwargs, fixed=None) -> dict:
    from ..data.convert.common import assign_splits, write_dataset

    groups = [g for g, _, _ in items]
    sizes: dict[str, int] = {}
    for g, _, y in items:
        sizes[g] = sizes.get(g, 0) + len(y)
    split_of = assign_splits(groups, fixed, args.val_fraction, args.test_fraction, args.seed, sizes)
    return write_dataset(
        args.out,
        items,
        split_of=split_of,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        writer_kwargs=writer_kwargs,
    )


def _sleep_edf(args) -> dict:
    from ..data.convert import sleep_edf as se

    pairs = list(zip(args.psg, args.hypnogram))
    if len(args.psg) != len(args.hypnogram):
        raise ValueError(
            f"--psg and --hypnogram need the same number of files ({len(args.psg)} vs {len(args.hypnogram)})"
        )
    if args.input_dir:
        for psg in _files(args.input_dir, "*-PSG.edf"):
            hyps = sorted(psg.parent.glob(psg.name[:6] + "*-Hypnogram.edf"))
            if not hyps:
                raise DataError(psg, "no matching *-Hypnogram.edf (same first 6 characters) in its folder")
            pairs.append((str(psg), str(hyps[0])))
    if not pairs:
        raise ValueError("give --psg/--hypnogram files or --input-dir")
    channels = args.channels or se.CHANNELS
    items, counts = [], {}
    for psg, hyp in pairs:
        x, y, c = se.read_sleep_edf_pair(psg, hyp, channels)
        items.append((Path(psg).name[:5], x, y))  # SC4ssN: subject = first 5 characters
        counts[Path(psg).name] = c
    positions = [se.POSITIONS.get(c, c) for c in channels]
    return _finish(
        args,
        items,
        dict(
            name="sleep-edf",
            task="multiclass",
            class_names=se.STAGES,
            channels=channels,
            positions=positions,
            sfreq=se.SFREQ,
            feature="spectrogram",
            source={"files": [list(p) for p in pairs], "counts": counts},
        ),
    )


def _tusz(args) -> dict:
    from ..data.convert import tusz

    items, fixed, counts = [], {}, {}
    for f in _files(args.input_dir, "*.edf"):
        x, y, c = tusz.read_tusz_file(f, args.feature)
        counts[f.name] = c
        if len(y) == 0:
            continue
        pid = tusz.tusz_patient(f)
        split = tusz.tusz_split(f.relative_to(args.input_dir))
        if split is not None:
            if fixed.get(pid, split) != split:
                raise DataError(f, f"patient {pid} appears in two corpus splits ({fixed[pid]} and {split})")
            fixed[pid] = split
        items.append((pid, x, y))
    return _finish(
        args,
        items,
        dict(
            name="tusz",
            task="binary",
            class_names=["background", "seizure"],
            channels=tusz.CHANNELS,
            positions=tusz.CHANNELS,
            sfreq=tusz.SFREQ,
            feature=args.feature,
            source={"root": str(args.input_dir), "counts": counts},
        ),
        fixed=fixed or None,
    )


def _dodh(args) -> dict:
    from ..data.convert import dodh

    items, counts, channels = [], {}, None
    for f in _files(args.input_dir, "*.h5"):
        x, y, names, c = dodh.read_dodh_record(f, args.sfreq, channels)
        channels = channels or names
        items.append((f.stem, x, y))
        counts[f.name] = c
    from ..graphs import electrode_positions

    try:
        electrode_positions(channels)
        positions = channels
    except KeyError:
        positions = None  # EOG/EMG/ECG have no standard site: fully connected graph (warned at load)
    return _finish(
        args,
        items,
        dict(
            name="dodh",
            task="multiclass",
            class_names=dodh.STAGES,
            channels=channels,
            positions=positions,
            sfreq=dodh.SFREQ,
            feature="spectrogram",
            source={"root": str(args.input_dir), "counts": counts},
        ),
    )


def _bci(args) -> dict:
    from ..data.convert import bci
    from ..data.convert.common import frame_time

    files = _files(args.input_dir, "Data_S*_Sess*.csv")
    lab = sorted(Path(args.input_dir).rglob("TrainLabels.csv"))
    if not lab:
        raise DataError(args.input_dir, "TrainLabels.csv not found")
    labels = bci.read_bci_labels(lab[0])
    items, counts = [], {}
    for f in files:
        x, y, subject, c = bci.read_bci_session(f, labels, args.epoch_seconds, args.sfreq)
        items.append((subject, frame_time(x, args.frame), y))
        counts[f.name] = c
    return _finish(
        args,
        items,
        dict(
            name="bcicha",
            task="binary",
            class_names=["error feedback", "correct feedback"],
            channels=bci.CHANNELS,
            positions=bci.CHANNELS,
            sfreq=args.sfreq,
            feature=f"raw-frames{args.frame}",
            source={"root": str(args.input_dir), "counts": counts},
        ),
    )


def _mamem(args) -> dict:
    from ..data.convert import mamem
    from ..data.convert.common import frame_time

    channels = args.channels or mamem.CHANNELS
    raw = []
    pattern = "*.mat" if args.format == "mat" else "*.edf"
    for f in _files(args.input_dir, pattern):
        if args.format == "mat":
            x, y = mamem.read_mamem_mat(f, args.data_key, args.labels_key, n_channels=len(channels))
        else:
            x, y, _ = mamem.read_mamem_edf(f, channels, args.epoch_seconds, args.sfreq)
        raw.append((f.name.split("_")[0].split(".")[0], x, y))
    classes = sorted({str(v) for _, _, y in raw for v in y})
    index = {c: i for i, c in enumerate(classes)}
    items = [(g, frame_time(x, args.frame), np.array([index[str(v)] for v in y])) for g, x, y in raw]
    return _finish(
        args,
        items,
        dict(
            name="mamem",
            task="binary" if len(classes) == 2 else "multiclass",
            class_names=classes,
            channels=channels,
            positions=channels,
            sfreq=args.sfreq,
            feature=f"raw-frames{args.frame}",
            source={"root": str(args.input_dir)},
        ),
    )


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eye-state":
        from ..data.eye_state import convert_arff, default_npz_path

        out = Path(args.out) if args.out else default_npz_path()
        summary = convert_arff(args.arff, out)
        print(json.dumps(summary, indent=2))
        return 0
    fn = {"sleep-edf": _sleep_edf, "tusz": _tusz, "dodh": _dodh, "bci": _bci, "mamem": _mamem}[args.command]
    meta = fn(args)
    print(
        f"wrote {args.out}: {meta['name']}, sample shape {meta['sample_shape']}, "
        + ", ".join(f"{s} {meta['splits'][s]['n']}" for s in ("train", "val", "test"))
        + f"; class counts {meta['class_counts']}"
    )
    return 0


def main(argv=None) -> int:
    sys.exit(run_cli(_main, argv))


if __name__ == "__main__":
    main()
