"""The paper's space and regulariser: k-NN on the L2-normalised embedding (checked end to end
against scikit-learn), runs keyed without the device, weight decay as the authors' code applied it."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnnknn import RunConfig, RunStore
from dnnknn.data import load_dataset
from dnnknn.models import build_model
from dnnknn.train import decay_groups, fit, make_optimizer, pred_key


@pytest.mark.parametrize("model", ["mlp640", "lenet"])
def test_recorded_knn_equals_sklearn_on_the_normalised_embedding(tmp_path, model):
    from sklearn.neighbors import KNeighborsClassifier

    cfg = RunConfig(dataset="mnist5k", model=model, steps=24, eval_steps=(0, 24), ks=(1, 30),
                    metrics=("l1",), limit=(1500, 400), eval_train=True, device="cpu").resolve()
    data = load_dataset("mnist5k", limit=cfg.limit)
    rec = fit(cfg, data, tmp_path, progress=False)
    # rebuild the trained model from the final checkpoint
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ck["step"] == 24
    net = build_model(model, data.shape, data.num_classes)
    net.load_state_dict(ck["model"])
    net.eval()
    with torch.no_grad():
        emb = {s: net.features(x, ["embedding_raw"])["embedding_raw"] for s, x in
               (("train", data.x_train), ("test", data.x_test))}
        dnn = {s: net(x).argmax(1).numpy() for s, x in (("train", data.x_train), ("test", data.x_test))}
    # the paper's vector: the raw 640-d vector divided by its L2 norm, computed here by hand
    emb = {s: (e / e.norm(dim=1, keepdim=True)).double().numpy() for s, e in emb.items()}
    y = {"train": data.y_train.numpy(), "test": data.y_test.numpy()}
    for split in ("test", "train"):
        assert np.array_equal(rec.arrays[pred_key(24, split)], dnn[split])
        for k in (1, 30):
            sk = KNeighborsClassifier(k, p=1, algorithm="brute").fit(emb["train"], y["train"])
            expect = sk.predict_proba(emb[split]).argmax(1)
            got = rec.arrays[pred_key(24, split, "embedding", "l1", k, 0)]
            assert np.array_equal(got, expect), (split, k, (got != expect).sum())
            # the measures, recomputed from scratch with numpy
            row = next(r for r in rec.rows if (r["step"], r["split"], r["k"], r["layer"]) == (24, split, k, "embedding"))
            ok, wrong = dnn[split] == y[split], dnn[split] != y[split]
            assert row["dnn_acc"] == pytest.approx(ok.mean())
            assert row["knn_acc"] == pytest.approx((expect == y[split]).mean())
            assert row["MC"] == pytest.approx((expect[ok] == y[split][ok]).mean())
            assert row["ME"] == pytest.approx((expect[wrong] == dnn[split][wrong]).mean())
            assert row["P_SAME"] == pytest.approx((expect == dnn[split]).mean())


def test_device_is_not_part_of_the_run_identity(tmp_path):
    cpu, cuda, auto = (RunConfig(dataset="mnist5k", steps=10, device=d) for d in ("cpu", "cuda", "auto"))
    assert cpu.key("v") == cuda.key("v") == auto.key("v")
    assert cpu.key("v") != RunConfig(dataset="mnist5k", steps=10, seed=1).key("v")
    assert cpu.key("v") != RunConfig(dataset="mnist5k", steps=10, precision="bf16").key("v")
    # a record made on a GPU (its config and meta say CUDA) is found by a CPU build of the book
    cfg = RunConfig(dataset="mnist5k", steps=4, eval_steps=(0, 4), limit=(300, 100), device="cpu")
    made = RunStore(tmp_path / "gpu").get(cfg, progress=False)
    run_dir = tmp_path / "results" / made.key
    shutil.copytree(made.path, run_dir)
    conf = json.loads((run_dir / "config.json").read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    conf["device"], meta["device"], meta["device_name"] = "cuda", "cuda", "NVIDIA H200"
    (run_dir / "config.json").write_text(json.dumps(conf))
    (run_dir / "meta.json").write_text(json.dumps(meta))
    from dnnknn.runs import write_manifest
    write_manifest(run_dir)  # as the GPU machine's store wrote it
    found = RunStore(tmp_path / "cpu-store", extra=[tmp_path / "results"]).find(cfg)
    assert found is not None and found.meta["device_name"] == "NVIDIA H200"
    assert found.config.device == "cuda" and cfg.device == "cpu"


def test_weight_decay_rules_and_effective_coefficient():
    lenet = RunConfig(model="lenet", dataset="cifar10").resolve()
    assert (lenet.weight_decay, lenet.weight_decay_rule) == (0.008, "authors")
    assert lenet.effective_weight_decay == pytest.approx(6.4e-5)
    assert "effective weight decay 6.4e-05" in repr(lenet)
    assert RunConfig(model="lenet", dataset="cifar100").effective_weight_decay == pytest.approx(1e-4)
    assert RunConfig(model="lenet", dataset="cifar10", weight_decay_rule="paper-text").effective_weight_decay == 0.008
    assert RunConfig(model="wrn", dataset="cifar10").effective_weight_decay == 0.0008  # the rate, once
    assert RunConfig(model="mlp640", dataset="cifar10", weight_decay=0.1).effective_weight_decay == pytest.approx(0.01)
    a, b = RunConfig(model="lenet", dataset="cifar10"), RunConfig(model="lenet", dataset="cifar10",
                                                                  weight_decay_rule="paper-text")
    assert a.key("v") != b.key("v")
    from dnnknn import ConfigError
    with pytest.raises(ConfigError, match="weight_decay_rule must be one of"):
        RunConfig(weight_decay_rule="tf")


@pytest.mark.parametrize("model,dataset,shape", [("mlp640", "cifar10", (3, 32, 32)), ("lenet", "cifar10", (3, 32, 32)),
                                                 ("lenet", "cifar100", (3, 32, 32)), ("lenet", "mnist", (1, 28, 28)),
                                                 ("wrn", "cifar10", (3, 32, 32))])
def test_only_conv_and_linear_weights_are_decayed(model, dataset, shape):
    kw = {"depth": 10, "width": 1} if model == "wrn" else {}
    cfg = RunConfig(model=model, dataset=dataset, **kw).resolve()
    net = build_model(model, shape, 10, **kw)
    groups = decay_groups(net, cfg.effective_weight_decay)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in decayed}
    for n, p in net.named_parameters():
        is_weight = n.endswith("weight") and p.ndim in (2, 4)  # conv (4-D) and linear (2-D) weights
        assert (n in names) == is_weight, n
    assert any("bn" in n for n, _ in net.named_parameters()) == (model == "wrn")
    assert groups[0]["weight_decay"] == cfg.effective_weight_decay and groups[1]["weight_decay"] == 0.0
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.parameters())


def test_one_lenet_step_with_the_authors_rule_equals_the_hand_computed_update():
    """Loss of the authors' code: xent + rate * sum(rate * 1/2 |w|^2) over conv/fc weights; one
    Nesterov step (first step: velocity = grad, update = lr * (1 + momentum) * grad)."""
    torch.manual_seed(0)
    cfg = RunConfig(model="lenet", dataset="cifar10", weight_decay=0.3).resolve()  # a big rate: visible
    net = build_model("lenet", (3, 32, 32), 10)
    ref = build_model("lenet", (3, 32, 32), 10)
    ref.load_state_dict(net.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = make_optimizer(net, cfg)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    rate = cfg.weight_decay
    weights = [m.weight for m in ref.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    loss = F.cross_entropy(ref(x), y) + rate * sum(rate * 0.5 * (w ** 2).sum() for w in weights)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for (n, p), (_, q), g in zip(net.named_parameters(), ref.named_parameters(), grads):
        torch.testing.assert_close(p.detach(), q.detach() - cfg.lr * (1 + cfg.momentum) * g, msg=n)
    # the paper-text rule would have moved the weights differently
    pt = RunConfig(model="lenet", dataset="cifar10", weight_decay=0.3, weight_decay_rule="paper-text").resolve()
    assert pt.effective_weight_decay == 0.3 != cfg.effective_weight_decay
