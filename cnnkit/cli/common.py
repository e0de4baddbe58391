"""What every subcommand shares: the one error printer, exit codes, signal handling.

Exit codes follow the Command Line Interface Guidelines: 2 for bad usage (an option, a spec or
a file the user named is wrong), 1 for a failure while doing the work, 130 after Ctrl-C and
143 after SIGTERM. Messages carry user text (file names, spec lines), so they are printed as
plain text: never parsed as rich markup, emoji codes or highlighted.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from cnnkit import signals

if TYPE_CHECKING:
    from rich.table import Table

    from cnnkit.arch import Graph

console = Console()
err_console = Console(stderr=True)

USAGE = 2
FAILURE = 1

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(ValueError):
    """The user asked for something that cannot be done as asked (exit code 2)."""


class Failure(RuntimeError):
    """The work itself failed (exit code 1)."""


def say(message: str, style: str = "") -> None:
    """Print ``message`` on stderr exactly as given (no markup, emoji or highlighting)."""
    err_console.print(Text(message, style=style), highlight=False, soft_wrap=True, emoji=False)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``error: message`` on stderr (on one line) and exit with ``code``."""
    line = " ".join(str(message).splitlines())
    err_console.print(
        Text.assemble(("error:", "bold red"), " ", line),
        highlight=False,
        soft_wrap=True,
        emoji=False,
    )
    raise typer.Exit(code)


def flag_words(exc: BaseException) -> str:
    """The message of ``exc`` with the library's parameter names as the user typed them.

    The library names parameters (``lr must be ...``, ``combine=magnitude needs ...``) and
    lists them in ``exc.params`` (:class:`cnnkit.errors.ParameterError`); each becomes its
    option: ``--lr must be ...``, ``--combine magnitude needs ...``. This is the one place
    parameter names become option names: ``batch_size`` -> ``--batch-size``.
    """
    text = str(exc)
    for name in getattr(exc, "params", ()):
        flag = "--" + name.replace("_", "-")
        # a whole word only: not inside a path such as photos/color/a.png
        pattern = rf"(?<![^\s(]){re.escape(name)}(?:(=)(?=\w)|(?=[\s;:,)]|$))"
        text = re.sub(pattern, lambda m, f=flag: f + " " if m[1] else f, text)
    return text


def friendly_errors(func: F) -> F:
    """Turn the library's ValueError (bad input) and OSError (files) into one-line errors.

    ValueError and UsageError exit with 2, Failure and OSError with 1, Ctrl-C with 130 and
    SIGTERM (handled like Ctrl-C, see :mod:`cnnkit.signals`) with 143; RecursionError and
    MemoryError, which hostile input can still reach deep inside a library, print one line.
    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signals.install()
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (UsageError, ValueError) as exc:
            fail(flag_words(exc), USAGE)
        except Failure as exc:
            fail(flag_words(exc), FAILURE)
        except FileNotFoundError as exc:
            reason = exc.strerror or ""
            if reason.lower() in ("", "no such file or directory"):
                reason = "no such file"
            fail(f"{exc.filename or exc}: {reason}", USAGE)
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}{exc.strerror or exc}", FAILURE)
        except RecursionError:
            fail("the input is nested too deeply to read", USAGE)
        except MemoryError:
            fail("out of memory; try a smaller input", FAILURE)
        except KeyboardInterrupt as exc:
            say("terminated" if isinstance(exc, signals.Terminated) else "interrupted")
            sys.exit(signals.exit_code(exc))

    return wrapper  # type: ignore[return-value]


JSON_HELP = "Print the result as JSON on stdout (instead of the tables)."
JSON_FILE_HELP = "Also write the JSON to this file ('-': stdout, instead of the tables)."


def check_json_file(json_file: str | None) -> None:
    """Refuse a ``--json-file`` whose folder does not exist before any work is done."""
    import os

    if json_file is None or json_file == "-":
        return
    folder = os.path.dirname(json_file) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--json-file folder {folder!r} does not exist (create it first)")
    if os.path.isdir(json_file):
        raise UsageError(f"--json-file {json_file!r} is a folder; give a file name")


def emit_json(data: Any, as_json: bool, json_file: str | None) -> bool:
    """The ``--json`` / ``--json-file PATH`` convention of every subcommand.

    ``--json`` prints ``data`` on stdout; ``--json-file PATH`` writes it to PATH atomically
    (``-``: stdout). Returns True when stdout received the JSON, so the caller prints nothing
    else there.
    """
    import json

    text = json.dumps(data, indent=2)
    if json_file is not None and json_file != "-":
        from cnnkit.io import atomic_write

        with atomic_write(json_file, "w") as handle:
            handle.write(text + "\n")
    if as_json or json_file == "-":
        typer.echo(text)
        return True
    return False


# The arguments ``shape`` and ``receptive-field`` share.
SpecArgument = Annotated[
    str,
    typer.Argument(
        metavar="SPEC", help="Shipped name, spec file, or inline 'input 1 8 8; conv 4 k=3'."
    ),
]
InputOption = Annotated[
    str | None,
    typer.Option("--input", "-i", help="Input shape CxHxW (or CxL, CxDxHxW); overrides SPEC's."),
]
TableJsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TableJsonFileOption = Annotated[
    str | None,
    typer.Option("--json-file", metavar="PATH", help="Also write the JSON here ('-': stdout)."),
]


def load_arch(source: str, input_text: str | None) -> Graph:
    """Parse SPEC, with ``--input CxHxW`` overriding its input line."""
    from cnnkit import arch

    override = arch.parse_shape(input_text, "--input") if input_text else None
    return arch.parse(source, override)


def human_count(n: int) -> str:
    """``15470264320`` -> ``"15.47 G"``; small numbers with thousands separators."""
    if n < 100_000:
        return f"{n:,}"
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,}"  # pragma: no cover


def fit_table(make: Callable[[set[str]], Table], optional: list[str]) -> Table:
    """The table ``make(dropped)`` builds, dropping ``optional`` columns in order until it
    fits the terminal (numbers are never cut; text columns may wrap).

    Column widths are set from the plain cell text, which spares rich from measuring every
    cell of a 170-row table again (ResNet-50 answers in a fraction of a second).
    """
    dropped: set[str] = set()
    while True:
        table = make(dropped)
        widths = [
            max(len(str(c.header)), len(str(c.footer or "")), *(len(str(x)) for x in c.cells))
            for c in table.columns
        ]
        if sum(widths) + 3 * len(widths) + 1 <= console.width or not optional:
            break
        dropped.add(optional.pop(0))
    for column, width in zip(table.columns, widths):
        if column.no_wrap:
            column.width = width
    return table
