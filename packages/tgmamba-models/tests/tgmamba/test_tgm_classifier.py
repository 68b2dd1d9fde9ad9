"""TGMambaClassifier: input forms agree, pools, dropout, bad input, save/load round trip."""

import json

import pytest
import torch
from torch_geometric.data import Batch, Data

from ssm_kernels.testing import seed_all
from tgmamba_models import TGMamba, TGMambaClassifier, TGMambaClassifierConfig, TGMambaConfig

V = 5


def _cfg(**kw):
    base = dict(num_vertices=V, in_features=3, num_classes=4, d_model=8, d_state=4)
    base.update(kw)
    return TGMambaClassifierConfig(**base)


def _shared_graph():
    ei = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    return ei, torch.rand(ei.shape[1], dtype=torch.float64) + 0.1


@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(num_layers=2, pass_edges=True, final_gconv=True, seq_pool_type="last", vertex_pool_type="max"),
        dict(conv_type="gcnconv", seq_pool_type="max", residual=True, final_gconv=True),
        dict(conv_type="gatv2conv", num_layers=2, final_gconv=True),
        dict(conv_type="none", edge_learner_attention=False),
    ],
    ids=["default", "2layers-pass-final-last-max", "gcn-max-residual", "gatv2", "none"],
)
def test_input_forms_agree(kw):
    seed_all(0)
    m = TGMambaClassifier(_cfg(**kw)).double()
    b, L = 3, 6
    x = torch.randn(b, V, L, 3, dtype=torch.float64)
    ei, ew = _shared_graph()
    plain = m(x, ei, ew)
    assert plain.shape == (b, 4) and torch.isfinite(plain).all()
    data = Batch.from_data_list([Data(x=x[i], edge_index=ei, edge_weight=ew) for i in range(b)])
    torch.testing.assert_close(m(data), plain, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m(data.x, data.edge_index, data.edge_weight, data.batch), plain)
    data_attr = Batch.from_data_list([Data(x=x[i], edge_index=ei, edge_attr=ew) for i in range(b)])
    torch.testing.assert_close(m(data_attr), plain)
    # the model follows the graph: a different graph gives different logits
    if kw.get("conv_type") != "none":
        assert not torch.allclose(m(x, ei[:, :2], ew[:2]), plain)


def test_classifier_gradients_and_dropout():
    seed_all(1)
    m = TGMambaClassifier(_cfg(dropout=0.5, num_layers=2)).double()
    x = torch.randn(2, V, 4, 3, dtype=torch.float64)
    ei, ew = _shared_graph()
    m.train()
    out = m(x, ei, ew)
    out.sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, missing
    m.eval()
    torch.testing.assert_close(m(x, ei, ew), m(x, ei, ew))


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda: (torch.randn(7, 4, 3),), "not a positive multiple of num_vertices"),
        (lambda: (torch.randn(2, V, 4, 2),), "feature size 2"),
        (lambda: (torch.randn(2, V + 1, 4, 3),), "vertices along dim 1"),
        (lambda: (torch.randn(2, V, 4, 3), torch.tensor([[0, V], [1, 2]])), "out of range"),
        (lambda: (torch.full((2, V, 4, 3), float("nan")),), "NaN"),
        (lambda: (torch.randn(10, 4, 3), None, None, torch.tensor([0] * 4 + [1] * 6)), "batch must assign"),
        (lambda: (torch.randn(10, 4, 3), torch.tensor([[0, 5], [1, 2]])), "different samples"),
        (lambda: ("x",), "x must be"),
    ],
)
def test_bad_input(args, match):
    m = TGMambaClassifier(_cfg())
    with pytest.raises((ValueError, TypeError), match=match):
        m(*args())


def test_bad_config():
    with pytest.raises(ValueError, match="seq_pool_type"):
        _cfg(seq_pool_type="sum")
    with pytest.raises(ValueError, match="vertex_pool_type"):
        _cfg(vertex_pool_type="sum")
    with pytest.raises(ValueError, match="conv_type"):
        _cfg(conv_type="gin")
    with pytest.raises(TypeError, match="TGMambaClassifierConfig"):
        TGMambaClassifier({"num_vertices": 5})


def test_classifier_save_load_roundtrip(tmp_path):
    seed_all(2)
    cfg = _cfg(num_layers=2, final_gconv=True, dropout=0.1, pass_edges=True)
    m = TGMambaClassifier(cfg).eval()
    with torch.no_grad():  # move every parameter off its init so the round trip is meaningful
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    m.save_pretrained(tmp_path / "clf")
    saved = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert saved["_config_class"] == "TGMambaClassifierConfig" and saved["num_layers"] == 2
    m2 = TGMambaClassifier.from_pretrained(tmp_path / "clf").eval()
    assert m2.config == cfg
    x = torch.randn(2, V, 5, 3)
    ei, ew = _shared_graph()
    torch.testing.assert_close(m2(x, ei, ew.float()), m(x, ei, ew.float()), rtol=0, atol=0)
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_block_save_load_roundtrip(tmp_path):
    seed_all(3)
    blk = TGMamba(d_model=8, d_state=4, num_vertices=3, conv_type="chebconv", attn_time_varying=True, dt_rank=3)
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.01 * torch.randn_like(p))
    blk.save_pretrained(tmp_path / "blk")
    blk2 = TGMamba.from_pretrained(tmp_path / "blk")
    assert isinstance(blk2.config, TGMambaConfig) and blk2.config == blk.config and blk2.dt_rank == 3
    x = torch.randn(6, 4, 8)
    torch.testing.assert_close(blk2(x), blk(x), rtol=0, atol=0)


def test_load_rejects_foreign_or_unknown_config(tmp_path):
    blk = TGMamba(d_model=8)
    blk.save_pretrained(tmp_path / "blk")
    with pytest.raises(ValueError, match="not a TGMambaClassifierConfig"):
        TGMambaClassifier.from_pretrained(tmp_path / "blk")
    p = tmp_path / "blk" / "config.json"
    data = json.loads(p.read_text())
    data["no_such_field"] = 1
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no_such_field"):
        TGMamba.from_pretrained(tmp_path / "blk")
    with pytest.raises(FileNotFoundError, match="config.json"):
        TGMamba.from_pretrained(tmp_path / "missing")
