"""Which tests a verify command's output says failed: test-level evidence for flake-aware blame.

A red verify run names its failing tests when its runner is one batchd knows (pytest, unittest,
jest, vitest, go test, cargo test) or when it writes a JUnit XML report. Blame can then compare
tests instead of whole commands: a test that also fails on the base does not blame a todo.

The output is another program's text, so it is read as hostile: only its last
:data:`MAX_OUTPUT_CHARS` are looked at, colour codes are stripped, lines are split on ``\\n`` only
(``\\r\\n`` and progress bars' ``\\r`` are folded), and at most :data:`MAX_IDS` identifiers are kept.
Each runner's parser reads only the part of the output the runner itself writes after the tests
ran (pytest's short summary, unittest's ``====`` blocks, cargo's ``failures:`` list...), so a test
that prints ``FAILED tests/x.py::y`` in its captured output names nothing. Where the runner prints
how many tests failed, the names found must add up to it, or the evidence is not ``complete``: a test
name with a newline that smuggles in a second name, or output cut off at the top, makes it
incomplete rather than wrong. A caller must treat an incomplete set as "at least these failed" and
an ``unknown`` runner as no test-level evidence at all (fall back to the whole command), never guess.

What this cannot defend against: a test process that prints a whole fake report of its own after
the runner's (from an ``atexit`` hook, say) is indistinguishable from the runner. Evidence is as
trustworthy as the test code that ran; the test-integrity gate is what guards the runner itself.

Identifiers are stable across runs of the same test so that a flake model can count per test:
pytest node ids (``tests/test_x.py::test_y[param]``; a collection error names the module),
unittest ``module.Class.test_y`` (subtests fold into their test), jest and vitest
``file > describe > name`` (a suite that failed to run names its file), go ``pkg/TestName`` and
``pkg/TestName/sub`` (a package that failed without a test, e.g. to build, names the package), cargo
``module::test_name`` as cargo prints it, JUnit ``classname.name``. The JUnit ids are not the
text's (pytest's report says ``tests.test_x.test_y``, its text ``tests/test_x.py::test_y``): a caller
compares runs of one command from one source, the report when the command is configured with one.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

__all__ = [
    "MAX_IDS",
    "MAX_JUNIT_BYTES",
    "MAX_OUTPUT_CHARS",
    "RUNNERS",
    "UNKNOWN",
    "Evidence",
    "failing_tests",
    "from_junit",
]

UNKNOWN = "unknown"
RUNNERS = ("pytest", "unittest", "jest", "vitest", "go", "cargo", "junit")
# Every runner prints its summary at the end: the last 8 MiB hold it for any real suite, and bound
# the work on a 50 MB log (a few regex passes over 8 MiB take well under a second).
MAX_OUTPUT_CHARS = 8 * 1024 * 1024
MAX_IDS = 10_000  # more failing tests than this is "everything is broken", not per-test evidence
MAX_ID_CHARS = 1024  # a longer "name" is garbage or an attack; a line is cut well past it
MAX_LINE_CHARS = 8192
MAX_JUNIT_BYTES = 32 * 1024 * 1024

# CSI (colours, cursor moves), OSC (titles, hyperlinks; ended by BEL or ST), then any other escape.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
# Other C0 controls but tab, newline and carriage return: they do not print, and must not split
# or hide anything.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """The failing tests one run's output names.

    ``runner`` is the format recognised (one of :data:`RUNNERS`, several joined by ``+`` when one
    command ran more than one runner, or :data:`UNKNOWN`). ``complete`` says the runner's own summary
    was seen and agrees with ``failed``, so ``failed`` is all that failed; otherwise it is only some.
    """

    runner: str = UNKNOWN
    failed: frozenset[str] = field(default_factory=frozenset)
    complete: bool = False


def failing_tests(output: str | bytes, *, junit: Path | None = None) -> Evidence:
    """The failing tests named by a verify command's ``output``, or by its JUnit report ``junit``.

    With ``junit`` the report alone is the evidence (a missing or unreadable one is ``unknown``,
    not a reason to trust the text instead). Never raises on any input.
    """
    if junit is not None:
        return from_junit(junit)
    text = _normalise(output)
    found = [evidence for parse in _PARSERS if (evidence := parse(text)) is not None]
    if not found:
        return Evidence()
    failed = frozenset().union(*(e.failed for e in found))
    complete = all(e.complete for e in found) and len(failed) <= MAX_IDS
    if len(failed) > MAX_IDS:
        failed = frozenset(sorted(failed)[:MAX_IDS])
    return Evidence(runner="+".join(e.runner for e in found), failed=failed, complete=complete)


def _normalise(output: str | bytes) -> str:
    """The last part of ``output`` as plain text lines: no colours, controls or carriage returns."""
    cut = len(output) > MAX_OUTPUT_CHARS
    tail = output[-MAX_OUTPUT_CHARS:]
    text = tail.decode("utf-8", errors="replace") if isinstance(tail, bytes) else tail
    if cut:  # the first line is a fragment: drop it rather than read half a name
        text = text.partition("\n")[2]
    text = _CONTROLS.sub("", _ANSI.sub("", text))
    # Whole-text passes first; the per-line work below runs only for lines that need it.
    lines = text.split("\n")
    if "\r" in text:  # CRLF, or a progress bar that redrew the line: keep what stays on screen
        lines = [_last_drawn(line) if "\r" in line else line for line in lines]
    if len(text) > MAX_LINE_CHARS and max(map(len, lines)) > MAX_LINE_CHARS:
        lines = [line[:MAX_LINE_CHARS] for line in lines]
    return "\n".join(lines)


def _last_drawn(line: str) -> str:
    """What a terminal shows of a line redrawn with carriage returns (roughly: the last part)."""
    return line.rstrip("\r").rpartition("\r")[2]


class _Names:
    """Failing test ids as a parser finds them, refusing overlong ones (which spoil completeness)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.refused = False
        self.full = False  # past MAX_IDS: parsers stop reading, the evidence is incomplete anyway

    def add(self, name: str) -> None:
        name = name.strip()
        if len(self.ids) >= MAX_IDS:
            self.refused = self.full = True
            return
        if not name or len(name) > MAX_ID_CHARS:
            self.refused = True
            return
        self.ids.append(name)

    def evidence(self, runner: str, *, complete: bool) -> Evidence:
        return Evidence(runner=runner, failed=frozenset(self.ids), complete=complete and not self.refused)


