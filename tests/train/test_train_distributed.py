"""DDP on CPU: two gloo processes see disjoint records and finish with identical weights.

FSDP: Lightning refuses FSDP without CUDA ("The strategy `fsdp` requires a GPU accelerator"),
so on CPU its config is checked (tests/train/test_train_config.py) and refused in one line.
"""

from __future__ import annotations

import json

import torch
from train_helpers import TINY_RUN, run_train, shared_dataset

from wensu.data.dataset import ShardedDataset

STEPS = 4


def test_ddp_two_processes_split_the_data_and_agree(tmp_path, tmp_path_factory):
    dataset = shared_dataset(tmp_path_factory)
    run_dir = tmp_path / "ddp"
    result = run_train(
        [
            f"data.dataset_dir={dataset}",
            f"hydra.run.dir={run_dir}",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            f"trainer.max_steps={STEPS}",
            "trainer.val_check_interval=4",
            "checkpoint.every_n_train_steps=4",
            "logging.sample_ids=true",
            *TINY_RUN,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ids = {}
    for rank in (0, 1):
        lines = (run_dir / "samples" / f"rank{rank}.tsv").read_text().splitlines()
        assert [int(line.split("\t")[0]) for line in lines] == list(range(1, STEPS + 1))
        ids[rank] = [i for line in lines for i in line.split("\t")[3].split(",")]
    assert ids[0] and ids[1]
    assert not set(ids[0]) & set(ids[1]), "ranks trained on the same record"
    assert len(set(ids[0])) == len(ids[0]) and len(set(ids[1])) == len(ids[1])
    assert set(ids[0]) | set(ids[1]) <= set(ShardedDataset(dataset, "train").ids)
    digests = [json.loads((run_dir / "samples" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0]["world_size"] == 2 and digests[0]["global_step"] == STEPS
    assert digests[0]["weights_sha256"] == digests[1]["weights_sha256"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == STEPS
    # tokens_seen sums both ranks: the sample logs give each rank's records, whose tokens
    # (crop 128 = at most 126 residues + 2 specials) add up to the count.
    records = ShardedDataset(dataset, "train")
    lengths = dict(zip(records.ids, records.lengths.tolist(), strict=True))
    expected = sum(min(lengths[i], 126) + 2 for rank in (0, 1) for i in ids[rank])
    assert summary["tokens_seen"] == expected
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == STEPS
