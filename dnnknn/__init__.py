"""dnnknn: does a network classify like a k-NN on its own embedding? (Cohen, Sapiro, Giryes 2018)

    from dnnknn import RunConfig, RunStore
    run = RunStore().get(RunConfig(dataset="mnist5k", model="mlp640", steps=300))
    run.table()          # DNN and k-NN accuracy, MC, ME, P_SAME by training step

    from dnnknn import probe  # the same measures for any PyTorch classifier
    probe(model, train, test, layer="avgpool", k=30).table
"""
__version__ = "0.2.0"  # bumped when the numbers a run produces change (0.2: k-NN on the normalised embedding, decay on weights)

from .config import RunConfig  # noqa: E402
from .errors import ConfigError, DataNotFoundError, DnnKnnError, TrainingDiverged  # noqa: E402
from .runs import Run, RunStore  # noqa: E402
from .probe import probe  # noqa: E402  (shadows the submodule: `from dnnknn import probe` is the function)

__all__ = ["RunConfig", "RunStore", "Run", "DnnKnnError", "ConfigError", "DataNotFoundError",
           "TrainingDiverged", "probe", "__version__"]