def _count(summary: str, *words: str) -> int:
    """The sum of ``N word`` counts in a summary such as ``3 failed, 1 error`` (0 when absent)."""
    total = 0
    for word in words:
        for m in re.finditer(rf"(\d+) {word}\b", summary):
            total += int(m.group(1))
    return total


# --- pytest ---------------------------------------------------------------------------------------

_PYTEST_FINAL = re.compile(
    r"^(?:=+ )?((?:\d+ [a-z]+, )*\d+ [a-z]+|no tests ran) in [\d.]+s(?: \([\d:.]+\))?(?: =+)?$",
    re.MULTILINE,
)
_PYTEST_HEADER = re.compile(r"^=+ short test summary info =+$", re.MULTILINE)
_PYTEST_ENTRY = re.compile(r"^(?:FAILED|ERROR) (.+)$", re.MULTILINE)
_PYTEST_VERBOSE = re.compile(r"^(\S+?::.+?) (?:FAILED|ERROR)(?: +\[ *\d+%\])?$", re.MULTILINE)
_PYTEST_STOPPED = re.compile(
    r"^!{3,} .*(?:stopping after|Interrupted|KeyboardInterrupt).*!{3,}$", re.MULTILINE
)


def _pytest_id(entry: str) -> str:
    """The node id in a short-summary entry ``id - message``: the first `` - `` outside brackets
    (a parameter id may itself contain `` - ``)."""
    start = 0
    while (i := entry.find(" - ", start)) != -1:
        head = entry[:i]
        if head.count("[") == head.count("]"):
            return head
        start = i + 1
    return entry


def _pytest(text: str) -> Evidence | None:
    finals = list(_PYTEST_FINAL.finditer(text))
    if not finals:
        return None
    final = finals[-1]
    expected = _count(final.group(1), "failed", "errors?")
    names = _Names()
    headers = list(_PYTEST_HEADER.finditer(text, 0, final.start()))
    if headers:  # the last summary before the final line is pytest's; earlier ones are test output
        for m in _PYTEST_ENTRY.finditer(text, headers[-1].end(), final.start()):
            if names.full:
                break
            names.add(_pytest_id(m.group(1)))
    else:  # -rN: only -v's per-test lines are left
        for m in _PYTEST_VERBOSE.finditer(text, 0, final.start()):
            if names.full:
                break
            names.add(m.group(1))
    stopped = _PYTEST_STOPPED.search(text) is not None  # -x, a collection error, ^C: not all ran
    return names.evidence("pytest", complete=len(names.ids) == expected and not stopped)


