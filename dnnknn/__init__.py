"""dnnknn: does a network classify like a k-NN on its own embedding? (Cohen, Sapiro, Giryes 2018)

    from dnnknn import RunConfig, RunStore
    run = RunStore().get(RunConfig(dataset="mnist5k", model="mlp640", steps=300))
    run.table()          # DNN and k-NN accuracy, MC, ME, P_SAME by training step

    from dnnknn import probe  # the same measures for any PyTorch classifier
    probe(model, train, test, layer="avgpool", k=30).table
"""
__version__ = "0.2.0"  # bumped when the numbers a run produces change (0.2: k-NN on the normalised embedding, decay on weights)

# The public names load on first use (PEP 562), so that `python -m dnnknn --help` and the names in
# `dnnknn.names` import no torch.
_PUBLIC = {"RunConfig": "config", "RunStore": "runs", "Run": "runs", "probe": "probing",
           "DnnKnnError": "errors", "ConfigError": "errors", "DataNotFoundError": "errors",
           "TrainingDiverged": "errors"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dnnknn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
