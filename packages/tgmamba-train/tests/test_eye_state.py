from pathlib import Path

import numpy as np
import pytest

from tgmamba_train.data.arff import read_arff
from tgmamba_train.data.eye_state import (
    EMOTIV_CHANNELS,
    EyeStateConfig,
    convert_arff,
    default_npz_path,
    load_recording,
    prepare_eye_state,
    window_labels,
)
from tgmamba_train.data.scaling import RobustScaler
from tgmamba_train.errors import DataError

ARFF = Path("/work/shared/data/eeg-eye-state/EEG Eye State.arff")


def test_embedded_recording():
    rec = load_recording()
    assert rec.signals.shape == (14980, 14) and rec.signals.dtype == np.float32
    assert rec.channels == EMOTIV_CHANNELS and rec.sfreq == 128.0
    assert 0.44 < rec.labels.mean() < 0.46
    assert 1 + np.count_nonzero(np.diff(rec.labels)) == 24
    assert rec.signals.max() > 600_000  # the artifact samples are kept, scaling deals with them
    assert default_npz_path().stat().st_size < 1_000_000


@pytest.mark.skipif(not ARFF.is_file(), reason="shared ARFF not available")
def test_conversion_reproduces_package_data(tmp_path):
    out = tmp_path / "e.npz"
    summary = convert_arff(ARFF, out)
    assert summary["samples"] == 14980
    a, b = load_recording(out), load_recording()
    np.testing.assert_array_equal(a.signals, b.signals)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_robust_scaling_survives_artifacts():
    rec = load_recording()
    sc = RobustScaler.fit(rec.signals, clip=10.0)
    y = sc.transform(rec.signals)
    assert np.isfinite(y).all() and np.abs(y).max() <= 10.0
    # the bulk of the data is not squashed by the artifacts
    assert 0.3 < np.median(np.abs(y)) < 1.0


def test_window_labels_policies():
    labels = np.array([0] * 10 + [1] * 6)
    starts = np.array([0, 4, 8])
    for policy, expect in (("majority", [0, 0, 1]), ("center", [0, 0, 1]), ("drop", [0, 0, 1])):
        y, straddle = window_labels(labels, starts, 8, policy)
        assert straddle.tolist() == [False, True, True]
        assert y.tolist() == expect
    blip = np.array([0] * 6 + [1] * 2 + [0] * 8)
    assert window_labels(blip, np.array([2]), 8, "center")[0].tolist() == [1]
    assert window_labels(blip, np.array([2]), 8, "majority")[0].tolist() == [0]


@pytest.mark.parametrize("features,shape", [("bands", (14, 5, 19)), ("stft", (14, 5, 38)), ("raw", (14, 128, 15))])
def test_prepare_fold_shapes_counts_and_leakage(features, shape):
    rec = load_recording()
    cfg = EyeStateConfig(features=features, stride=64)
    d = prepare_eye_state(rec, 1, 5, cfg)
    assert d.train.x.shape[1:] == shape
    for s in (d.train, d.val, d.test):
        assert np.isfinite(s.x).all()
        assert s.raw.shape[1:] == (14, 128)
    info = d.info
    assert info["test_straddling_windows"] > 0  # transitions exist and are counted...
    assert info["test_windows"] == len(d.test)  # ...and dropped under the default policy
    starts_test, starts_train = d.test.groups, d.train.groups  # window start samples
    for s in starts_train:
        assert np.all(np.abs(starts_test - s) >= 128 + cfg.gap) or not len(starts_test)
    assert set(np.unique(d.test.y)) == {0, 1}


def _write_arff(path: Path, names, rows):
    lines = ["@RELATION x", ""] + [f"@ATTRIBUTE {n} NUMERIC" for n in names] + ["", "@DATA"]
    lines += [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_bad_inputs_name_file_and_problem(tmp_path):
    with pytest.raises(DataError, match="missing.arff: file not found"):
        read_arff(tmp_path / "missing.arff")
    wrong = tmp_path / "wrong.arff"
    _write_arff(wrong, ["Fz", "eyeDetection"], [[1.0, 0]] * 5)
    with pytest.raises(DataError, match="wrong.arff: wrong channel set"):
        convert_arff(wrong, tmp_path / "o.npz")
    names = [*EMOTIV_CHANNELS, "eyeDetection"]
    rows = np.ones((2000, 15))
    rows[:, -1] = np.arange(2000) % 2
    rows[7, 3] = np.nan
    nan = tmp_path / "nan.arff"
    _write_arff(nan, names, rows.tolist())
    with pytest.raises(DataError, match=r"nan.arff: 1 non-finite values .*sample 7, channel FC5"):
        convert_arff(nan, tmp_path / "o.npz")
    short = tmp_path / "short.arff"
    _write_arff(short, names, [[1.0] * 14 + [0]] * 3 + [[1.0] * 13])
    with pytest.raises(DataError, match="short.arff: line 23: expected 15 values, found 13"):
        read_arff(short)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="corrupt.npz: corrupt or unreadable npz"):
        load_recording(corrupt)
