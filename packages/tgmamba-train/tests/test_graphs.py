import numpy as np
import pytest
import torch
from conftest import TUSZ_TUH_CHANNELS

from tgmamba_train.graphs import (
    canonical_name,
    distance_graph,
    electrode_positions,
    fully_connected_graph,
    graph_for_channels,
    known_electrodes,
)

EMOTIV = ["AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"]
TUSZ = TUSZ_TUH_CHANNELS
BCI = (
    "Fp1 Fp2 AF7 AF3 AF4 AF8 F7 F5 F3 F1 Fz F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 T7 C5 C3 C1 Cz C2 C4 "
    "C6 T8 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 P7 P5 P3 P1 Pz P2 P4 P6 P8 PO7 POz PO8 O1 O2"
).split()


@pytest.mark.parametrize(
    "names", [EMOTIV, TUSZ, BCI, ["PO3", "PO4", "Oz", "POz"]], ids=["emotiv", "tusz", "bci", "mamem"]
)
def test_positions_on_unit_sphere_and_mirrored(names):
    pos = electrode_positions(names)
    assert pos.shape == (len(names), 3)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 1.0, atol=1e-9)
    # odd numbers are left (x < 0), even right (x > 0), z-names on the midline
    for n, p in zip(names, pos):
        c = canonical_name(n)
        if c[-1] == "z":
            assert abs(p[0]) < 1e-9
        elif c[-1].isdigit():
            assert (p[0] < 0) == (int(c[-1]) % 2 == 1), c


def test_known_geometry():
    p = dict(
        zip(
            ["Cz", "Fpz", "Oz", "T7", "T8", "Fz", "C3"],
            electrode_positions(["Cz", "Fpz", "Oz", "T7", "T8", "Fz", "C3"]),
        )
    )
    np.testing.assert_allclose(p["Cz"], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(p["Fpz"], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(p["Oz"], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(p["T7"], [-1, 0, 0], atol=1e-12)
    # Fz is 45 degrees from the vertex toward the nose; C3 is half-way between T7 and Cz on the coronal arc
    np.testing.assert_allclose(p["Fz"], [0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(p["C3"], [-np.sqrt(0.5), 0, np.sqrt(0.5)], atol=1e-12)
    # mirror symmetry of the whole table
    for n in known_electrodes():
        c = canonical_name(n)
        if c[-1].isdigit() and int(c[-1]) % 2 == 1 and c[:-1] + str(int(c[-1]) + 1) in known_electrodes():
            a, b = electrode_positions([c, c[:-1] + str(int(c[-1]) + 1)])
            np.testing.assert_allclose(a * [-1, 1, 1], b, atol=1e-12)


def test_aliases_and_labels():
    assert canonical_name("EEG FP1-REF") == "Fp1"
    assert canonical_name("EEG T3-LE") == "T7"
    assert canonical_name("t6") == "P8"
    assert canonical_name("EOG horizontal") is None
    mid = electrode_positions(["F3-M2"])[0]
    f3, m2 = electrode_positions(["F3", "M2"])
    np.testing.assert_allclose(mid, (f3 + m2) / np.linalg.norm(f3 + m2))


def test_unknown_channel_error_names_it():
    with pytest.raises(KeyError, match="XYZ"):
        electrode_positions(["Fz", "XYZ"])


def test_distance_graph_kernel_and_topk():
    pos = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [6, 0, 0]])
    d = np.abs(pos[:, None, 0] - pos[None, :, 0])
    sigma = d[~np.eye(4, dtype=bool)].std()
    ei, ew = distance_graph(pos, top_k=None)
    assert ei.shape == (2, 12) and ew.dtype == torch.float32
    for (j, i), w in zip(ei.T.tolist(), ew.tolist()):
        assert w == pytest.approx(np.exp(-(d[i, j] ** 2) / sigma**2), rel=1e-6)
    ei1, _ = distance_graph(pos, top_k=1)
    pairs = {tuple(e) for e in ei1.T.tolist()}
    # nearest neighbours: 0-1, 1-0, 2-1, 3-2 -> symmetrised
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}
    _, wt = distance_graph(pos, top_k=None, threshold=0.5)
    assert (wt >= 0.5).all()


def test_emotiv_graph_symmetric_connected():
    ei, ew = graph_for_channels(EMOTIV, top_k=3)
    A = torch.zeros(14, 14)
    A[ei[1], ei[0]] = ew
    assert torch.equal(A, A.T)
    assert ((A > 0).sum(1) >= 3).all()
    assert (A.diagonal() == 0).all()
    ei_f, ew_f = fully_connected_graph(5)
    assert ei_f.shape == (2, 20) and torch.all(ew_f == 1)


def test_distance_graph_bad_input():
    with pytest.raises(ValueError, match="positions"):
        distance_graph(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="top_k"):
        distance_graph(np.eye(3), top_k=0)
