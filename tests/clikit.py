"""Run the CLI in-process: `engramsim.cli.main(argv)` with stdout and stderr captured.

Much faster than a subprocess (no interpreter start, no re-import), and it exercises the same
code: main() turns UserError into one line and exit 2 exactly as the console script does.
tests/test_cli.py keeps one subprocess test of `python cli.py --help` for the entry point.
"""

import io
from contextlib import redirect_stderr, redirect_stdout
from typing import NamedTuple

from engramsim.cli import main


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())
