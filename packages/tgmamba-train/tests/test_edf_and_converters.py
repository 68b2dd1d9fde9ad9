"""EDF reading on the real Sleep-EDF excerpt and on EDF files written here; the TUSZ, BCI, MAMEM and DOD-H
converters on tiny synthetic inputs; the on-disk format; bad-input errors."""

import json

import edfio
import numpy as np
import pytest
from conftest import HYPNOGRAM, PSG, TUSZ_TUH_CHANNELS

from tgmamba_train.cli import preprocess as pre_cli
from tgmamba_train.data.convert.sleep_edf import epochs_from_hypnogram, read_sleep_edf_pair
from tgmamba_train.data.convert.tusz import CHANNELS as TUSZ_CHANNELS
from tgmamba_train.data.convert.tusz import clip_labels, read_term_annotations
from tgmamba_train.data.edf import read_annotations, read_edf_channels
from tgmamba_train.data.features import fft_clip_features, log_spectrogram
from tgmamba_train.data.store import load_dataset
from tgmamba_train.errors import DataError


def _run(argv):
    with pytest.raises(SystemExit) as exc:
        pre_cli.main(argv)
    return exc.value.code


def test_real_excerpt_channels_and_resampling():
    rec = read_edf_channels(PSG, ["EEG Fpz-Cz", "EEG Pz-Oz"], match="label")
    assert rec.data.shape == (2, 30000) and rec.sfreq == 100.0
    assert np.isfinite(rec.data).all() and 1.0 < rec.data.std() < 200.0  # microvolts
    half = read_edf_channels(PSG, ["EEG Fpz-Cz", "EEG Pz-Oz"], target_sfreq=50.0, match="label")
    assert half.data.shape == (2, 15000)
    # mixed rates need a target rate
    with pytest.raises(DataError, match="different sampling rates"):
        read_edf_channels(PSG, ["EEG Fpz-Cz", "Resp oro-nasal"], match="label")
    mixed = read_edf_channels(PSG, ["EEG Fpz-Cz", "Resp oro-nasal"], target_sfreq=100.0, match="label")
    assert mixed.data.shape == (2, 30000)


def test_real_excerpt_hypnogram_to_labels():
    ann = read_annotations(HYPNOGRAM)
    assert ann[0] == (0.0, 30630.0, "Sleep stage W")
    idx, y, counts = epochs_from_hypnogram(ann, 10, HYPNOGRAM)
    assert idx.tolist() == list(range(10)) and (y == 0).all()
    assert counts["beyond_recording"] > 0 and counts["unscored_or_movement"] > 0
    x, y, c = read_sleep_edf_pair(PSG, HYPNOGRAM)
    assert x.shape == (10, 3, 31, 129) and np.isfinite(x).all() and (y == 0).all() and c["epochs"] == 10


