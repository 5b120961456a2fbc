"""``wensu-data``: list, fetch, verify and locate the built-in data sets.

wensu-data list                       # sets, sizes, licences, whether present
wensu-data list ss --files            # every file of a set (to place them by hand offline)
wensu-data fetch ss contacts          # into data_dir / $WENSU_DATA / the per-user cache
wensu-data fetch all --mirror http://host/wensu-data
wensu-data verify                     # SHA-256 of every present file
wensu-data path                       # the data directory in use
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wensu.datasets.fetch import FetchError, fetch_set, verify_set
from wensu.datasets.location import data_root, missing_files, offline, sample_root, sample_sets
from wensu.datasets.registry import load_registry


def _names(requested: list[str]) -> list[str]:
    known = load_registry()
    if not requested or requested == ["all"]:
        return sorted(known)
    unknown = [n for n in requested if n not in known]
    if unknown:
        names = ", ".join(sorted(known))
        raise SystemExit(f"wensu-data: unknown data set(s) {', '.join(unknown)}; known: {names}")
    return requested


def _list(args: argparse.Namespace, root: Path) -> None:
    registry = load_registry()
    covered = sample_sets()
    if args.files:
        for name in _names(args.names):
            for f in registry[name].files:
                source = f.url or "derived (mirror or by hand)"
                print(f"{name}\t{f.path}\t{f.size}\t{f.sha256}\t{source}")
        return
    print(f"data directory: {root}")
    for name in _names(args.names):
        data = registry[name]
        state = "present" if not missing_files(data, root) else "missing"
        sample = " (embedded sample available)" if name in covered else ""
        print(
            f"{name:<14} {state:<8} {data.size / 1e6:7.1f} MB  {len(data.files):4d} files  "
            f"{data.licence}{sample}\n{'':<15}{data.description}\n{'':<15}source: {data.source}"
        )


def _fetch(args: argparse.Namespace, root: Path) -> int:
    if offline():
        raise SystemExit("wensu-data: $WENSU_OFFLINE is set; unset it to fetch")
    for name in _names(args.names):
        try:
            counts = fetch_set(
                name,
                root,
                mirror=args.mirror,
                progress=not args.quiet,
                report=None if args.quiet else print,
            )
        except FetchError as error:
            print(f"wensu-data: fetch {name}: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"wensu-data: fetch {name}: {root}: {error.strerror or error}", file=sys.stderr)
            return 1
        print(f"{name}: {counts['fetched']} fetched, {counts['present']} already present in {root}")
    return 0


def _verify(args: argparse.Namespace, root: Path) -> int:
    status = 0
    for name in _names(args.names):
        data = load_registry()[name]
        if not any((root / f.path).exists() for f in data.files):
            print(f"{name}: not present")
            continue
        bad = verify_set(name, root)
        print(f"{name}: {'ok' if not bad else f'{len(bad)} missing or corrupt'}")
        for path in bad:
            print(f"  {root / path}")
        status = status or (1 if bad else 0)
    return status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="wensu-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data directory (default: $WENSU_DATA, else the per-user cache)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="sets, sizes, licences, presence")
    p.add_argument("names", nargs="*")
    p.add_argument(
        "--files", action="store_true", help="one line per file: set, path, bytes, sha256, source"
    )
    p = sub.add_parser("fetch", help="download sets into the data directory")
    p.add_argument("names", nargs="+", help="set names, or 'all'")
    p.add_argument(
        "--mirror",
        default=None,
        help="base URL of a mirror of the data layout ($WENSU_DATA_MIRROR)",
    )
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("verify", help="check SHA-256 of present files")
    p.add_argument("names", nargs="*")
    sub.add_parser("path", help="print the data directory (and the embedded sample's)")
    args = parser.parse_args(argv)
    root = data_root(args.data_dir)
    if args.command == "list":
        _list(args, root)
    elif args.command == "fetch":
        sys.exit(_fetch(args, root))
    elif args.command == "verify":
        sys.exit(_verify(args, root))
    else:
        print(root)
        print(f"embedded sample: {sample_root()}", file=sys.stderr)


if __name__ == "__main__":
    main()