# --- unittest -------------------------------------------------------------------------------------

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$", re.MULTILINE)
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \(([^()]*)\))?$", re.MULTILINE)
# A block starts with a line of 70 "="; the header names the method and, in parentheses, where it is.
_UNITTEST_BLOCK = re.compile(r"^={70}\n(?:FAIL|ERROR): (\S+) \(([\w.]+)\)(?: .*)?$", re.MULTILINE)


def _unittest(text: str) -> Evidence | None:
    rans = list(_UNITTEST_RAN.finditer(text))
    if not rans:
        return None
    ran = rans[-1]
    result = _UNITTEST_RESULT.search(text, ran.end())
    names = _Names()
    for m in _UNITTEST_BLOCK.finditer(text, 0, ran.start()):
        if names.full:
            break
        method, where = m.group(1), m.group(2)
        # 3.11+ prints ``test_y (module.Class.test_y)``, older ones ``test_y (module.Class)``.
        names.add(where if where.endswith("." + method) else f"{where}.{method}")
    if result is None:
        return names.evidence("unittest", complete=False)
    counts = result.group(2) or ""
    expected = sum(int(n) for n in re.findall(r"(?:^|, )(?:failures|errors)=(\d+)", counts))
    # An unexpected success makes the run red but names no FAIL block.
    complete = len(names.ids) == expected and "unexpected successes" not in counts
    return names.evidence("unittest", complete=complete)


# --- jest -----------------------------------------------------------------------------------------

_JEST_TESTS = re.compile(r"^Tests:\s+(.*\d+ total)$", re.MULTILINE)
# The suite line is "FAIL path" (with colour, an inverse " FAIL " badge); its tests follow it.
_JEST_LINE = re.compile(r"^(?: ?(?:FAIL|PASS) +(\S.*)|  ● (.+))$", re.MULTILINE)
_JEST_NOT_TESTS = {"Console"}  # a ● section jest prints that is not a test


def _jest(text: str) -> Evidence | None:
    summaries = list(_JEST_TESTS.finditer(text))
    if not summaries:
        return None
    summary = summaries[-1]
    names = _Names()
    tests: set[str] = set()  # the "Summary of all failing tests" repeats some: count each once
    suite: str | None = None
    for m in _JEST_LINE.finditer(text, 0, summary.start()):
        if names.full:
            break
        if m.group(1) is not None:
            suite = m.group(1).strip().removeprefix("./")
        elif suite is not None and m.group(2) not in _JEST_NOT_TESTS:
            if m.group(2) == "Test suite failed to run":
                names.add(suite)
            else:
                name = f"{suite} > " + m.group(2).replace(" › ", " > ")
                tests.add(name)
                names.add(name)
    expected = _count(summary.group(1), "failed")
    return names.evidence("jest", complete=len(tests) == expected)


# --- vitest ---------------------------------------------------------------------------------------

_VITEST_TESTS = re.compile(r"^ +Tests +(.*)\(\d+\)$", re.MULTILINE)
_VITEST_FAIL = re.compile(r"^ FAIL +(\S.*)$", re.MULTILINE)
_VITEST_SUITE = re.compile(r"^(.+?) \[ \1 \]$")  # " FAIL  file [ file ]": a suite that failed to load


def _vitest(text: str) -> Evidence | None:
    summaries = list(_VITEST_TESTS.finditer(text))
    if not summaries:
        return None
    summary = summaries[-1]
    names = _Names()
    tests: set[str] = set()
    for m in _VITEST_FAIL.finditer(text, 0, summary.start()):
        if names.full:
            break
        line = m.group(1).strip()
        suite = _VITEST_SUITE.match(line)
        if suite is not None:
            names.add(suite.group(1))
        else:
            tests.add(line)
            names.add(line)
    expected = _count(summary.group(1), "failed")
    return names.evidence("vitest", complete=len(tests) == expected)


# --- go test --------------------------------------------------------------------------------------

# A test's own log lines are indented under it ("    file_test.go:6: ..."); subtests by 4 per level.
_GO_LINE = re.compile(
    r"^(?:(?:    )*--- FAIL: (\S+) \(.*|(ok  |FAIL|\?   )\t(\S+).*|(panic: ).*)$", re.MULTILINE
)


