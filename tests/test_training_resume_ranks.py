"""Resuming with several ranks: only rank 0 saves states (into its own machine's job folder), so the
ranks of another machine find none; they must continue from rank 0's position, optimizer moments, LR
schedule and scaler instead of starting over at step 0 (review of issue 15's multi-machine path)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from backend.training.distributed import Ranks
from backend.training.state import Position, resume_from_main


def _rank(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        param = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([param], lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        pos = Position()
        if rank == 0:  # rank 0 found its saved state: two steps done
            for _ in range(2):
                param.grad = torch.full((3,), 0.5)
                opt.step()
                sched.step()
            pos = Position(step=2, epoch=1, batch=0)
        pos = resume_from_main(Ranks(2, rank), optimizer=opt, scheduler=sched, scaler=None, pos=pos)
        moments = opt.state_dict()["state"][0]
        out[rank] = ((pos.step, pos.epoch, pos.batch), moments["exp_avg"].tolist(), int(moments["step"]),
                     sched.last_epoch, opt.param_groups[0]["lr"])
    finally:
        dist.destroy_process_group()


def test_a_rank_without_a_saved_state_continues_from_rank_0s(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
        main, other = out[0], out[1]
    assert main[0] == other[0] == (2, 1, 0)
    assert other == main and main[2] == 2 and main[3] == 2