def test_sleep_edf_cli_writes_dataset(tmp_path, capsys):
    out = tmp_path / "sedf"
    assert _run(["sleep-edf", "--psg", str(PSG), "--hypnogram", str(HYPNOGRAM), "--out", str(out)]) == 0
    data, meta = load_dataset(out)
    assert meta["sample_shape"] == [3, 31, 129] and meta["task"] == "multiclass" and meta["num_classes"] == 5
    assert len(data.train) + len(data.val) + len(data.test) == 10
    assert "time blocks" in meta["source"]["split"]
    # training-split statistics are stored for normalisation
    assert np.asarray(meta["normalization"]["mean"]).shape == (3, 129)
    # an existing dataset is never overwritten
    assert _run(["sleep-edf", "--psg", str(PSG), "--hypnogram", str(HYPNOGRAM), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def _write_edf(path, labels, seconds, sfreq, rng):
    sigs = []
    for lab in labels:
        x = rng.normal(0, 20, int(seconds * sfreq))
        sigs.append(edfio.EdfSignal(x, sfreq, label=lab, physical_dimension="uV", physical_range=(-500, 500)))
    edfio.Edf(sigs).write(path)


def test_bad_edf_inputs(tmp_path, rng):
    with pytest.raises(DataError, match="missing.edf: file not found"):
        read_edf_channels(tmp_path / "missing.edf", ["Fz"])
    bad = tmp_path / "corrupt.edf"
    bad.write_bytes(PSG.read_bytes()[:700])
    with pytest.raises(DataError, match="corrupt.edf: corrupt or unreadable EDF"):
        read_edf_channels(bad, ["EEG Fpz-Cz"], match="label")
    f = tmp_path / "few.edf"
    _write_edf(f, ["EEG FP1-REF", "EEG FP2-REF"], 4, 100, rng)
    with pytest.raises(DataError, match=r"few.edf: wrong channel set: missing \['Cz'\]"):
        read_edf_channels(f, ["Fp1", "Cz"])


def test_tusz_annotations(tmp_path):
    a = tmp_path / "x.csv_bi"
    a.write_text(
        "# version = csv_v1.0.0\n# bname = x\nchannel,start_time,stop_time,label,confidence\n"
        "TERM,0.0000,12.5000,bckg,1.0000\nTERM,12.5000,21.0000,seiz,1.0000\nTERM,21.0,30.0,bckg,1.0\n"
    )
    ann = read_term_annotations(a)
    assert ann[1] == (12.5, 21.0, "seiz")
    assert clip_labels(3, ann).tolist() == [0, 1, 1]
    t = tmp_path / "x.tse_bi"
    t.write_text("version = tse_v1.0.0\n\n0.0000 5.0 bckg 1.0\n5.0 9.0 seiz 1.0\n")
    assert clip_labels(2, read_term_annotations(t)).tolist() == [1, 0]
    bad = tmp_path / "bad.csv_bi"
    bad.write_text("channel,start_time,stop_time,label,confidence\nTERM,zero,1,seiz,1\n")
    with pytest.raises(DataError, match="bad.csv_bi: line 2: malformed"):
        read_term_annotations(bad)


def test_features_shapes():
    x = np.random.default_rng(0).normal(size=(2, 19, 2000)).astype(np.float32)
    assert fft_clip_features(x, 200.0).shape == (2, 19, 10, 100)
    assert log_spectrogram(np.zeros((4, 3000), np.float32) + 1.0).shape == (4, 31, 129)


def test_tusz_cli_end_to_end(tmp_path, rng):
    """Patient-level corpus splits from TUSZ's own folders; 19 channels with TUH labels at 256 Hz -> 200 Hz."""
    root = tmp_path / "tusz" / "edf"
    labels = [f"EEG {c.upper()}-REF" for c in TUSZ_TUH_CHANNELS] + ["EKG1"]
    for split, pid in (("train", "aaaaaaaa"), ("train", "aaaaaaab"), ("dev", "aaaaaaac"), ("eval", "aaaaaaad")):
        d = root / split / pid / "s001_2015" / "01_tcp_ar"
        d.mkdir(parents=True)
        f = d / f"{pid}_s001_t000.edf"
        _write_edf(f, labels, 25, 256, rng)
        f.with_suffix(".csv_bi").write_text(
            "channel,start_time,stop_time,label,confidence\nTERM,0.0,12.0,bckg,1.0\nTERM,12.0,25.0,seiz,1.0\n"
        )
    out = tmp_path / "tusz_ds"
    assert _run(["tusz", "--input-dir", str(tmp_path / "tusz"), "--out", str(out)]) == 0
    data, meta = load_dataset(out)
    assert meta["sample_shape"] == [19, 10, 100] and meta["channels"] == TUSZ_CHANNELS
    assert meta["splits"]["train"]["n"] == 4 and meta["splits"]["val"]["n"] == 2 and meta["splits"]["test"]["n"] == 2
    assert data.train.y.tolist() == [0, 1, 0, 1]
    groups = meta["groups"]
    assert {groups[g] for g in data.test.groups} == {"aaaaaaad"}
    assert data.edge_index.shape[0] == 2 and data.edge_index.max() == 18
    # a file lacking a channel gets an error naming it
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    _write_edf(bad_dir / "p_s001_t000.edf", labels[:18], 12, 200, rng)
    (bad_dir / "p_s001_t000.csv_bi").write_text("channel,start_time,stop_time,label,confidence\nTERM,0,12,bckg,1\n")
    with pytest.raises(SystemExit) as exc:
        pre_cli.main(["tusz", "--input-dir", str(bad_dir), "--out", str(tmp_path / "o2")])
    assert exc.value.code == 2


def test_tusz_train_from_disk(tmp_path, rng):
    """tgmamba-train on a preprocessed folder (memory-mapped shards), 1 epoch, tiny model."""
    from tgmamba_train.cli import train as train_cli
    from tgmamba_train.data.store import DatasetWriter

    w = DatasetWriter(
        tmp_path / "ds",
        name="tusz",
        task="binary",
        class_names=["bckg", "seiz"],
        channels=TUSZ_CHANNELS,
        positions=TUSZ_CHANNELS,
        sfreq=200.0,
        feature="fft",
        shard_size=5,
    )
    for split, n in (("train", 6), ("val", 2), ("test", 4)):
        for g in range(2):
            w.add(split, rng.normal(size=(n, 19, 10, 100)), np.arange(n) % 2, f"{split}{g}")
    meta = w.close()
    assert len(meta["splits"]["train"]["shards"]) > 1
    with pytest.raises(SystemExit) as exc:
        train_cli.main(
            [
                "--dataset",
                "tusz",
                "--data-dir",
                str(tmp_path / "ds"),
                "--num_epochs",
                "1",
                "--model_dim",
                "4",
                "--state_expansion_factor",
                "2",
                "--no-progress",
                "--save_dir",
                str(tmp_path / "res"),
                "--run-name",
                "t",
                "--threads",
                "1",
            ]
        )
    assert exc.value.code == 0
    m = json.loads((tmp_path / "res" / "t" / "metrics.json").read_text())
    assert m["tgmamba"]["auroc"]["per_fold"] and "baseline" not in m


def test_store_errors(tmp_path, rng):
    with pytest.raises(DataError, match="manifest.json: file not found"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt manifest"):
        load_dataset(tmp_path)
    from tgmamba_train.data.store import DatasetWriter

    w = DatasetWriter(
        tmp_path / "d",
        name="x",
        task="binary",
        class_names=["a", "b"],
        channels=["Fz", "Cz"],
        positions=None,
        sfreq=1.0,
        feature="f",
    )
    with pytest.raises(ValueError, match="non-finite"):
        w.add("train", np.full((2, 2, 1, 1), np.nan), np.array([0, 1]), "g")
    for s in ("train", "val", "test"):
        w.add(s, rng.normal(size=(2, 2, 3, 1)), np.array([0, 1]), "g")
    w.close()
    (tmp_path / "d" / "val" / "x-00000.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"x-00000.npy: corrupt .npy"):
        load_dataset(tmp_path / "d")


def test_bci_converter(tmp_path, rng):
    from tgmamba_train.data.convert.bci import CHANNELS

    header = ["Time", *[("P08" if c == "PO8" else c) for c in CHANNELS], "EOG", "FeedBackEvent"]
    rows = []
    labels = ["IdFeedBack,Prediction"]
    for subj in ("S02", "S06", "S07", "S11"):
        n = 2000
        data = rng.normal(size=(n, len(header)))
        data[:, 0] = np.arange(n) / 200
        data[:, -1] = 0
        data[[100, 700, 1300], -1] = 1
        path = tmp_path / f"Data_{subj}_Sess01.csv"
        np.savetxt(path, data, delimiter=",", header=",".join(header), comments="")
        labels += [f"{subj}_Sess01_FB{k:03d},{k % 2}" for k in (1, 2, 3)]
        rows.append(path)
    (tmp_path / "TrainLabels.csv").write_text("\n".join(labels) + "\n")
    out = tmp_path / "bci_ds"
    assert _run(["bci", "--input-dir", str(tmp_path), "--out", str(out), "--frame", "8"]) == 0
    data, meta = load_dataset(out)
    assert meta["sample_shape"] == [56, 20, 8]  # 1.25 s at 128 Hz = 160 samples, frames of 8
    assert sum(meta["splits"][s]["n"] for s in ("train", "val", "test")) == 12
    tr, te = {meta["groups"][g] for g in data.train.groups}, {meta["groups"][g] for g in data.test.groups}
    assert not tr & te  # subject-disjoint


def test_mamem_mat_converter(tmp_path, rng):
    from scipy.io import savemat

    for subj in ("S001", "S002", "S003", "S004"):
        savemat(tmp_path / f"{subj}_a.mat", {"data": rng.normal(size=(10, 8, 250)), "labels": np.arange(10) % 5 + 6.66})
    out = tmp_path / "mamem_ds"
    assert _run(["mamem", "--input-dir", str(tmp_path), "--out", str(out)]) == 0
    _, meta = load_dataset(out)
    assert meta["sample_shape"] == [8, 10, 25] and meta["num_classes"] == 5 and meta["task"] == "multiclass"
    savemat(tmp_path / "S005_a.mat", {"data": rng.normal(size=(10, 7, 250)), "labels": np.arange(10)})
    assert _run(["mamem", "--input-dir", str(tmp_path), "--out", str(tmp_path / "o2")]) == 2


def test_dodh_converter(tmp_path, rng):
    h5py = pytest.importorskip("h5py")
    for rec in ("r1", "r2", "r3"):
        with h5py.File(tmp_path / f"{rec}.h5", "w") as f:
            for ch in ("C3_M2", "F3_F4"):
                f.create_dataset(f"signals/eeg/{ch}", data=rng.normal(size=250 * 90))
            f.create_dataset("hypnogram", data=np.array([0, -1, 2]))
    out = tmp_path / "dodh_ds"
    assert (
        _run(
            ["dodh", "--input-dir", str(tmp_path), "--out", str(out), "--val-fraction", "0.3", "--test-fraction", "0.3"]
        )
        == 0
    )
    _, meta = load_dataset(out)
    assert meta["sample_shape"] == [2, 31, 129]
    assert meta["source"]["counts"]["r1.h5"]["not_scored"] == 1
