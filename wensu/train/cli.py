"""``wensu-train``: the Hydra app around :func:`wensu.train.run.train` (config: conf/train.yaml).

    wensu-train experiment=quickstart data.dataset_dir=data/ecoli
    wensu-train -m experiment=quickstart data.dataset_dir=data/ecoli optim.lr=1e-3,3e-3
    wensu-train experiment=wensu_1b_fsdp data.dataset_dir=data/x --cfg job

Bad input (unknown config key, wrong type, impossible value, broken dataset, unfitting
checkpoint, a changed setup on resume, a run dir that cannot be written, a model that cannot fit
in memory) is reported as one line ``error: <message>`` on stderr with exit status 2, before
training starts. ``WENSU_VERBOSE=1`` also prints the traceback behind it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wensu.train.errors import UsageError

EXIT_USAGE = 2


def _fail(error: BaseException) -> None:
    if os.environ.get("WENSU_VERBOSE", "") not in ("", "0"):
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {_one_line(error)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _os_error(error: OSError) -> str:
    """An unwritable/blocked path as one line (Hydra creates the run dir before the app)."""
    where = error.filename or "output path"
    cause = error.strerror or error
    return f"cannot write {where}: {cause} (is hydra.run.dir a writable directory?)"


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split())
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause):
        first = str(cause).splitlines()[0].strip()
        if first and first not in message:
            message = f"{message} ({first})"
    return message or type(error).__name__


def _single_console_log() -> None:
    """Lightning adds its own console handler to the ``lightning`` logger, which also propagates
    to the root handlers Hydra set up: drop Lightning's so every line prints once."""
    import lightning  # noqa: F401  (its import installs the handler)

    if logging.getLogger().handlers:
        logger = logging.getLogger("lightning")
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


@hydra.main(config_path="pkg://wensu.conf", config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    # torch and Lightning load only once a run starts: --help and config errors stay instant.
    from wensu.train.presets import check_preset_conflicts
    from wensu.train.run import train

    _single_console_log()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        check_preset_conflicts(list(hydra_cfg.overrides.task))
        settings = OmegaConf.to_container(cfg, resolve=True)
        summary = train(settings, run_dir)  # writes config.yaml once the run dir is checked
    except (UsageError, OmegaConfBaseException, ValueError) as error:
        _fail(error)
    except OSError as error:
        _fail(OSError(_os_error(error)))
    # The return value is what sweepers (e.g. Optuna) minimise.
    return summary["val_loss"] if summary else None


def main() -> None:
    """Console-script entry point (``wensu-train``)."""
    # Composition errors (unknown key or group option) then reach us unformatted, so they
    # print as one line too; errors inside a job are handled in `_app`.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _app()
    except (HydraException, OmegaConfBaseException) as error:
        _fail(error)
    except OSError as error:
        _fail(OSError(_os_error(error)))


if __name__ == "__main__":
    main()
