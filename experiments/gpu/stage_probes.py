"""Stage d (probes): SS3 linear probe on CB513 and the contact probe for the pretrained model.

The probes are wensu-eval's own (``wensu.probes.cli.runner``), run on the checkpoint the
pretrain stage wrote, next to its random-init twin (and one-hot for SS), with the encoder
features computed on the GPU (the probe heads and the contact regression run on the CPU, as in
``wensu-eval``). The probe data comes from the carried folder: its files are given to the probes
as their data directory directly, because ``wensu-eval``'s data locator wants the whole built-in
contact set (19 MB, 157 files) where the contact probe here reads two of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common import StageRecord, compose, pyplot, save_figure

MODEL_COLUMNS = ("model", "random-init", "one-hot")


def eval_overrides(spec: dict, checkpoint: str, output: Path) -> list[str]:
    dry = spec["dry_run"]
    out = [
        f"checkpoint={checkpoint}",
        "probe=[ss,contacts]",
        f"output={output}",
        f"data_dir={spec['data_dir']}",
        "fetch=false",
        f"device={spec['device']}",
        f"cpu_threads={1 if dry else min(os.cpu_count() or 1, 8)}",
        "progress=false",
        "resume=false",
        "probe.ss.heads=[linear]",
        "probe.ss.test_sets=[cb513]",
        f"probe.ss.max_train={spec['ss_max_train']}",
        f"probe.ss.max_valid={spec['ss_max_valid']}",
        f"probe.ss.training.max_epochs={spec['ss_max_epochs']}",
        "probe.contacts.train_set=cath103",
        f"probe.contacts.train_size={spec['contacts_train_size']}",
        f"probe.contacts.test_sets=[{','.join(spec['contacts_test_sets'])}]",
        f"probe.contacts.test_limit={spec['contacts_test_limit'] or 'null'}",
        "probe.contacts.test_select=smallest" if dry else "probe.contacts.test_select=first",
        "probe.contacts.figure_examples=0",
    ]
    return out


def table(rows: list[dict], wanted) -> dict:
    """{task metric [head]: {model, random-init, one-hot}} for the rows that ``wanted`` keeps."""
    out = {}
    for row in rows:
        if wanted(row):
            name = " ".join(p for p in (row["task"], row["metric"], row.get("head", "")) if p)
            out[name] = {k: row["values"][k] for k in MODEL_COLUMNS if k in row["values"]}
    return out


def plot(results: dict, path) -> str:
    plt = pyplot()
    names = list(results)
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, column in enumerate(MODEL_COLUMNS):
        values = [results[n].get(column, 0) for n in names]
        axis.bar([j + i * width for j in range(len(names))], values, width, label=column)
    axis.set_xticks([j + width for j in range(len(names))], names, fontsize=7, rotation=15)
    axis.set_ylabel("Q3 / precision")
    axis.legend()
    return save_figure(figure, path)


def run(spec: dict, record: StageRecord) -> None:
    from wensu.probes.cli import probe_settings, runner
    from wensu.probes.common.protein_context import build_protein_context

    try:
        checkpoint = json.loads(Path(spec["pretrain_json"]).read_text())["checkpoint"]
    except (OSError, KeyError, ValueError):
        raise RuntimeError("no pretrained checkpoint: the pretrain stage did not finish") from None
    output = Path(spec["scratch"]) / "probes"
    overrides = eval_overrides(spec, checkpoint, output)
    cfg, _ = compose("eval", overrides)
    record.update(command="wensu-eval " + " ".join(overrides), checkpoint=checkpoint, probes={})
    ctx, run_settings = build_protein_context(cfg, output)
    ctx.data_dir = Path(spec["data_dir"])
    record["run_settings"] = run_settings
    for name in ("ss", "contacts"):
        try:
            result = runner(name)(ctx, probe_settings(cfg, name, "full"))
            record["probes"][name] = {"status": "ok", "rows": result.rows, "notes": result.notes}
        except Exception as error:  # noqa: BLE001 - the other probe still runs
            record["probes"][name] = {"status": "error", "detail": str(error)[:400]}
        record.flush()
    rows = [r for p in record["probes"].values() for r in p.get("rows", [])]
    record["table"] = table(
        rows,
        lambda r: (
            (r["metric"] in ("Q3", "Q8") and "CB513" in r["task"])
            or (r["task"].startswith("contacts") and r["metric"].startswith("long"))
        ),
    )
    errors = [f"{n}: {p['detail']}" for n, p in record["probes"].items() if "detail" in p]
    if errors:
        record["error"] = "; ".join(errors)
    if record["table"]:
        record["figure"] = plot(record["table"], spec["figure_dir"] / "probes.png")
