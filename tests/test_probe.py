"""`dnnknn.probe`: the paper's measures for any PyTorch classifier."""
import numpy as np
import pytest
import torch

from dnnknn import ConfigError, RunConfig, probe
from dnnknn.data import load_dataset
from dnnknn.models import build_model
from dnnknn.train import fit, pred_key


@pytest.mark.parametrize("precision", ["fp32", "bf16-train"])  # bf16-train: trained in bf16, evaluated in fp32
def test_probe_on_a_probednet_equals_the_training_time_evaluation(tmp_path, precision):
    cfg = RunConfig(dataset="mnist5k", model="lenet", steps=12, eval_steps=(0, 12), ks=(1, 5), metrics=("l1", "l2"),
                    limit=(800, 300), probe_layers=("conv2", "embedding_raw"), probe_ks=(1, 5), device="cpu",
                    precision=precision).resolve()
    data = load_dataset("mnist5k", limit=cfg.limit)
    rec = fit(cfg, data, tmp_path, progress=False)
    net = build_model("lenet", data.shape, 10)
    net.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=False)["model"])
    rep = probe(net, (data.x_train, data.y_train), (data.x_test, data.y_test),
                layer=["embedding", "conv2", "embedding_raw"], k=[1, 5], metric=["l1", "l2"])
    assert np.array_equal(rep.predictions["dnn"], rec.arrays[pred_key(12, "test")])
    for r in rec.rows:
        if r["step"] != 12 or r["pca"]:
            continue
        got = rep.table.loc[(r["layer"], r["metric"], r["k"])]
        assert np.array_equal(rep.predictions[(r["layer"], r["metric"], r["k"])],
                              rec.arrays[f"12/test/{r['layer']}/{r['metric']}/{r['k']}/0"])
        for m in ("dnn_acc", "knn_acc", "MC", "ME", "P_SAME"):
            assert got[m] == pytest.approx(r[m], nan_ok=True), (r, m)


def _small_resnet():
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # one input channel
    return net.eval()


def test_probe_on_a_torchvision_model_with_dataloaders_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier
    from torch.utils.data import DataLoader, TensorDataset

    d = load_dataset("mnist5k", limit=(600, 150))
    net = _small_resnet()
    train = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=128)
    test = DataLoader(TensorDataset(d.x_test, d.y_test), batch_size=64)
    rep = probe(net, train, test, layer=["layer3", "avgpool"], k=[1, 10], metric="l1", normalize=True)
    assert set(rep.table.index) == {(l, "l1", k) for l in ("layer3", "avgpool") for k in (1, 10)}
    feats = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: feats.setdefault(n, []).append(o))
             for n in ("layer3", "avgpool")]
    with torch.no_grad():
        net(d.x_train)
        te_logits = net(d.x_test)
    for h in hooks:
        h.remove()
    assert np.array_equal(rep.predictions["dnn"], te_logits.argmax(1).numpy())
    for n in ("layer3", "avgpool"):
        tr, te = (f.mean((2, 3)) if f.ndim == 4 else f.flatten(1) for f in feats[n])
        tr, te = (torch.nn.functional.normalize(f, dim=1).double().numpy() for f in (tr, te))
        for k in (1, 10):
            sk = KNeighborsClassifier(k, p=1, algorithm="brute").fit(tr, d.y_train.numpy())
            assert np.array_equal(rep.predictions[(n, "l1", k)], sk.predict_proba(te).argmax(1)), (n, k)


def test_probe_bad_input_says_what_to_do():
    d = load_dataset("mnist5k", limit=(100, 50))
    net = _small_resnet()
    data = (d.x_train, d.y_train), (d.x_test, d.y_test)
    with pytest.raises(ConfigError, match="no layer 'layer5'.*nearest names: layer"):
        probe(net, *data, layer="layer5")
    with pytest.raises(ConfigError, match="k=101 is larger than the training set"):
        probe(net, *data, layer="avgpool", k=101)
    with pytest.raises(ConfigError, match="labels must lie in"):
        probe(net, (d.x_train, d.y_train + 10), data[1], layer="avgpool")
    with pytest.raises(ConfigError, match=r"logits of shape \(N, classes\)"):
        probe(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), *data, layer="0")
    with pytest.raises(ConfigError, match="DataLoader"):
        probe(net, 42, data[1], layer="avgpool")


def test_probe_refuses_a_module_run_twice_or_never():
    d = load_dataset("mnist5k", limit=(100, 50))
    net = _small_resnet()
    data = (d.x_train, d.y_train), (d.x_test, d.y_test)
    with pytest.raises(ConfigError, match="'layer1.0.relu' ran 2 times"):
        probe(net, *data, layer="layer1.0.relu")  # torchvision's blocks call their relu twice
    net.unused = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="'unused' ran 0 times"):
        probe(net, *data, layer="unused")
