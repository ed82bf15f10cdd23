"""Where the jobs run: in this process, in local processes (one per job, pinned to a CPU set), or
as Ray tasks on a cluster. Every runner returns the results in the order of the jobs and never
lets one job's failure (an exception, a crashed process, a lost task) stop the others."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path

from ._job import read_result, run_job, run_job_to_file, write_result


def _lost(spec: dict, why: str) -> dict:
    return {"status": "failed", "error": why, "traceback": "", "spec": spec, "started": time.time(),
            "wall_seconds": 0.0}


def run_inline(jobs: list[tuple[dict, Path]], keep_models: bool, on_done: Callable) -> None:
    """One after the other in this process (``--workers 0``)."""
    for spec, folder in jobs:
        result = run_job(spec, str(folder), keep_models)
        write_result(folder, result)
        on_done(spec, result)


def cpu_sets(workers: int) -> list[list[int]]:
    """The CPUs this process may use, dealt into ``workers`` disjoint sets (shared round-robin
    when there are more workers than CPUs)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if workers <= len(cpus):
        size = len(cpus) // workers
        return [cpus[i * size : (i + 1) * size] for i in range(workers)]
    return [[cpus[i % len(cpus)]] for i in range(workers)]


def run_processes(jobs: list[tuple[dict, Path]], workers: int, keep_models: bool, on_done: Callable) -> None:
    """Each job in a fresh process (spawned: no inherited torch state; its peak memory is its
    own), at most ``workers`` at a time, each pinned to its own CPU set with that many threads.
    A process that dies without writing its result (a crash, the OOM killer) fails its job only."""
    context = multiprocessing.get_context("spawn")
    free = cpu_sets(workers)
    pending = list(jobs)
    running: dict = {}  # process -> (spec, folder, cpus)
    try:
        while pending or running:
            while pending and free:
                spec, folder = pending.pop(0)
                Path(folder).mkdir(parents=True, exist_ok=True)
                (Path(folder) / "result.json").unlink(missing_ok=True)
                cpus = free.pop(0)
                process = context.Process(target=run_job_to_file, args=(spec, str(folder), keep_models, cpus),
                                          name=f"xmodal-benchmark {spec['method']}/{spec['category']}")
                process.start()
                running[process] = (spec, folder, cpus)
            wait([p.sentinel for p in running], timeout=1.0)
            for process in [p for p in running if not p.is_alive()]:
                spec, folder, cpus = running.pop(process)
                process.join()
                free.append(cpus)
                result = read_result(folder)
                if result is None or result.get("spec") != spec:
                    result = _lost(spec, f"the job's process exited with code {process.exitcode} without a result")
                    write_result(folder, result)
                on_done(spec, result)
    finally:
        for process in running:  # interrupted: stop what we started, nothing else
            process.terminate()
        for process in running:
            process.join()


def run_ray(jobs: list[tuple[dict, Path]], address: str, keep_models: bool, on_done: Callable,
            cpus_per_task: int = 1, gpus_per_task: float = 0) -> None:
    """As Ray tasks on the cluster at ``address`` ("local": start a local Ray instance), each
    task reserving ``cpus_per_task`` CPUs (and ``gpus_per_task`` GPUs: Ray pins the task to its
    GPU through CUDA_VISIBLE_DEVICES). Results come back to this process, which writes them, so
    the workers need no shared file system (models are kept only by local runs)."""
    try:
        import ray
    except ImportError as exc:
        msg = "--ray needs the optional dependency ray: pip install 'xmodal[ray]'"
        raise RuntimeError(msg) from exc
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=max(cpus_per_task, len(cpu_sets(1)[0])), include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)(_ray_job)
    try:
        refs = {task.remote(spec, cpus_per_task): (spec, folder) for spec, folder in jobs}
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            spec, folder = refs[done[0]]
            try:
                result = ray.get(done[0])
            except Exception as exc:  # a lost worker or node: this job only
                result = _lost(spec, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            write_result(folder, result)
            on_done(spec, result)
    finally:
        if started_here:
            ray.shutdown()


def _ray_job(spec: dict, threads: int) -> dict:
    import torch

    import xmodal

    torch.set_num_threads(max(1, int(threads)))
    xmodal.set_num_threads(max(1, int(threads)))
    return run_job(spec, None, False)
