import pytest
import torch

from dnnknn.errors import ConfigError
from dnnknn.models import build_model, count_parameters


def _wrn_count(depth, k, c_in=3, classes=10, shortcut_1x1=False):
    """Parameters of a pre-activation Wide-ResNet counted by hand: 3x3 convolutions without bias,
    two batch norms per unit (scale and shift), a final batch norm and the last linear layer."""
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    total = c_in * 16 * 9
    for g in (1, 2, 3):
        for u in range(n):
            cin = w[g - 1] if u == 0 else w[g]
            total += 2 * cin + 2 * w[g] + cin * w[g] * 9 + w[g] * w[g] * 9
            if shortcut_1x1 and cin != w[g]:
                total += cin * w[g]
    return total + 2 * w[3] + w[3] * classes + classes


def test_wrn_parameter_count_is_exact():
    """The authors' shortcut is an average pool with zero-padded channels, no 1x1 convolution:
    counted exactly, so the two variants (36.22 M and 36.48 M, the published 36.5 M) cannot be confused."""
    n = count_parameters(build_model("wrn", (3, 32, 32), 10))
    assert n == _wrn_count(28, 10) == 36_220_634
    assert _wrn_count(28, 10, shortcut_1x1=True) - n == 16 * 160 + 160 * 320 + 320 * 640
    assert count_parameters(build_model("wrn", (3, 32, 32), 100, depth=10, width=2)) == _wrn_count(10, 2, classes=100)
    assert count_parameters(build_model("mlp640", (1, 28, 28), 10)) == 784 * 640 + 640 + 640 * 10 + 10
    assert count_parameters(build_model("lenet", (3, 32, 32), 10)) == (
        3 * 32 * 25 + 32 + 32 * 64 * 25 + 64 + 64 * 8 * 8 * 640 + 640 + 640 * 10 + 10)


def test_layer_names_follow_the_paper():
    wrn = build_model("wrn", (3, 32, 32), 10, depth=28, width=1)
    emb = ["embedding_raw", "embedding"]
    assert wrn.layer_names == ["init_conv"] + [f"unit_{g}_{u}" for g in (1, 2, 3) for u in range(4)] + emb
    assert build_model("lenet", (1, 28, 28), 10).layer_names == ["conv1", "pool1", "conv2", "pool2"] + emb
    assert build_model("mlp640", (1, 28, 28), 10).layer_names == emb
    from dnnknn.names import layer_names  # the same names, known without building a network
    for name, kw in (("lenet", {}), ("mlp640", {}), ("wrn", {"depth": 28}), ("wrn", {"depth": 10}), ("wrn", {"depth": 16})):
        assert list(layer_names(name, **kw)) == build_model(name, (1, 28, 28), 10, **kw).layer_names, (name, kw)


@pytest.mark.parametrize("name,shape,kw", [("mlp640", (1, 28, 28), {}), ("lenet", (1, 28, 28), {}),
                                           ("lenet", (3, 32, 32), {}), ("wrn", (3, 32, 32), {"depth": 10, "width": 2})])
def test_features_in_one_pass_and_normalised_embedding(name, shape, kw):
    torch.manual_seed(0)
    net = build_model(name, shape, 7, **kw).eval()
    x = torch.randn(5, *shape)
    f = net.features(x, net.layer_names, logits=True)
    assert set(f) == set(net.layer_names) | {"logits"}
    assert all(v.ndim == 2 and len(v) == 5 for v in f.values())
    torch.testing.assert_close(f["logits"], net(x))
    # `embedding` is the unit-norm vector the last layer sees; `embedding_raw` is the vector before
    torch.testing.assert_close(f["embedding"].norm(dim=1), torch.ones(5))
    assert not torch.allclose(f["embedding_raw"].norm(dim=1), torch.ones(5))
    raw = f["embedding_raw"]
    torch.testing.assert_close(f["embedding"], raw / raw.norm(dim=1, keepdim=True))
    torch.testing.assert_close(net.fc(f["embedding"]), f["logits"])
    if name != "wrn":
        assert f["embedding"].shape[1] == 640


def test_wrn_embedding_is_640_at_width_10():
    net = build_model("wrn", (3, 32, 32), 10, depth=10, width=10).eval()
    assert net.features(torch.randn(2, 3, 32, 32))["embedding"].shape == (2, 640)


def test_bad_model_input():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet", (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="6n\\+4"):
        build_model("wrn", (3, 32, 32), 10, depth=27)
    with pytest.raises(ConfigError, match="unknown layer"):
        build_model("lenet", (1, 28, 28), 10).features(torch.randn(1, 1, 28, 28), ["unit_1_0"])
