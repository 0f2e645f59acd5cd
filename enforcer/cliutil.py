"""Settings and options every click command shares.

Each command carries them itself (not only the top group): click caches a command's help
option the first time it builds it, so a command invoked on its own once (in a test) would
otherwise lose ``-h`` for the rest of the process.
"""
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def backend_option(*, default: str = "nftables", also: dict[str, str] | None = None):
    """``--backend``, one definition for every command: the choices are the registry's
    names (plus ``also``, name -> what it means, for a command that takes more)."""
    import click

    from backends import registry

    extra = also or {}
    help_text = "; ".join(f"{name}: {what}" for name, what in {"fake": "in memory, no kernel changes", **extra}.items())
    return click.option("--backend", "backend", type=click.Choice([*registry.names(), *extra]),
                        default=default, show_default=True, help=help_text + ".")


def echo_findings(loaded, prefix: str = "") -> None:
    """Warnings and notes (kinds skipped) of a load, on stderr: the input was still used."""
    import click

    for w in loaded.warnings:
        click.echo(f"{prefix}{w}", err=True)
    for n in loaded.notes:
        click.echo(f"{prefix}{n}", err=True)


def emit_picture(dot: str, fmt: str, out_file: str | None = None, stem: str = "picture") -> None:
    """Graphviz source drawn as ``fmt`` (svg, png): to stdout unless ``out_file`` names a
    file, so a command never leaves a file nobody asked for; png is refused on a terminal
    (its bytes would garble it). ``stem`` names the picture in that error's advice."""
    import sys

    import click

    from enforcer.views import pictures
    from enforcer.errors import InputError

    if out_file:
        pictures.render_dot(dot, fmt, out_file)
        click.echo(f"wrote {out_file}", err=True)
        return
    if fmt == "png" and sys.stdout.isatty():
        raise InputError(f"-o png writes an image: redirect it (> {stem}.png) or give --out-file FILE")
    data = pictures.render_dot(dot, fmt) or b""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
