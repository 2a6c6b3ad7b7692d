"""Command-line options from the environment, the board URL from a file, ``--version``.

Both commands take every option from an environment variable too, named
after the option and a prefix: ``conductor run --max-jobs`` from
``CONDUCTOR_MAX_JOBS``, ``jobboard list --limit`` from ``JOBBOARD_LIMIT``.
The command line wins over the environment and the environment over the
built-in default. Values are checked like the command line's, and a bad one
is refused naming the variable. Flags take ``1/true/yes/on`` or
``0/false/no/off``; repeatable options take a comma-separated list.

The board URL may hold a password, so it can also come from a file
(``--board-file`` or ``<PREFIX>_BOARD_FILE``): a Kubernetes Secret mounted as
a file, a systemd credential, a Docker secret. The file's content is never
printed.

Usage in a parser factory::

    from_environment(parser, "JOBBOARD")          # after every add_argument
    url = board_url(args, ("JOBBOARD", "CONDUCTOR"))
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jobboard.errors import BadURL
from jobboard.urls import SECRET_OPTIONS

__all__ = [
    "BOARD_DESTS",
    "add_board_file",
    "add_version",
    "board_url",
    "env_name",
    "from_environment",
    "package_version",
    "read_board_file",
    "scrub",
]

#: Option destinations :func:`from_environment` leaves to :func:`board_url`.
BOARD_DESTS = frozenset({"board", "board_file"})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_name(prefix: str, option: str) -> str:
    """``("CONDUCTOR", "--max-jobs")`` -> ``CONDUCTOR_MAX_JOBS``."""
    return f"{prefix}_{option.lstrip('-').replace('-', '_').upper()}"


def package_version() -> str:
    """The installed version of the distribution holding both commands."""
    from importlib import metadata  # read only for --version: it costs ~25 ms to import

    try:
        return metadata.version("conductor")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, reading the package's metadata only when it is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: print the command's name and the package version."""
    parser.add_argument(
        "--version", action=_VersionAction, help="show program's version number and exit"
    )


def add_board_file(parser: argparse.ArgumentParser, *mirrors: argparse.ArgumentParser) -> None:
    """``--board-file PATH`` on ``parser`` (and, value kept when absent, on ``mirrors``).

    :func:`from_environment` adds the variable's name to its help.
    """
    parser.add_argument(
        "--board-file",
        metavar="PATH",
        default=None,
        help="read the board URL (with its password) from this file instead of --board",
    )
    for mirror in mirrors:
        mirror.add_argument(
            "--board-file", metavar="PATH", default=argparse.SUPPRESS, help="board URL file"
        )


def read_board_file(path: str) -> str:
    """The board URL in a file: its first non-blank line. Errors never show the content."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise BadURL(f"cannot read the board URL from {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise BadURL(f"the board URL file {path} is not UTF-8 text") from None
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise BadURL(f"the board URL file {path} is empty")


def board_url(
    args: argparse.Namespace,
    prefixes: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The board URL: ``--board``, ``--board-file``, then ``<P>_BOARD`` / ``<P>_BOARD_FILE``
    for each prefix in order; None when nothing names a board.

    Giving both a URL and a file at the same level is refused (``BadURL``)
    rather than silently preferring one.
    """
    env = os.environ if environ is None else environ
    given, file = getattr(args, "board", None), getattr(args, "board_file", None)
    if given and file:
        raise BadURL("give --board or --board-file, not both")
    if given:
        return str(given)
    if file:
        return read_board_file(file)
    for prefix in prefixes:
        url_var, file_var = f"{prefix}_BOARD", f"{prefix}_BOARD_FILE"
        url, path = env.get(url_var), env.get(file_var)
        if url and path:
            raise BadURL(f"set {url_var} or {file_var}, not both")
        if url:
            return url
        if path:
            return read_board_file(path)
    return None


def scrub(text: str, url: str | None) -> str:
    """``text`` with every secret of ``url`` (its password, secret query options) as ``***``.

    The last line of defence for what the commands print: whatever a backend
    puts in an error, the password of the URL the operator gave is not shown.
    """
    if not url:
        return text
    try:
        parts = urlsplit(url)
        secrets = [parts.password or ""]
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return text.replace(url, "***")
    for key, value in query:
        if key.lower() in SECRET_OPTIONS:
            secrets += [value, value.partition(":")[2]]  # digest=user:password
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


# -- every other option ----------------------------------------------------------


def from_environment(
    parser: argparse.ArgumentParser,
    prefix: str,
    *,
    environ: Mapping[str, str] | None = None,
    skip: Iterable[str] = BOARD_DESTS,
) -> None:
    """Default every option of ``parser`` (and its subcommands) from ``<prefix>_<OPTION>``.

    Call it once the parser is complete. Each option's help names its
    variable. A bad value does not fail here (``--help`` must keep working):
    it is reported by ``parse_args`` as an error of that option, naming the
    variable, unless the command line gives the option.
    """
    env = os.environ if environ is None else environ
    skipped = set(skip)
    for action in _options(parser):
        option = next((s for s in action.option_strings if s.startswith("--")), None)
        if option is None or action.default is argparse.SUPPRESS:
            continue  # positionals, -h, --version, and mirrors of a top-level option
        name = env_name(prefix, option)
        if action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} [env {name}]".lstrip()
        raw = env.get(name)
        if action.dest in skipped or raw is None:
            continue
        try:
            value = _convert(action, raw)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            _defer_error(action, name, raw, str(err))
            continue
        action.default = value
        action.required = False
        if isinstance(action, argparse._AppendAction):
            action.__class__ = _ReplacingAppend


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every action of a parser and its subparsers, each once (parents share actions)."""
    seen: set[int] = set()
    parsers = [parser]
    while parsers:
        current = parsers.pop(0)
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(p for p in dict.fromkeys(action.choices.values()))
                continue
            if id(action) not in seen:
                seen.add(id(action))
                yield action


def _convert(action: argparse.Action, raw: str) -> Any:
    """The option's value from the variable's text, checked as argparse would."""
    if action.nargs == 0:  # a flag: store_true, store_false, store_const
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(sorted(_TRUE | _FALSE))}")
        on = word in _TRUE
        return action.const if on else action.default
    convert: Callable[[str], Any] = action.type if callable(action.type) else str
    if isinstance(action, argparse._AppendAction):
        items = [convert(part.strip()) for part in raw.split(",") if part.strip()]
        for item in items:
            _check_choice(action, item)
        return items
    value = convert(raw)
    _check_choice(action, value)
    return value


def _check_choice(action: argparse.Action, value: Any) -> None:
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose from {choices})")


def _defer_error(action: argparse.Action, name: str, raw: str, reason: str) -> None:
    """Make ``parse_args`` refuse the variable's value unless the command line gives the option.

    argparse converts a string default with the option's type only when the
    option was not given; the type below fails for exactly that string object.
    """
    original = action.type

    def from_env(text: str) -> Any:
        if text is raw:
            raise argparse.ArgumentTypeError(f"{name}={raw!r}: {reason}")
        return original(text) if callable(original) else text

    from_env.__name__ = getattr(original, "__name__", "value")
    action.default = raw
    action.required = False
    action.type = from_env
    if isinstance(action, argparse._AppendAction):
        action.__class__ = _ReplacingAppend


class _ReplacingAppend(argparse._AppendAction):
    """A repeatable option whose values on the command line replace the environment's."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)
