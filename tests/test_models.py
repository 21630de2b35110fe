import pytest
import torch

from dnnknn.errors import ConfigError
from dnnknn.models import build_model, count_parameters


def test_wrn_28_10_parameter_count_matches_published():
    n = count_parameters(build_model("wrn", (3, 32, 32), 10))
    assert abs(n - 36.5e6) / 36.5e6 < 0.01, n


def test_layer_names_follow_the_paper():
    wrn = build_model("wrn", (3, 32, 32), 10, depth=28, width=1)
    assert wrn.layer_names == ["init_conv"] + [f"unit_{g}_{u}" for g in (1, 2, 3) for u in range(4)] + ["embedding"]
    assert build_model("lenet", (1, 28, 28), 10).layer_names == ["conv1", "pool1", "conv2", "pool2", "embedding"]
    assert build_model("mlp640", (1, 28, 28), 10).layer_names == ["embedding"]


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
    # the last layer sees the L2-normalised embedding
    torch.testing.assert_close(net.fc(f["embedding"] / f["embedding"].norm(dim=1, keepdim=True)), f["logits"])
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
