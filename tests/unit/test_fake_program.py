"""How the simulated runtime reads a container's command."""

from __future__ import annotations

import pytest

from runtimes.fake.program import Step, parse


def kinds(steps: tuple[Step, ...]) -> list[str]:
    return [s.kind for s in steps]


def test_shell_script_becomes_steps() -> None:
    prog = parse(["sh", "-c", "echo hello; sleep 1.5 && exit 3 || echo never"], [])
    assert not prog.forever
    assert kinds(prog.steps) == ["write", "sleep", "exit", "write"]
    assert prog.steps[0].text == "hello\n"
    assert prog.steps[1].seconds == 1.5
    assert (prog.steps[2].code, prog.steps[2].connector) == (3, "&&")
    assert prog.steps[3].connector == "||"


def test_command_and_args_are_joined() -> None:
    prog = parse(["/bin/sh"], ["-c", "printf '%s-%d\\n' a 1 b 2"])
    assert prog.steps[0].text == "a-1\nb-2\n"


@pytest.mark.parametrize(
    ("argv", "forever"),
    [
        (["sleep", "3600"], False),
        (["sleep", "infinity"], True),
        (["sh"], True),  # waits on stdin
        (["nginx", "-g", "daemon off;"], True),  # not modelled: runs until stopped
        (["sh", "-c", "while true; do sleep 1; done"], True),
        (["sh", "-c", "sleep 1 | cat"], True),
        ([], True),
    ],
)
def test_what_runs_until_stopped(argv: list[str], forever: bool) -> None:
    assert parse(argv, []).forever is forever


def test_redirections() -> None:
    prog = parse(["sh", "-c", "echo oops >&2; echo ok > /tmp/f; echo more >> /tmp/f"], [])
    assert [(s.stream, s.path, s.append) for s in prog.steps] == [
        ("stderr", "", False),
        ("stdout", "/tmp/f", False),
        ("stdout", "/tmp/f", True),
    ]


def test_traps_change_how_sigterm_lands() -> None:
    assert parse(["sh", "-c", "trap '' TERM; sleep 100"], []).ignores_term
    graceful = parse(["sh", "-c", "trap 'exit 0' TERM; sleep 100"], [])
    assert (graceful.ignores_term, graceful.term_exit_code) == (False, 0)
    assert parse(["sleep", "100"], []).term_exit_code == 143


def test_sleep_units_and_exit_codes_wrap() -> None:
    assert parse(["sleep", "2m"], []).steps[0].seconds == 120
    assert parse(["sh", "-c", "exit 300"], []).steps[0].code == 300 & 0xFF
