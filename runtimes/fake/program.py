"""What a simulated container does, read from its command.

A command made of ``sleep``, ``echo``, ``printf``, ``exit N``, ``true``,
``false``, ``touch``, ``rm`` and ``trap`` (directly, or through ``sh -c`` joined
by ``;``, ``&&``, ``||`` and newlines) becomes a list of steps the simulated
process plays out: lines to its log at the right moments and an exit with the
right code. Anything else runs until it is stopped.
"""

from __future__ import annotations

import math
import posixpath
import shlex
from dataclasses import dataclass
from typing import Literal

StepKind = Literal["sleep", "write", "exit", "status", "touch", "rm", "trap", "forever", "builtin"]
Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    seconds: float = 0.0
    text: str = ""  # what is written (may hold several lines, or none with no newline)
    stream: Stream = "stdout"
    path: str = ""  # for writes into a file, touch and rm
    append: bool = False
    code: int = 0
    connector: str = ";"  # how this command joins the previous one: ";", "&&" or "||"
    argv: tuple[str, ...] = ()  # for builtins that read the container: cat, test, env ...


@dataclass(frozen=True, slots=True)
class Program:
    steps: tuple[Step, ...] = ()
    forever: bool = False  # the container runs until stopped
    shell: bool = False
    ignores_term: bool = False  # `trap '' TERM`: SIGTERM does not end it
    term_exit_code: int = 143  # exit code on SIGTERM; `trap 'exit N' TERM` sets N


_SHELLS = {"sh", "bash", "ash", "dash"}
#: Commands that answer from the simulated container's own state.
BUILTINS = {"cat", "test", "[", "ls", "hostname", "env", "printenv", "pwd", "id", "whoami"}
FOREVER = Program(forever=True)


def _base(arg0: str) -> str:
    return posixpath.basename(arg0)


def parse(command: tuple[str, ...] | list[str], args: tuple[str, ...] | list[str]) -> Program:
    """Read a container's argv (command + args) into a Program."""
    argv = [*command, *args]
    if not argv:
        return FOREVER
    if _base(argv[0]) in _SHELLS:
        if len(argv) >= 3 and argv[1] == "-c":
            return parse_script(argv[2])
        return FOREVER  # an interactive shell waits on its stdin
    steps = _command([_base(argv[0]), *argv[1:]], ";")
    if steps is None:
        return FOREVER
    return Program(steps=tuple(steps), forever=any(s.kind == "forever" for s in steps))


def parse_script(script: str) -> Program:
    """Read an ``sh -c`` script; unknown constructs make it run until stopped."""
    try:
        lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|>\n")
        lexer.whitespace = " \t\r"
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return FOREVER
    steps: list[Step] = []
    ignores_term = False
    term_exit_code = 143
    connector = ";"
    words: list[str] = []

    def flush() -> bool:
        nonlocal ignores_term, term_exit_code
        if not words:
            return True
        parsed = _command(words, connector)
        if parsed is None:
            return False
        for step in parsed:
            if step.kind == "trap":
                action = step.text.split()
                if not action:
                    ignores_term = True
                elif action[0] == "exit":
                    term_exit_code = int(action[1]) & 0xFF if len(action) > 1 else 0
        steps.extend(parsed)
        words.clear()
        return True

    for tok in tokens:
        if tok in (";", "\n", ";\n", "\n\n", "&&", "||"):
            if not flush():
                return FOREVER
            connector = "&&" if tok == "&&" else "||" if tok == "||" else ";"
        elif tok in ("&", "|", ";;"):
            return FOREVER  # background jobs and pipelines are beyond the simulation
        else:
            words.append(tok)
    if not flush():
        return FOREVER
    forever = any(s.kind == "forever" for s in steps)
    return Program(
        steps=tuple(steps),
        forever=forever,
        shell=True,
        ignores_term=ignores_term,
        term_exit_code=term_exit_code,
    )


