"""``radpath``: the command-line entry point.

Heavy modules (numpy, image codecs, later torch) are imported inside each command, so that
``radpath --help`` answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperOption

from radpath import __version__
from radpath.errors import RadpathError


def _flag_type(option: TyperOption, ctx) -> str | None:
    """The type column of ``--help``: none for a flag, which takes no value."""
    if option.is_flag and not option.count:
        return None
    return _typer_type(option, ctx)


# Typer's rich help prints "<bool>" after every flag (--help, --resume), as if it took a
# value; its plain help already leaves flags bare. Show flags as they are typed.
_typer_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    name="radpath", no_args_is_help=True, add_completion=False,
    # Locals in a traceback could hold DICOM identifiers: never print them.
    pretty_exceptions_show_locals=False,
    help="Domain-generalised cross-modal learning on mammography and histopathology.",
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"radpath {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                 is_eager=True, help="Print the version.")]
          = False) -> None:
    """Domain-generalised cross-modal learning on mammography and histopathology."""


def _register_commands() -> None:
    from radpath.cli import (
        benchmark_command,
        data_commands,
        demo_command,
        evaluate_command,
        explain_command,
        pretrain_command,
        serve_command,
        slides_command,
        train_command,
    )

    data_commands.register(app)
    train_command.register(app)
    pretrain_command.register(app)
    evaluate_command.register(app)
    benchmark_command.register(app)
    explain_command.register(app)
    serve_command.register(app)
    demo_command.register(app)
    slides_command.register(app)


def main() -> None:
    """Console-script entry point: a radpath error becomes one clear line and exit code 1."""
    _register_commands()
    try:
        app()
    except (RadpathError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
