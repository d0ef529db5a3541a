"""`grainsweep` command line: one sub-command per module, dispatched here."""

from __future__ import annotations

import argparse
import sys

from core.format.config import ConfigError
from core.format.hierarchy import HierarchyError
from core.format.lock import LockedError
from core.format.provenance import DISK_FULL
from data_tools.convert_source import RejectsError
from data_tools.publish import DatasetExistsError, DiskFullError
from data_tools.sources.catalog import SourceError
from data_tools.wordnet_data import WordNetDataError
from data_tools.wordnet_tree import WnidError
from launch import cli_bench, cli_cluster, cli_convert, cli_derive, cli_finetune, cli_sweep, cli_train, cli_tree, spawn

COMMANDS = [cli_convert, cli_tree, cli_derive, cli_train, cli_finetune, cli_cluster, cli_sweep, cli_bench]

# errors that are the user's input, shown as one line instead of a traceback
USER_ERRORS = (ConfigError, HierarchyError, DatasetExistsError, FileNotFoundError, NotADirectoryError, SourceError,
               RejectsError, WnidError, WordNetDataError, LockedError, DiskFullError)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus those of heavy modules (ffcv, torch) that this command has imported."""
    extra = []
    loader = sys.modules.get("core.format.beton_file")
    if loader is not None:
        extra.append(loader.BetonError)
    return USER_ERRORS + tuple(extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grainsweep", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    spawn.die_with_launcher()  # a process of `--nproc N` (launch/spawn.py) goes when its launcher goes
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what `--nproc N` runs again in each process
    try:
        return int(args.run(args) or 0)
    except Exception as e:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            # writes are atomic (temporary name, then rename): what failed left no partial file behind
            line = (f"no space left writing {e.filename or 'a file'}: free space there (or write elsewhere), then "
                    "run the command again (a run continues with --resume)")
        elif isinstance(e, user_errors()):
            line = str(e)
        else:
            spawn.record_failure(" ".join(f"{type(e).__name__}: {e}".split())[:500])
            raise
        spawn.record_failure(line)
        print(f"grainsweep {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grainsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