def _redirect(words: list[str]) -> tuple[list[str], Stream, str, bool] | None:
    """Split off ``> file``, ``>> file``, ``>&2``, ``1>&2`` redirections."""
    out: list[str] = []
    stream: Stream = "stdout"
    path = ""
    append = False
    i = 0
    while i < len(words):
        w = words[i]
        if w == ">&":  # the lexer splits `>&2` into `>&` and `2`
            if i + 1 >= len(words) or words[i + 1] not in ("1", "2"):
                return None
            stream = "stderr" if words[i + 1] == "2" else stream
            i += 2
            continue
        if w in (">", ">>"):
            if i + 1 >= len(words):
                return None
            target = words[i + 1]
            if target.startswith("&"):
                if target != "&2":
                    return None
                stream = "stderr"
            else:
                path, append = target, w == ">>"
            i += 2
            continue
        if w in (">&2", "1>&2"):
            stream = "stderr"
        elif w.endswith(">") and w[:-1] in ("1", "2"):
            return None
        else:
            out.append(w)
        i += 1
    return out, stream, path, append


def _number(text: str) -> float | None:
    if text == "infinity":
        return math.inf
    unit = 1.0
    if text and text[-1] in "smhd":
        unit = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[text[-1]]
        text = text[:-1]
    try:
        value = float(text)
    except ValueError:
        return None
    return value * unit if value >= 0 else None


def _command(words: list[str], connector: str) -> list[Step] | None:
    """One simple command as steps; None when the simulation cannot follow it."""
    split = _redirect(words)
    if split is None:
        return None
    words, stream, path, append = split
    if not words:
        return []
    name, rest = _base(words[0]), words[1:]
    if name == "sleep":
        total = 0.0
        for arg in rest:
            n = _number(arg)
            if n is None:
                return None
            total += n
        if math.isinf(total):
            return [Step("forever", connector=connector)]
        return [Step("sleep", seconds=total, connector=connector)]
    if name == "echo":
        newline = True
        if rest and rest[0] == "-n":
            newline, rest = False, rest[1:]
        text = " ".join(rest) + ("\n" if newline else "")
        return [
            Step("write", text=text, stream=stream, path=path, append=append, connector=connector)
        ]
    if name == "printf":
        if not rest:
            return None
        printed = _printf(rest[0], rest[1:])
        if printed is None:
            return None
        return [
            Step(
                "write", text=printed, stream=stream, path=path, append=append, connector=connector
            )
        ]
    if name == "exit":
        code = int(rest[0]) if rest and rest[0].lstrip("-").isdigit() else 0
        return [Step("exit", code=code & 0xFF, connector=connector)]
    if name in ("true", ":"):
        return [Step("status", code=0, connector=connector)]
    if name == "false":
        return [Step("status", code=1, connector=connector)]
    if name == "touch" and rest:
        return [Step("touch", path=p, connector=connector) for p in rest]
    if name == "rm":
        paths = [p for p in rest if not p.startswith("-")]
        return [Step("rm", path=p, connector=connector) for p in paths]
    if name == "mkdir":
        return [Step("status", code=0, connector=connector)]
    if name in BUILTINS:
        return [
            Step(
                "builtin",
                argv=(name, *rest),
                stream=stream,
                path=path,
                append=append,
                connector=connector,
            )
        ]
    if name == "trap" and len(rest) >= 2:
        if any(sig in ("TERM", "SIGTERM", "15") for sig in rest[1:]):
            return [Step("trap", text=rest[0], connector=connector)]
        return [Step("status", code=0, connector=connector)]
    return None


def _printf(fmt: str, args: list[str]) -> str | None:
    """printf with %s, %d, %%, \\n and \\t; the format repeats while arguments remain."""
    out: list[str] = []
    remaining = list(args)
    while True:
        i = 0
        while i < len(fmt):
            ch = fmt[i]
            if ch == "\\" and i + 1 < len(fmt):
                esc = fmt[i + 1]
                out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(esc, "\\" + esc))
                i += 2
            elif ch == "%" and i + 1 < len(fmt):
                spec = fmt[i + 1]
                if spec == "%":
                    out.append("%")
                elif spec in "sd":
                    value = remaining.pop(0) if remaining else ""
                    if spec == "d":
                        value = value if value.lstrip("-").isdigit() else "0"
                    out.append(value)
                else:
                    return None
                i += 2
            else:
                out.append(ch)
                i += 1
        if not remaining or "%" not in fmt:
            return "".join(out)
