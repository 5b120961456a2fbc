"""A checkout shadowing the install (cwd first on sys.path, as in Ray workers) still imports
``wensu.preprocessing`` and ``wensu.conf`` — from the checkout's own folders."""

import subprocess
import sys
from pathlib import Path

from wensu.source_checkout import SourceCheckoutFinder

ROOT = Path(__file__).resolve().parent.parent


def test_finder_maps_the_two_folders_of_the_checkout():
    finder = SourceCheckoutFinder(ROOT)  # the tests' checkout (wensu may be the installed one)
    spec = finder.find_spec("wensu.preprocessing")
    assert Path(spec.origin) == ROOT / "preprocessing" / "__init__.py"
    assert spec.name == "wensu.preprocessing"
    assert Path(finder.find_spec("wensu.conf").origin) == ROOT / "conf" / "__init__.py"
    assert finder.find_spec("wensu.model") is None  # everything else is found as usual


def test_checkout_first_on_path_imports_its_own_preprocessing():
    # -S skips site (and any editable-install finder); site-packages is appended by hand after
    # the checkout, like a Ray worker that inserts the driver's working directory.
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]]; sys.path += sys.argv[2:];"
        "import wensu.preprocessing.errors as e, wensu.conf as c;"
        "print(e.__file__); print(c.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(ROOT), *site],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(out[0]) == ROOT / "preprocessing" / "errors.py"
    assert Path(out[1]) == ROOT / "conf" / "__init__.py"
