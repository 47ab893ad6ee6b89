"""dataset.path and dataset.reg_path: scanned as the worker scans them (backend.dataset.scan, which reads
folder listings and captions, never image pixels), and a batch that fits one epoch."""

from __future__ import annotations

from typing import Any

from backend.errors import DatasetError
from backend.preflight.inputs import Problem


def dataset_problems(cfg: Any) -> list[Problem]:
    from backend.dataset.scan import scan_dataset

    ds, batch = cfg.dataset, cfg.training.batch_size
    problems: list[Problem] = []
    try:
        scan = scan_dataset(ds.path, caption_extension=ds.caption_extension, default_repeats=ds.default_repeats)
    except DatasetError as err:
        problems.append(("dataset.path", str(err)))
        scan = None
    if ds.reg_path:
        try:
            scan_dataset(ds.reg_path, caption_extension=ds.caption_extension, default_repeats=ds.reg_repeats,
                         is_reg=True)
        except DatasetError as err:
            problems.append(("dataset.reg_path", str(err)))
    if scan is not None and batch > scan.images_per_epoch:
        problems.append(("training.batch_size", f"{batch} is larger than the dataset: {scan.num_images} images × "
                                                f"repeats = {scan.images_per_epoch} per epoch. Lower the batch "
                                                "size or add images/repeats."))
    return problems
