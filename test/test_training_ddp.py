"""The multi-process path: 2 processes, gloo backend, on CPU (what torchrun does on GPUs with nccl)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, fsdp: bool) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from pi0_ros.training.synthetic import make_dataset
    from pi0_ros.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig(dataset="synthetic", out=out, model="pi0", config="pi0_test", steps=3, batch_size=2, lr=1e-2,
                      warmup_steps=1, save_every=3, progress=False, device="cpu", fsdp=fsdp)
    trainer = Trainer(cfg, dataset=make_dataset(num_episodes=3, length=6, seed=2))
    trainer.run()
    state = trainer.export_model().state_dict()  # FSDP: gathered on rank 0 only
    flat = torch.cat([v.detach().float().reshape(-1) for v in state.values()]) if state else None
    torch.save({"flat": flat, "history": trainer.history}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


# FSDP over gloo aborted once in ~10 full-suite runs on the shared 2-core machine (SIGABRT in rank 0, not
# reproduced alone): it runs with `make test-slow`; DDP stays in the default suite.
@pytest.mark.parametrize("fsdp", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ddp", "fsdp"])
def test_two_gloo_processes_agree_on_the_weights(tmp_path, fsdp):
    out = str(tmp_path / "run")
    os.makedirs(out)
    mp.start_processes(_worker, args=(2, _free_port(), out, fsdp), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2))
    if not fsdp:
        assert torch.equal(r0["flat"], r1["flat"]), "ranks disagree on the weights"
    assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]]  # all-reduced
    assert os.path.isdir(os.path.join(out, "checkpoints", "step_000003"))

    from pi0_ros.model.checkpoint import EMBED_KEY
    from pi0_ros.model.policy import Pi0Policy

    policy = Pi0Policy.from_checkpoint(os.path.join(out, "last"), device="cpu")
    saved = torch.cat([v.float().reshape(-1) for k, v in policy.model.state_dict().items()])
    assert torch.equal(saved, r0["flat"]), "the checkpoint holds rank 0's (gathered) weights"
    assert EMBED_KEY in policy.model.state_dict()