def _go(text: str) -> Evidence | None:
    names = _Names()
    pending: list[str] = []
    packages = 0
    panicked = False
    for m in _GO_LINE.finditer(text):
        if names.full:
            break
        if m.group(1) is not None:
            pending.append(m.group(1))
        elif m.group(2) is not None:
            packages += 1
            if m.group(2) == "FAIL":
                for test in pending:
                    names.add(f"{m.group(3)}/{test}")
                if not pending:  # failed without a failing test: a build error, TestMain, a crash
                    names.add(m.group(3))
            pending = []
        else:
            panicked = True  # a panic ends the test binary: the package's later tests never ran
    if packages == 0:
        return None
    return names.evidence("go", complete=not pending and not panicked)


# --- cargo test -----------------------------------------------------------------------------------

_CARGO_LINE = re.compile(
    r"^(?:(running \d+ tests?)|test result: (?:ok|FAILED)\. \d+ passed; (\d+) failed;.*"
    r"|(error: (?:test|doctest|bench) failed, to rerun pass .*)|(error: \d+ targets? failed:)"
    r"|(failures:))$",
    re.MULTILINE,
)
_CARGO_LISTED = re.compile(r"^    (\S.*)$")


def _cargo(text: str) -> Evidence | None:
    names = _Names()
    results = 0
    balanced = True
    open_section = False
    stopped_at: int | None = None  # where cargo said a target failed (it stops there unless told not to)
    all_reported = False
    last_failures: int | None = None
    for m in _CARGO_LINE.finditer(text):
        if names.full:
            break
        if m.group(1) is not None:
            if open_section:
                balanced = False
            open_section, last_failures, stopped_at = True, None, None
        elif m.group(2) is not None:
            results += 1
            listed = _cargo_listed(text, last_failures, m.start()) if last_failures is not None else []
            for name in listed:
                names.add(name)
            balanced = balanced and open_section and len(listed) == int(m.group(2))
            open_section = False
        elif m.group(3) is not None:
            stopped_at = m.end()
        elif m.group(4) is not None:
            all_reported = True
        else:
            last_failures = m.end()  # the last "failures:" before the result lists the names
    if results == 0:
        return None
    # After "error: test failed" cargo stops (unless --no-fail-fast): later targets did not run.
    stopped = stopped_at is not None and not all_reported
    return names.evidence("cargo", complete=balanced and not open_section and not stopped)


def _cargo_listed(text: str, start: int, end: int) -> list[str]:
    """The names in the ``failures:`` list between ``start`` and the result line at ``end``."""
    # Past MAX_IDS names the rest is not read: the evidence is cut (and incomplete) anyway.
    lines = text[start:end].strip("\n").split("\n", MAX_IDS + 1)[: MAX_IDS + 1]
    listed = [m.group(1) for line in lines if (m := _CARGO_LISTED.match(line))]
    return listed if len(listed) == len(lines) else []  # anything else there: not cargo's list


_PARSERS: tuple[Callable[[str], Evidence | None], ...] = (_pytest, _unittest, _jest, _vitest, _go, _cargo)


# --- JUnit XML ------------------------------------------------------------------------------------


def from_junit(path: Path) -> Evidence:
    """The failing test cases of a JUnit XML report (``unknown`` when missing, unreadable, too big,
    not XML, or carrying a DOCTYPE or entities)."""
    data = _read_report(path)
    if data is None:
        return Evidence()
    try:
        root = safe_xml.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, RecursionError):
        return Evidence()
    if _local(root.tag) not in ("testsuites", "testsuite"):
        return Evidence()
    names = _Names()
    failing = 0
    expected = 0
    counted = True
    for suite in [root, *root.iter()]:
        if _local(suite.tag) != "testsuite" or not any(_local(c.tag) == "testcase" for c in suite):
            continue
        try:
            expected += int(suite.get("failures", "0")) + int(suite.get("errors", "0"))
        except ValueError:
            counted = False
        for case in suite:
            if names.full:
                break
            if _local(case.tag) == "testcase" and _failed(case):
                failing += 1
                classname, name = case.get("classname", ""), case.get("name", "")
                names.add(f"{classname}.{name}" if classname else name)
    return names.evidence("junit", complete=counted and failing == expected)


def _local(tag: object) -> str:
    """An element's tag without its namespace (comments and processing instructions have none)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _failed(case: Element) -> bool:
    # <flakyFailure>/<rerunFailure> are tries that a later try passed: not failures.
    return any(_local(child.tag) in ("failure", "error") for child in case)


def _read_report(path: Path) -> bytes | None:
    """The report's bytes: a regular file (not a link, FIFO or device), at most MAX_JUNIT_BYTES."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the configured path
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JUNIT_BYTES:
            return None
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):  # the file may grow while read: stop past the cap
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_JUNIT_BYTES:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
