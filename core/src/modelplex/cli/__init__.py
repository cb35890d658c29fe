"""The ``modelplex`` command: the click group :data:`cli`, and :func:`main`, the entry point.

Each subcommand lives in a module of this package (``chat``, ``models``, ``providers``,
``structured``, ``cache``, ``logs``, ``config``, ``usage``), which imports nothing from here; this
module only assembles them, and plugins add theirs through the ``register_commands`` hook.
Errors print one line and exit with status 1 (a traceback only with ``--debug``); Ctrl-C
exits with 130. Heavy modules are imported inside the command that needs them.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence

import click

from modelplex import interrupt
from modelplex.__about__ import __version__
from modelplex.cli.batch import batch
from modelplex.cli.batch_jobs import cancel_command, fetch_command, status_command
from modelplex.cli.cache import cache
from modelplex.cli.chat import chat
from modelplex.cli.config import config_group, stats_command
from modelplex.cli.logs import logs
from modelplex.cli.mcp import mcp_group
from modelplex.cli.models import models
from modelplex.cli.providers import plugins, providers
from modelplex.cli.structured import templates
from modelplex.cli.usage import usage
from modelplex.errors import ModelplexError, redact

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelplex")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """modelplex: talk to any language model through one command."""


for _command in (chat, models, providers, plugins, templates, cache, logs, config_group,
                 stats_command, usage, mcp_group):
    cli.add_command(_command)
cli.add_command(batch)  # modelplex batch (modelplex.cli.batch)
for _command in (status_command, fetch_command, cancel_command):  # modelplex batch status ID
    batch.add_command(_command)
logs.add_command(usage, "stats")  # modelplex logs stats: the same report as modelplex usage


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``modelplex`` command."""
    from modelplex import env

    interrupt.take_over()  # Ctrl-C works even when started with SIGINT ignored
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)  # after `--`, --debug is a prompt
    debug = "--debug" in args[:end]
    if debug:  # accepted anywhere before `--`, not only before the command
        args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
    try:
        debug = debug or env.debug()
        from modelplex.plugins import get_plugins

        get_plugins().add_commands(cli)
        cli.main(args=args, prog_name="modelplex", standalone_mode=False)
    except ModelplexError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {redact(str(err))}", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.Abort as err:
        if isinstance(err.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            interrupt.exit_interrupted()
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        interrupt.exit_interrupted()  # 130, without waiting for a busy worker thread
    except RecursionError:  # JSON nested thousands deep in a file given to a command
        if debug:
            traceback.print_exc()
        click.echo("Error: an input file nests its objects or lists too deeply to be read; "
                   "a few levels are all any modelplex input needs", err=True)
        sys.exit(1)
    except UnicodeEncodeError as err:  # an argument's bytes that are not UTF-8, used as text
        if debug:
            traceback.print_exc()
        bad = str(err.object[err.start:err.end])
        click.echo(f"Error: an argument or input is not valid text: it holds an undecodable "
                   f"byte ({bad!a}); give the text as UTF-8", err=True)
        sys.exit(1)
    except OSError as err:  # the output could not be written: a full disk, a closed pipe
        if debug:
            traceback.print_exc()
        _silence_stdout()
        if not isinstance(err, BrokenPipeError):
            what = "cannot write the output" if err.errno in _OUTPUT_ERRNOS else "error"
            click.echo(f"Error: {what}: {err.strerror or err}"
                       + (f": {err.filename}" if err.filename else ""), err=True)
        sys.exit(1)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF, errno.EDQUOT}


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit fails no more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
