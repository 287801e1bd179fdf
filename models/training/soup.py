"""A uniform model soup: the weights of several restarts of one first cycle, averaged.

Models fine-tuned from the same starting weights tend to lie in one basin of the loss, where
the average of their weights is itself a good model, often better than each of them, at one
model's inference cost (Wortsman et al. 2022, "Model soups", uniform soup). An ensemble
(``rescore --average-with``) averages outputs instead and costs one pass per member. Our
restarts (``--then-epochs``) all start from the same 130-epoch first cycle of each fold, so
every restart variant ever cross-validated is a soup ingredient.

Every floating-point tensor (weights and batch-norm running statistics) is averaged in
float32; integer buffers (batch-norm's batch counters) are taken from the first ingredient.
"""

from __future__ import annotations

from pathlib import Path

from .dataset import DatasetError


def restarted_from(run: Path) -> str:
    """The first-cycle weights a restart ``run`` (a ``run-then`` folder) started from: the
    ``model`` ultralytics recorded in its ``args.yaml``, resolved to an absolute path."""
    import yaml

    try:
        args = yaml.safe_load((run / "args.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{run}: no readable args.yaml ({exc})") from exc
    start = Path(str((args or {}).get("model", "")))
    return str(start if start.is_absolute() else (Path.cwd() / start).resolve())


def soup_weights(checkpoints: list[Path], out: Path) -> Path:
    """Average ``checkpoints`` (ultralytics ``.pt`` files of one architecture) into ``out``,
    an ultralytics checkpoint that exports like any other. Refused with one line
    (DatasetError) if their tensors do not match name for name and shape for shape."""
    import torch

    if len(checkpoints) < 2:
        raise DatasetError("a soup needs at least two sets of weights")
    first = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    model = _network(first)
    total = {k: v.clone() for k, v in model.state_dict().items()}
    for path in checkpoints[1:]:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        state = _network(ck).state_dict()
        if state.keys() != total.keys() or any(state[k].shape != total[k].shape for k in total):
            raise DatasetError(f"{path}: not the architecture of {checkpoints[0]}; weights cannot be averaged")
        for k, v in state.items():
            if v.is_floating_point():
                total[k] += v
    averaged = {k: v / len(checkpoints) if v.is_floating_point() else v for k, v in total.items()}
    model.load_state_dict(averaged)
    first.update(model=model.half(), ema=None, optimizer=None, soup=[str(p) for p in checkpoints])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(first, out)
    return out


def _network(checkpoint: dict):
    """The network a checkpoint exports (its EMA while training runs, else its model), in float32."""
    net = checkpoint.get("ema")
    return (net if net is not None else checkpoint["model"]).float()
