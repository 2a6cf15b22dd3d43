"""The engramsim command line. It only parses, loads, calls one library function and renders.

Commands live in engramsim/commands/<name>.py, each exporting a click command named `command`.
They are imported lazily, so `engramsim simulate` never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from engramsim.errors import Interrupted, UserError

COMMANDS = {
    "simulate": "Simulate an inference server with Engram tables in each placement.",
    "memory": "Per-rank HBM plan of each placement, as an engine's startup log shows it.",
    "presets": "List hardware, model, engine and workload presets with their key numbers.",
    "paper": "Check the simulator against the Engram paper's Table 4, per mechanism (--fit refits each baseline's step cost).",
    "onebox": "Check the one-box model against public measurements (Apple, Spark, workstations).",
    "profile": "Measure this machine's Engram memory paths with real kernels.",
    "calibrate": "Turn a measured profile into a hardware model for `simulate --hw`.",
    "trace": "Hash real text into an Engram address stream and report its statistics.",
    "cache": "Hot-row cache hit rates against capacity for a real address stream.",
    "validate": "Run a real Engram model here and compare it with the simulator's prediction.",
    "sweep": "Run a grid of simulate configs (local processes or Ray) into CSV/JSONL/Parquet rows.",
    "plan": "Rank servers, layouts and tiers by $ per million output tokens under latency SLOs.",
    "checks": "Published measurements (engine PRs, issues) against the simulator's predictions.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if importlib.util.find_spec(f"engramsim.commands.{name}")]

    def get_command(self, ctx, name):
        if name not in COMMANDS or not importlib.util.find_spec(f"engramsim.commands.{name}"):
            return None
        return importlib.import_module(f"engramsim.commands.{name}").command

    def invoke(self, ctx):
        # click would turn Ctrl-C into Abort after printing a blank line; keep it one line.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="engramsim")
def cli():
    """engramsim: where should an Engram table live on this server, and what will it cost?

    \b
    Start with:
      engramsim simulate         every placement, default model and server
      engramsim presets          what can be simulated
      engramsim profile --quick  measure this machine
    """


def main(argv=None):
    """Entry point: a UserError becomes one line on stderr and exit status 2."""
    try:
        rc = cli.main(args=argv, standalone_mode=False, prog_name="engramsim")
        sys.exit(rc if isinstance(rc, int) else 0)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Interrupted as e:
        click.echo(str(e), err=True)
        sys.exit(130)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
