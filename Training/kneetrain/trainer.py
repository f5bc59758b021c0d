"""The training loop: one CPU, one GPU or many (DDP), checkpoints every epoch, exact resume.

Per step: ``pipeline.prepare_input`` (the inference standardisation) -> network ->
:class:`~kneetrain.losses.LandmarkLoss` on every stack -> backward (gradient scaling
under float16 autocast on CUDA) -> gradient-norm clipping -> AdamW -> learning rate
schedule (linear warm-up, then cosine decay, per step).

Per epoch: validation with the inference decoder (``HeatmapCodec.decode``), errors in
input px, image px and mm, summed over ranks; rank 0 appends ``metrics.csv``, writes
TensorBoard scalars, and saves ``checkpoints/last.pt`` (and ``best.pt`` when the
validation error improves).

Reproducibility: the network is initialised from the run seed, every sample's
augmentation from (seed, epoch, index), the shuffling from (seed, epoch) through
``DistributedSampler``; checkpoints carry the RNG states. On the CPU, training two
epochs or one epoch and a resume gives identical weights.

Run folder::

    RUN/config.yaml  run.json  split.json  metrics.csv  tensorboard/  checkpoints/{last,best}.pt
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from KneeAlignmentLib.datasets import DatasetError, find_cases
from KneeAlignmentLib.networks import build_network
from KneeAlignmentLib.pipeline import prepare_input
from KneeAlignmentLib.sharding import Shard

from . import __version__
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig
from .data import (SPLITS, ConcatSource, FolderSource, PhantomSource, make_split, parse_data_spec, read_split,
                   split_cases, validate_cases, write_split)
from .distributed import all_sum, barrier, join_training_group
from .losses import LandmarkLoss
from .views import StageDataset, StageSetup, stage_setup

__all__ = ["Trainer", "warmup_cosine"]

_CSV_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_coord", "train_heatmap", "train_error_in_px",
                "val_loss", "val_error_in_px", "val_error_px", "val_error_mm", "val_max_landmark_mm",
                "ref_error_sd_mm", "seconds")


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """Learning-rate factor per step: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class Trainer:
    """Train one stage.

    Args:
        cfg: the training config.
        data: data specifications (folders and/or "phantom:<kind>"; at most one folder).
        out: the run folder.
        device: "auto", "cpu", "cuda", "cuda:N" (under torchrun: cuda:LOCAL_RANK).
        resume: continue from ``out/checkpoints/last.pt`` (config and data must match).
        split_file: use this split.json instead of making one (folder data).
        progress: show tqdm progress bars (rank 0).

    Raises:
        ConfigError, DatasetError, CheckpointError: unusable config, data or checkpoint.
    """

    def __init__(self, cfg: TrainConfig, data: Sequence[str], out: str | Path, *, device: str = "auto",
                 resume: bool = False, split_file: str | Path | None = None, progress: bool = True,
                 init: str | Path | None = None) -> None:
        self.out = Path(out)
        self.shard = Shard.from_env()
        self.device = self.shard.device(device)
        self.made_group = join_training_group(self.shard, self.device)
        self.progress = progress and self.shard.is_main
        state = None
        if resume:
            state = load_checkpoint(self.out / "checkpoints" / "last.pt")
            if state["config"] != cfg.to_dict():
                diff = sorted(k for k, v in cfg.to_dict().items() if state["config"].get(k) != v)
                raise ConfigError(f"--resume: the config differs from the checkpoint's in {diff}")
            if state["run"]["data"] != list(data):
                raise DatasetError(f"--resume: the data {list(data)} differ from the run's {state['run']['data']}")
        elif (self.out / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        self.cfg, self.data_specs = cfg, list(data)
        self.setup: StageSetup = stage_setup(cfg)
        train_source, val_source, description = self._sources(split_file if not resume else self.out / "split.json")
        self.train_set = StageDataset(train_source, self.setup, cfg, train=True, stream=0)
        self.val_set = StageDataset(val_source, self.setup, cfg, train=False, stream=1)
        self.run_info = {"data": self.data_specs, "data_description": description, "kneetrain_version": __version__,
                         "stage": cfg.stage, "schema": cfg.schema, "preset": self.setup.preset,
                         "landmark_names": list(self.setup.landmark_names),
                         "network": self.setup.network.to_dict(), "codec": _plain(self.setup.codec),
                         "frame": _plain(self.setup.frame_spec), "world_size": self.shard.world}

        o = cfg.optim
        torch.manual_seed(cfg.seed)
        network = build_network(self.setup.network).to(self.device)
        if init is not None and state is None:  # a resumed run restores its own weights
            self.run_info["init"] = _init_from_bundle(network, init, cfg, self.setup)
        if self.shard.distributed and self.device.type == "cuda" and cfg.sync_batchnorm:
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        self.network = network
        self.model = (DistributedDataParallel(network, device_ids=[self.device] if self.device.type == "cuda"
                                              else None) if self.shard.distributed else network)
        decay = [p for p in network.parameters() if p.ndim > 1]
        no_decay = [p for p in network.parameters() if p.ndim <= 1]  # biases and norm scales
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=o.lr)
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.shard.world, rank=self.shard.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=False)
        self.batch_size = o.batch_size
        self.steps_per_epoch = max(1, len(self.sampler) // self.batch_size)
        total = o.epochs * self.steps_per_epoch
        warmup = min(total, round(o.warmup_epochs * self.steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total, warmup, o.min_lr_ratio))
        self.amp = o.amp and self.device.type == "cuda"
        self.amp_dtype = getattr(torch, o.amp_dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.criterion = LandmarkLoss(self.setup.codec, cfg.loss.wing_w, cfg.loss.wing_eps, cfg.loss.heatmap_weight,
                                      cfg.loss.border_sigmas)
        self.start_epoch, self.best = 0, {"metric": "", "value": math.inf, "epoch": -1}
        if state is not None:
            self._restore(state)
        elif self.shard.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
            (self.out / "run.json").write_text(json.dumps(self.run_info, indent=2) + "\n", encoding="utf-8")
        barrier(self.shard)

    # -- data ------------------------------------------------------------------------------

    def _sources(self, split_file: Path | None):
        cfg = self.cfg
        kind = cfg.schema  # None: the global stage takes pre-op and post-op annotations
        train, val, described = [], [], []
        folders = [s for s in self.data_specs if parse_data_spec(s)[0] == "folder"]
        if not self.data_specs or len(folders) > 1:
            raise DatasetError("give one dataset folder and/or phantom:<kind> sources (--data), at most one folder")
        for spec in self.data_specs:
            what, value = parse_data_spec(spec)
            if what == "phantom":
                if kind is not None and value != kind:
                    raise DatasetError(f"--data {spec}: the config's schema is {kind}")
                train.append(PhantomSource(value, cfg.seed, 0, cfg.data.phantom, fresh_each_epoch=True))
                val.append(PhantomSource(value, cfg.seed, 1, cfg.data.phantom, fresh_each_epoch=False))
                p = cfg.data.phantom
                described.append(f"on-the-fly phantom radiographs ({value}, {p.size[0]}x{p.size[1]} px): "
                                 f"{p.train_cases} new training cases per epoch, {p.val_cases} validation cases")
                continue
            cases = find_cases(value)
            validate_cases(cases, kind, progress=self._bar("checking data"))
            if split_file is not None:
                split = read_split(Path(split_file))
            else:
                s = cfg.data.split
                split = make_split([c.case_id for c in cases], s.val, s.test, s.seed)
            subsets = split_cases(cases, split)
            if not subsets["train"] or not subsets["val"]:
                raise DatasetError(f"{value}: the split leaves no training or no validation cases "
                                   f"({len(cases)} cases); add cases or change data.split")
            if self.shard.is_main:
                s = cfg.data.split
                write_split(self.out / "split.json", split, seed=s.seed, val=s.val, test=s.test)
            train.append(FolderSource(subsets["train"], kind))
            val.append(FolderSource(subsets["val"], kind))
            described.append(f"annotated folder {Path(value).name!r}: "
                             + ", ".join(f"{len(subsets[n])} {n}" for n in SPLITS) + " cases")
        return ConcatSource(train), ConcatSource(val), "; ".join(described)

    def _bar(self, desc: str, total: int | None = None):
        from tqdm.auto import tqdm

        return lambda iterable: tqdm(iterable, desc=desc, total=total, disable=not self.progress, leave=False,
                                     dynamic_ncols=True)

    def _loader(self, dataset, sampler, train: bool) -> DataLoader:
        n = len(sampler)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.cfg.data.num_workers,
                          drop_last=train and n >= self.batch_size, pin_memory=self.device.type == "cuda")

    # -- loop ------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> dict[str, float]:
        """Train to ``optim.epochs`` (or only until epoch ``stop_after``, counted from 1).

        Returns the last epoch's metrics.
        """
        last = self.cfg.optim.epochs if stop_after is None else min(stop_after, self.cfg.optim.epochs)
        writer = self._writer()
        metrics: dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, last):
                start = time.perf_counter()
                train = self._train_epoch(epoch)
                val = self._validate()
                metrics = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                           "lr": self.optimizer.param_groups[0]["lr"], **train, **val,
                           "seconds": time.perf_counter() - start}
                if self.shard.is_main:
                    self._log(metrics, writer)
                    self._save(epoch, val)
                barrier(self.shard)
        finally:
            if writer is not None:
                writer.close()
        return metrics

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.model.train()
        sums = torch.zeros(5, dtype=torch.float64)  # loss, coord, heatmap, error (hm px) x batch, count
        loader = self._loader(self.train_set, self.sampler, train=True)
        bar = self._bar(f"epoch {epoch + 1}/{self.cfg.optim.epochs}", total=len(loader))(loader)
        for batch in bar:
            images, points, visible = self._inputs(batch)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                heatmaps = self.model(images)
            loss, parts = self.criterion(heatmaps.float(), points, visible)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            n = images.shape[0]
            sums += torch.tensor([loss.item() * n, parts["coord"].item() * n, parts["heatmap"].item() * n,
                                  parts["error_hm"].item() * n, n], dtype=torch.float64)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        total = all_sum(sums, self.shard, self.device)
        n = total[4].clamp_min(1)
        stride = float(np.mean(self.setup.codec.stride))
        return {"train_loss": float(total[0] / n), "train_coord": float(total[1] / n),
                "train_heatmap": float(total[2] / n), "train_error_in_px": float(total[3] / n) * stride}

    def _inputs(self, batch):
        device = self.device
        images = prepare_input(batch["image"][:, 0].to(device, non_blocking=True))
        return images, batch["points"].to(device), batch["visible"].to(device)

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        self.model.eval()
        k = len(self.setup.landmark_names)
        sampler = range(self.shard.rank, len(self.val_set), self.shard.world)  # every case once, no padding
        # per landmark: error sums in input px, image px, mm, counts (all, with mm); squared mm components
        per = torch.zeros(6, k, dtype=torch.float64)
        loss_sum = torch.zeros(2, dtype=torch.float64)
        for batch in self._bar("validation", total=math.ceil(len(sampler) / self.batch_size))(
                self._loader(self.val_set, sampler, train=False)):
            images, points, visible = self._inputs(batch)
            heatmaps = self.model(images).float()
            loss, _ = self.criterion(heatmaps, points, visible)
            loss_sum += torch.tensor([loss.item() * images.shape[0], images.shape[0]], dtype=torch.float64)
            pred, _ = self.setup.codec.decode(heatmaps[:, -1])
            diff_in = (pred.double() - points.double()).cpu()  # (B, K, 2) input px
            diff_px = torch.einsum("bij,bkj->bki", batch["to_image"], diff_in)  # image px
            spacing = batch["spacing"]  # (B, 2) row_mm, col_mm
            diff_mm = diff_px * spacing.flip(-1)[:, None, :]
            ok = visible.cpu()
            has_mm = ok & torch.isfinite(spacing).all(dim=-1)[:, None]
            zero = torch.zeros((), dtype=torch.float64)
            per[0] += torch.where(ok, diff_in.norm(dim=-1), zero).sum(0)
            per[1] += torch.where(ok, diff_px.norm(dim=-1), zero).sum(0)
            per[2] += torch.where(has_mm, diff_mm.norm(dim=-1), zero).sum(0)
            per[3] += ok.sum(0)
            per[4] += has_mm.sum(0)
            per[5] += torch.where(has_mm, (diff_mm**2).sum(-1), zero).sum(0)
        per = all_sum(per, self.shard, self.device)
        loss_sum = all_sum(loss_sum, self.shard, self.device)
        count, count_mm = per[3].sum().clamp_min(1), per[4].sum()
        mm_per_landmark = per[2] / per[4].clamp_min(1)
        nan = math.nan
        return {
            "val_loss": float(loss_sum[0] / loss_sum[1].clamp_min(1)),
            "val_error_in_px": float(per[0].sum() / count),
            "val_error_px": float(per[1].sum() / count),
            "val_error_mm": float(per[2].sum() / count_mm) if count_mm > 0 else nan,
            "val_max_landmark_mm": float(mm_per_landmark[per[4] > 0].max()) if count_mm > 0 else nan,
            # per-axis sd of the error (sqrt of the mean squared component), the local stage's jitter
            "ref_error_sd_mm": float(torch.sqrt(per[5].sum() / (2 * count_mm))) if count_mm > 0 else nan,
        }

    # -- output -----------------------------------------------------------------------------

    def _writer(self):
        if not self.shard.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.start_epoch + 1)

    def _log(self, metrics: dict[str, float], writer) -> None:
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as stream:
            out = csv.DictWriter(stream, fieldnames=_CSV_COLUMNS)
            if new:
                out.writeheader()
            out.writerow({c: _fmt(metrics.get(c, math.nan)) for c in _CSV_COLUMNS})
        for key, value in metrics.items():
            if key not in ("epoch", "step") and math.isfinite(value):
                group = "val" if key.startswith(("val_", "ref_")) else "train" if key.startswith("train_") else "misc"
                writer.add_scalar(f"{group}/{key}", value, int(metrics["epoch"]))
        writer.flush()
        shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("train_loss", "val_loss", "val_error_px", "val_error_mm")
                          if math.isfinite(metrics.get(k, math.nan)))
        print(f"epoch {int(metrics['epoch'])}/{self.cfg.optim.epochs}: {shown} ({metrics['seconds']:.0f} s)",
              flush=True)

    def _save(self, epoch: int, val: dict[str, float]) -> None:
        metric = "val_error_mm" if math.isfinite(val["val_error_mm"]) else "val_error_px"
        improved = val[metric] < self.best["value"] or self.best["metric"] != metric
        if improved:
            self.best = {"metric": metric, "value": float(val[metric]), "epoch": epoch + 1}
        state = {
            "epoch": epoch, "model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "best": dict(self.best), "metrics": {k: float(v) for k, v in val.items()},
            "config": self.cfg.to_dict(), "run": self.run_info,
        }
        last = save_checkpoint(self.out / "checkpoints" / "last.pt", state)
        if improved:
            shutil.copyfile(last, self.out / "checkpoints" / "best.pt")

    def _restore(self, state: dict) -> None:
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.start_epoch, self.best = int(state["epoch"]) + 1, dict(state["best"])
        if self.shard.is_main:  # drop log rows of epochs that are about to be redone
            path = self.out / "metrics.csv"
            if path.exists():
                with open(path, newline="", encoding="utf-8") as stream:
                    rows = [r for r in csv.DictReader(stream) if int(r["epoch"]) <= self.start_epoch]
                with open(path, "w", newline="", encoding="utf-8") as stream:
                    out = csv.DictWriter(stream, fieldnames=_CSV_COLUMNS)
                    out.writeheader()
                    out.writerows(rows)

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        Shard.leave(self.made_group)


def _init_from_bundle(network: torch.nn.Module, bundle: str | Path, cfg: TrainConfig, setup: StageSetup) -> str:
    """Copy a verified bundle's weights into ``network``; the bundle must be of this stage,
    schema and architecture with the same landmarks. Returns its model id."""
    from KneeAlignmentLib.bundle.format import load_bundle

    loaded = load_bundle(bundle, expected_stage=cfg.stage, expected_schema=cfg.schema)
    meta = loaded.metadata
    if meta.network.to_dict() != setup.network.to_dict() or tuple(meta.landmark_names) != tuple(
            setup.landmark_names):
        raise ConfigError(f"--init {bundle}: its network or landmarks differ from this config's "
                          f"({meta.network.to_dict()} vs {setup.network.to_dict()})")
    network.load_state_dict(loaded.network.state_dict())
    return meta.model_id


def _fmt(value: float) -> str:
    return "" if isinstance(value, float) and not math.isfinite(value) else f"{value:.6g}"


def _plain(obj):
    """A dataclass (codec, frame spec) as JSON values, or None."""
    return None if obj is None else json.loads(json.dumps(dataclasses.asdict(obj)))
