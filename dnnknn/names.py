"""The names every layer checks against, in one leaf module that imports nothing heavy: reading them
(the command line's --help, a config's validation) loads no torch, numba or pandas."""
from __future__ import annotations

# datasets: torchvision's downloaders fetch these three for a user who is online
TORCHVISION_DATASETS = ("mnist", "cifar10", "cifar100")
# + the offline default (5,000 MNIST-like images shipped in the package) and the JPEG copy of CIFAR-10
NAMED_DATASETS = ("mnist5k",) + TORCHVISION_DATASETS + ("cifar10-jpeg",)
IMAGEFOLDER = "imagefolder:"  # prefix of a folder-of-images dataset: imagefolder:<path>
DATASETS = NAMED_DATASETS + (IMAGEFOLDER + "<path>",)
# A dataset not run here may be stood in for by a copy of it, named as the copy wherever it shows (a
# panel's title, a table's dataset, a caption): CIFAR-10 by its JPEG q75 copy, the only CIFAR-10 on
# some machines. A run on the dataset itself always comes first (experiments.get).
STAND_INS = {"cifar10": "cifar10-jpeg"}
PAPER_WRN = (28, 10)  # the paper's Wide-ResNet: depth, width
# Widths of the paper's depth that a CPU trains at MNIST's settings (about 1-1.5 h and 3 h a seed on 2 cores):
# the first stands in for the Wide-ResNet-28-10 where no run of it exists, named as `wrn_name` names it
CPU_WRN_WIDTHS = (2, 4)

MODELS = ("mlp640", "lenet", "wrn")  # appendix A's three networks
EMBED_DIM = 640  # the L2-normalised embedding before the last layer (MLP-640, LeNet; Wide-ResNet: 64 x width)
METRICS = ("l1", "l2")  # k-NN distances
PAPER_K, PAPER_METRIC = 30, "l1"  # the k-NN of the paper's figures and text (section 3)
LABELS = ("true", "random")  # section 4.4: random labels redrawn once per split
OPTIMIZERS = ("sgd", "gd")  # Nesterov SGD at batch 200; full-batch gradient descent (appendix D)
# "fp32": the paper's; "bf16": bf16 autocast for training and embedding; "bf16-train": bf16
# autocast for the training steps only, every evaluation (embedding, DNN predictions, k-NN) in fp32
PRECISIONS = ("fp32", "bf16", "bf16-train")
# How a weight-decay rate becomes the L2 coefficient (see config.py)
WEIGHT_DECAY_RULES = ("authors", "paper-text")
# What the crop's 2-pixel border holds (see config.py)
PAD_FILLS = ("black", "zero")
# What the network sees: "standardised" per image (the authors' pipeline from March 2018 on), or "raw"
# pixels 0..255 as floats (their CIFAR-10 LeNet run of the paper, dataset_wrapper.py at 220d888)
PIXELS = ("standardised", "raw")

# How a figure, a table or a sentence names a model or a dataset
NAMES = {"mlp640": "MLP-640", "lenet": "LeNet", "wrn": "Wide-ResNet", "mnist": "MNIST",
         "mnist5k": "MNIST-5k", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
         "cifar10-jpeg": "CIFAR-10 (JPEG q75 copy)"}


def name(x: str) -> str:
    return NAMES.get(x, x.replace(IMAGEFOLDER, ""))


WIDTH_FRACTIONS = {1: "a tenth", 2: "a fifth", 4: "two fifths", 5: "half"}


def model_name(model: str, depth: int | None = None, width: int | None = None) -> str:
    """A network as a page names it: "Wide-ResNet" for the paper's (and the quick profile's shallow
    one); at the paper's depth and another width, spelled out with its share of the paper's width
    (the CPU's stand-in, `CPU_WRN_WIDTHS`)."""
    if model != "wrn" or depth != PAPER_WRN[0] or width in (None, PAPER_WRN[1]):
        return name(model)
    part = WIDTH_FRACTIONS.get(width, f"{width}/{PAPER_WRN[1]}")
    return f"Wide-ResNet-{depth}-{width} (the paper's depth, {part} of its width)"


def short_name(network: str) -> str:
    """A network's name without what `model_name` adds after it: 'Wide-ResNet-28-2', for legends and lists."""
    return network.split(" (")[0]


def run_model_name(run) -> str:
    """`model_name` of a run's config."""
    c = run.config
    return model_name(c.model, c.depth, c.width)


PROFILES = ("quick", "paper")  # the book's two sizes of every experiment (profiles.py)
SECTIONS = ("main", "random", "gd", "depth")  # the kinds of runs a grid submits
PAPER_SECTIONS = SECTIONS[:3]  # the paper's grid; "depth": the CPU's Wide-ResNets (`experiments.depth_configs`)


def is_dataset(name) -> bool:
    """A named dataset or an image folder."""
    return isinstance(name, str) and (name in NAMED_DATASETS or name.startswith(IMAGEFOLDER))


def wrn_depth_ok(depth) -> bool:
    """A Wide-ResNet's depth is 6n + 4, n >= 1: 3 groups of n blocks of 2 convolutions, plus 4 layers
    as Zagoruyko and Komodakis count them (10, 16, 22, 28, ...)."""
    return isinstance(depth, int) and not isinstance(depth, bool) and depth >= 10 and (depth - 4) % 6 == 0


WRN_DEPTH_RULE = "6n+4 with n >= 1 (10, 16, 22, 28, ...)"


def embed_dim(model: str, width: int | None = None) -> int:
    """The embedding's size: 640, or 64 x width for the Wide-ResNet (10 in the paper: 640)."""
    return 64 * (width or 10) if model == "wrn" else EMBED_DIM


def layer_names(model: str, depth: int | None = None, width: int | None = None) -> tuple[str, ...]:
    """The probe-able layers of a network, input to output, as its `layer_names` names them
    (tests/test_models.py checks them against built networks): the Wide-ResNet's units
    unit_<stage>_<i>, (depth - 4) / 6 of them per stage."""
    tail = ("embedding_raw", "embedding")
    if model == "lenet":
        return ("conv1", "pool1", "conv2", "pool2", *tail)
    if model == "wrn":
        n = ((depth or 28) - 4) // 6
        return ("init_conv", *(f"unit_{g}_{u}" for g in (1, 2, 3) for u in range(n)), *tail)
    return tail
