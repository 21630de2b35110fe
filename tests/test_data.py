import numpy as np
import pytest
import torch

from dnnknn.data import augment, load_dataset, random_labels, standardize
from dnnknn.errors import ConfigError, DataNotFoundError

from .conftest import SHARED_DATA, needs_shared_mnist


def test_mnist5k_offline_split():
    d = load_dataset("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    counts_tr = np.bincount(d.y_train.numpy(), minlength=10)
    counts_te = np.bincount(d.y_test.numpy(), minlength=10)
    assert np.abs(counts_tr / 4000 - counts_te / 1000).max() < 0.002  # stratified
    torch.testing.assert_close(d.x_train.mean((1, 2, 3)), torch.zeros(4000), atol=1e-5, rtol=0)
    assert not d.flip
    assert torch.equal(load_dataset("mnist5k").y_test, d.y_test)  # split fixed once


def test_standardize_matches_tensorflow_definition():
    x = torch.rand(3, 3, 8, 8) * 255
    x[2] = 7.0  # constant image: std clamped to 1/sqrt(N)
    s = standardize(x)
    for i in range(2):
        v = x[i].flatten().double()
        np.testing.assert_allclose(s[i].flatten(), ((v - v.mean()) / v.std(unbiased=False)).float(), atol=1e-5)
    assert torch.all(s[2] == 0)


def test_augment_is_a_shifted_crop_and_flip():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = augment(x, flip=True, generator=g)
        assert a.shape == x.shape
        for b in range(2):
            padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
            found = any(torch.equal(a[b], cand) for oy in range(5) for ox in range(5)
                        for cand in (padded[:, oy:oy + 6, ox:ox + 6], padded[:, oy:oy + 6, ox:ox + 6].flip(2)))
            assert found
    same = augment(x, False, torch.Generator().manual_seed(3))
    assert torch.equal(same, augment(x, False, torch.Generator().manual_seed(3)))


def test_black_border_equals_the_authors_order():
    """Pad the raw image with black, crop, then standardise (the authors' order), computed here
    by hand, equals `augment` on standardised images with `black`; the 0.2 order differs."""
    from dnnknn.data import _from_uint8

    raw = np.random.default_rng(0).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    raw[0, :6] = 0  # a black half: the border blends in
    x, black = _from_uint8(raw)
    r = torch.as_tensor(raw).permute(0, 3, 1, 2).float()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours = augment(x, True, g1, black=black)
    crops = augment(r, True, g2)  # the same offsets and flips on the raw pixels: zero = black
    torch.testing.assert_close(ours, standardize(crops), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.mean((1, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)
    old = augment(x, True, torch.Generator().manual_seed(5))  # grey border, not standardised again
    assert (old - ours).abs().max() > 0.1
    d = load_dataset("mnist5k", limit=(50, 10))  # MNIST's background is black: the border continues it
    assert torch.allclose(d.black_train, d.x_train.reshape(50, -1).min(1).values, atol=1e-5)


def test_test_images_of_another_size_are_refused(tmp_path):
    from PIL import Image

    for split, size in (("train", 8), ("test", 10)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("L", (size, size), 3).save(tmp_path / split / c / "0.png")
    with pytest.raises(ConfigError, match="training images are 8x8 and the test images 10x10"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_random_labels_fixed_by_seed():
    d1 = load_dataset("mnist5k", labels="random", label_seed=4)
    d2 = load_dataset("mnist5k", labels="random", label_seed=4)
    true = load_dataset("mnist5k")
    assert torch.equal(d1.y_train, d2.y_train) and torch.equal(d1.y_test, d2.y_test)
    assert not torch.equal(d1.y_train, load_dataset("mnist5k", labels="random", label_seed=5).y_train)
    agree = (d1.y_train == true.y_train).float().mean().item()
    assert 0.07 < agree < 0.13  # about 1/C
    assert d1.y_train.min() >= 0 and d1.y_train.max() <= 9
    a, b = random_labels(3000, 1500, 3, seed=0)
    a2, b2 = random_labels(3000, 1500, 3, seed=0)
    assert torch.equal(a, a2) and torch.equal(b, b2)  # fixed by the seed
    for lab in (a, b):  # uniform over the classes
        freq = np.bincount(lab.numpy(), minlength=3) / len(lab)
        assert len(freq) == 3 and np.abs(freq - 1 / 3).max() < 0.05
    assert (a[:1500] == b).float().mean() < 0.45  # the test labels are drawn apart from the train labels


def test_unknown_dataset_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(DataNotFoundError, match="cifar100.*not in"):
        load_dataset("cifar100", root=tmp_path, download=False)
    with pytest.raises(DataNotFoundError, match="MNIST/raw"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert d.x_train.shape == (8, 3, 32, 32) and d.num_classes == 2 and d.flip
    assert d.y_test.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataNotFoundError, match="train/<class>"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


@needs_shared_mnist
def test_real_mnist_from_shared_data():
    d = load_dataset("mnist", root=SHARED_DATA, download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(d.y_test.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_raw_pixels_are_the_0_255_values_and_train_with_a_black_border(tmp_path):
    """The authors' CIFAR-10 LeNet saw the pixels as floats, padded with zeros (black), not standardised
    (`lib/datasets/dataset_wrapper.py` at 220d888, lines 238-256)."""
    from dnnknn import RunConfig, RunStore
    raw, std = load_dataset("mnist5k", pixels="raw"), load_dataset("mnist5k")
    assert raw.x_train.min() == 0 and raw.x_train.max() == 255 and raw.black_train is None
    torch.testing.assert_close(standardize(raw.x_train[:50]), std.x_train[:50], atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(1)
    a = augment(raw.x_train[:8], flip=False, generator=g)  # the raw border: 0, black
    assert a.min() == 0 and torch.equal(a.round(), a)  # nothing rescaled
    with pytest.raises(ConfigError, match="pixels must be one of"):
        load_dataset("mnist5k", pixels="scaled")
    cfg = RunConfig(dataset="mnist5k", model="lenet", steps=4, eval_steps=(0, 4), limit=(300, 100), pixels="raw")
    assert cfg.key("v") != RunConfig(**{**cfg.__dict__, "pixels": "standardised"}).key("v")
    assert "pixels" not in RunConfig().identity()  # the default keeps every earlier run's key
    assert "raw pixels" in cfg.label()
    run = RunStore(tmp_path).get(cfg, progress=False)
    assert run.config.pixels == "raw" and 0 <= run.final().knn_acc <= 1
