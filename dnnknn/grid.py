"""Every run a profile needs, submitted as independent jobs through submitit (Slurm or local).

    python -m dnnknn grid --profile paper --executor slurm --partition gpu --gpus-per-job 1
    python -m dnnknn grid --profile quick --executor local
    python -m dnnknn grid --profile paper --executor serial --sections depth --device cpu

The quick profile trains under bf16 autocast on a CPU with native bf16 (`precision` "auto"), in
fp32 on a GPU: a quick grid meant to fill a book built on such a CPU takes `--precision bf16-train`.
Runs already in the store (or in results/) are skipped, so calling it again after failures only
resubmits what is missing; a job killed mid-way resumes from its checkpoint in the store. The run
store (--runs-dir) and the log folder must be on a filesystem the compute nodes share.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError
from .profiles import Params
from .runs import RunStore


def run_one(cfg: dict, runs_dir: str, data_dir: str | None) -> str:
    """A job: train (or resume) one run into the shared store; returns its key."""
    run = RunStore(runs_dir).get(RunConfig.from_dict(cfg), data_dir=data_dir, progress="log")
    return run.key


def submit(P: Params, configs: list[RunConfig], executor: str = "slurm", log_dir: str | None = None,
           partition: str | None = None, gpus_per_job: int = 1, cpus_per_job: int = 8,
           timeout_min: int = 24 * 60, wait: bool = True) -> list:
    store = P.store()
    missing = [c for c in configs if store.find(c) is None]
    print(f"{len(configs)} runs in the grid, {len(configs) - len(missing)} already in the store, "
          f"{len(missing)} to submit ({executor})", flush=True)
    if not missing:
        return []
    if executor == "serial":  # here, one after another: each resumes from its checkpoint when run again
        return [run_one(c.to_dict(), str(store.root.resolve()), P.data_dir) for c in missing]
    import submitit  # the cluster extra: not needed by the serial executor

    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("no Slurm on this machine (sbatch not found): submit from the cluster's login node, or "
                          "use --executor local to run the jobs here")
    folder = Path(log_dir or store.root / "grid-logs") / "%j"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=executor)
    params = {"timeout_min": timeout_min, "name": "dnnknn"}
    if executor == "slurm":
        params.update(gpus_per_node=gpus_per_job, cpus_per_task=cpus_per_job)
        if partition:
            params["slurm_partition"] = partition
    ex.update_parameters(**params)
    jobs = [ex.submit(run_one, c.to_dict(), str(store.root.resolve()), P.data_dir) for c in missing]
    for c, j in zip(missing, jobs):
        print(f"  job {j.job_id}: {c.label()}", flush=True)
    if wait:
        from tqdm import tqdm

        failed = []
        with tqdm(total=len(jobs), desc="grid", unit="run") as bar:
            pending = list(jobs)
            while pending:
                for j in [j for j in pending if j.done()]:
                    pending.remove(j)
                    bar.update(1)
                    try:
                        j.result()
                    except Exception as e:  # noqa: BLE001 - report and go on; rerun resubmits it
                        failed.append((j, e))
                time.sleep(1)
        for j, e in failed:
            print(f"job {j.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}; "
                  f"logs in {j.paths.stdout.parent}. Run the same command again to resubmit it.")
    return jobs
