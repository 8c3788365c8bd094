"""Which executor a run gets, decided from its settings, and the checks that must pass before the budget starts."""

from __future__ import annotations

from pathlib import Path

from qtt_cli.execution.base import Executor, ExecutorError, WorkerSpec

__all__ = ["check_executor", "make_executor", "resolve_devices"]

RAY_MISSING = ("--executor ray needs Ray, an optional extra: pip install 'qtt-cli[ray]' "
               "(or pip install 'ray>=2.9')")  # fmt: skip


def resolve_devices(devices: str | None) -> list[str]:
    """GPU indices of ``--devices`` (``auto``: every visible GPU); refuses indices that do not exist."""
    if not devices:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == "auto":
        if count == 0:
            raise ExecutorError("--devices auto: no CUDA GPU is visible; use --workers N for CPU workers")
        return [str(i) for i in range(count)]
    wanted = [d.strip() for d in devices.split(",") if d.strip()]
    missing = [d for d in wanted if int(d) >= count]
    if missing:
        raise ExecutorError(f"--devices {devices}: GPU(s) {', '.join(missing)} not visible ({count} GPU(s) visible)")
    if len(set(wanted)) != len(wanted):
        raise ExecutorError(f"--devices {devices}: each GPU at most once")
    return wanted


def kind(settings) -> str:
    """``inprocess``, ``local`` or ``ray`` for these settings."""
    if settings.executor != "auto":
        return settings.executor
    return "local" if settings.workers > 1 or settings.devices else "inprocess"


def check_executor(settings) -> None:
    """Everything about the executor that can be wrong, checked before anything is written or the budget starts."""
    which = kind(settings)
    if which == "ray":
        import importlib.util

        try:
            missing = importlib.util.find_spec("ray") is None  # found, not imported: Ray loads in seconds
        except (ImportError, ValueError):
            missing = True
        if missing:
            raise ExecutorError(RAY_MISSING)
    if settings.devices:
        resolve_devices(settings.devices)


def make_executor(settings, run_root: Path, worker, max_input_size: int | None, on_event=None) -> Executor:
    """The executor of ``settings`` (not started). ``worker`` is the tuner's own ``FinetuneWorker`` (the
    in-process executor trains on it); the other executors build theirs from a :class:`WorkerSpec`."""
    which = kind(settings)
    if which == "inprocess":
        from qtt_cli.execution.inprocess import InProcessExecutor

        return InProcessExecutor(worker)
    spec = WorkerSpec(
        run_dir=str(Path(run_root).resolve()),
        weights=str(settings.weights),
        max_epochs=settings.max_epochs,
        max_input_size=max_input_size,
        seed=settings.seed,
        num_workers=settings.num_workers,
        device=settings.device,
    )
    devices = resolve_devices(settings.devices)
    if which == "local":
        from qtt_cli.execution.local import LocalProcessExecutor, cpu_slots, gpu_slots

        slots = gpu_slots(devices) if devices else cpu_slots(settings.workers)
        return LocalProcessExecutor(spec, slots, on_event=on_event)
    from qtt_cli.execution.ray_executor import RayExecutor

    if settings.storage:
        spec = WorkerSpec(**{**spec.to_dict(), "run_dir": str(settings.storage)})
    return RayExecutor(spec, workers=len(devices) or settings.workers, gpus=bool(devices),
                       address=settings.address, on_event=on_event)  # fmt: skip
