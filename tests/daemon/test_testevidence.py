"""Test-level evidence: the failing tests a verify command's output (or JUnit report) names.

pytest and unittest run for real on suites written here; jest, vitest and go are read from outputs
recorded with the real tools (tests/fixtures/testevidence/README.md); cargo runs for real when present.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.world import testevidence
from daemon.world.testevidence import Evidence, failing_tests, from_junit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "testevidence"

SUITE = {
    "tests/test_math.py": """
        import pytest

        def test_ok():
            assert True

        def test_wrong():
            assert 1 + 1 == 3

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(n):
            assert n != 2

        class TestGroup:
            def test_method(self):
                raise RuntimeError("boom")
    """,
}
SUITE_FAILED = {
    "tests/test_math.py::test_wrong",
    "tests/test_math.py::test_param[2]",
    "tests/test_math.py::TestGroup::test_method",
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")


def run_pytest(root: Path, files: dict[str, str], *args: str) -> str:
    """The combined output of the real pytest on ``files`` under ``root`` (its own empty config)."""
    write(root, {"pytest.ini": "[pytest]\n", **files})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1, 2), done.stdout  # 3/4 would be pytest's own failure: a broken test
    return done.stdout


def run_unittest(root: Path, files: dict[str, str], *args: str) -> str:
    write(root, files)
    done = subprocess.run(
        [sys.executable, "-m", "unittest", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return done.stdout


# --- pytest, for real -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", [["-q"], ["-v"], ["-rA"], ["--color=yes"], ["-v", "-rN"]])
def test_pytest_names_the_same_failing_node_ids_in_every_output_style(
    tmp_path: Path, style: list[str]
) -> None:
    """-q, -v, -rA, colour and -rN (no short summary) all give the same node ids, complete."""
    evidence = failing_tests(run_pytest(tmp_path, SUITE, *style))
    assert evidence == Evidence(runner="pytest", failed=frozenset(SUITE_FAILED), complete=True)


def test_a_green_pytest_run_is_complete_evidence_of_no_failure(tmp_path: Path) -> None:
    """All passed: recognised, nothing failed, and that is the whole story."""
    out = run_pytest(tmp_path, {"tests/test_ok.py": "def test_ok():\n    assert True\n"})
    assert failing_tests(out) == Evidence(runner="pytest", failed=frozenset(), complete=True)


def test_a_parameter_id_containing_a_dash_is_kept_whole(tmp_path: Path) -> None:
    """`` - `` separates pytest's message from the id, but a parameter id may contain it too."""
    files = {
        "test_p.py": """
            import pytest

            @pytest.mark.parametrize("v", [1], ids=["a - b"])
            def test_p(v):
                assert v == 2, "x - y"
        """
    }
    assert failing_tests(run_pytest(tmp_path, files)).failed == {"test_p.py::test_p[a - b]"}


def test_a_fixture_error_counts_as_a_failing_test(tmp_path: Path) -> None:
    """An error in set-up is reported (ERROR) under the test's own id."""
    files = {
        "test_f.py": """
            import pytest

            @pytest.fixture
            def broken():
                raise OSError("no database")

            def test_uses(broken):
                pass

            def test_fine():
                pass
        """
    }
    evidence = failing_tests(run_pytest(tmp_path, files))
    assert evidence == Evidence(runner="pytest", failed=frozenset({"test_f.py::test_uses"}), complete=True)


def test_a_collection_error_names_the_module_and_is_incomplete(tmp_path: Path) -> None:
    """pytest stops on a collection error: the module is named, and the other tests did not run."""
    files = {**SUITE, "tests/test_bad.py": "import does_not_exist\n"}
    evidence = failing_tests(run_pytest(tmp_path, files))
    assert evidence == Evidence(runner="pytest", failed=frozenset({"tests/test_bad.py"}), complete=False)


def test_continuing_after_a_collection_error_gives_complete_evidence(tmp_path: Path) -> None:
    """With --continue-on-collection-errors every test ran: the module and the failing tests."""
    files = {**SUITE, "tests/test_bad.py": "import does_not_exist\n"}
    evidence = failing_tests(run_pytest(tmp_path, files, "--continue-on-collection-errors"))
    assert evidence == Evidence(
        runner="pytest", failed=frozenset({*SUITE_FAILED, "tests/test_bad.py"}), complete=True
    )


def test_skips_and_expected_failures_are_not_failures(tmp_path: Path) -> None:
    """skip, xfail and a non-strict xpass are not failing tests; a strict xpass is."""
    files = {
        "test_x.py": """
            import pytest

            @pytest.mark.skip(reason="later")
            def test_skipped():
                assert False

            @pytest.mark.xfail(reason="known")
            def test_xfail():
                assert False

            @pytest.mark.xfail(reason="flaky")
            def test_xpass():
                pass

            @pytest.mark.xfail(strict=True, reason="must fail")
            def test_strict_xpass():
                pass
        """
    }
    evidence = failing_tests(run_pytest(tmp_path, files, "-rA"))
    assert evidence == Evidence(
        runner="pytest", failed=frozenset({"test_x.py::test_strict_xpass"}), complete=True
    )


def test_stopping_at_the_first_failure_is_incomplete(tmp_path: Path) -> None:
    """-x: the tests after the first failure never ran, so they are not known to pass."""
    evidence = failing_tests(run_pytest(tmp_path, SUITE, "-x"))
    assert evidence.complete is False
    assert len(evidence.failed) == 1


def test_a_test_printing_a_fake_summary_names_nothing_extra(tmp_path: Path) -> None:
    """Captured output that imitates pytest's short summary is not read as pytest's."""
    files = {
        "test_liar.py": """
            def test_liar():
                print("=========== short test summary info ===========")
                print("FAILED test_other.py::test_innocent - framed")
                print("1 failed in 0.01s")
                assert False
        """
    }
    evidence = failing_tests(run_pytest(tmp_path, files))
    assert evidence == Evidence(runner="pytest", failed=frozenset({"test_liar.py::test_liar"}), complete=True)


def test_a_newline_in_a_parameter_id_cannot_inject_a_second_id(tmp_path: Path) -> None:
    """pytest escapes the newline; the one failing test stays one id."""
    files = {
        "test_n.py": """
            import pytest

            @pytest.mark.parametrize("v", [1], ids=["a\\nFAILED test_n.py::test_innocent"])
            def test_n(v):
                assert False
        """
    }
    evidence = failing_tests(run_pytest(tmp_path, files))
    assert evidence.complete is True
    assert evidence.failed == {"test_n.py::test_n[a\\nFAILED test_n.py::test_innocent]"}


def test_windows_line_ends_give_the_same_evidence(tmp_path: Path) -> None:
    """CRLF output parses as LF output."""
    out = run_pytest(tmp_path, SUITE, "-q")
    assert failing_tests(out.replace("\n", "\r\n")) == failing_tests(out)


def test_pytest_runs_unittest_classes_under_pytest_ids(tmp_path: Path) -> None:
    """A unittest.TestCase run by pytest is named the pytest way."""
    files = {
        "test_tc.py": """
            import unittest

            class T(unittest.TestCase):
                def test_a(self):
                    self.assertEqual(1, 2)
        """
    }
    assert failing_tests(run_pytest(tmp_path, files)).failed == {"test_tc.py::T::test_a"}


# --- unittest, for real ---------------------------------------------------------------------------

UNITTEST_SUITE = {
    "test_u.py": """
        import unittest

        class C(unittest.TestCase):
            def test_ok(self):
                pass

            def test_bad(self):
                \"\"\"A docstring line: FAIL: test_fake (fake.Fake.test_fake)\"\"\"
                self.assertEqual(1, 2)

            def test_sub(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertLess(i, 1)

            def test_err(self):
                raise RuntimeError("x")

            @unittest.skip("no")
            def test_skip(self):
                pass

            @unittest.expectedFailure
            def test_xf(self):
                self.fail()
    """
}


def test_unittest_failures_and_errors_are_named_module_class_method(tmp_path: Path) -> None:
    """FAIL and ERROR blocks, subtests folded into their test; skip and expected failure ignored."""
    evidence = failing_tests(run_unittest(tmp_path, UNITTEST_SUITE, "test_u"))
    assert evidence == Evidence(
        runner="unittest",
        failed=frozenset({"test_u.C.test_bad", "test_u.C.test_sub", "test_u.C.test_err"}),
        complete=True,
    )


def test_unittest_verbose_output_gives_the_same_ids(tmp_path: Path) -> None:
    """-v adds per-test lines but not other ids."""
    quiet = failing_tests(run_unittest(tmp_path, UNITTEST_SUITE, "test_u"))
    assert failing_tests(run_unittest(tmp_path, UNITTEST_SUITE, "-v", "test_u")) == quiet


def test_the_old_unittest_header_normalises_to_the_same_id() -> None:
    """Before 3.11 the header said ``test_y (module.Class)``; the id is the same."""
    out = (
        "=" * 70
        + "\nFAIL: test_y (pkg.mod.Class)\n"
        + "-" * 70
        + "\n\nRan 2 tests in 0.001s\n\nFAILED (failures=1)\n"
    )
    assert failing_tests(out).failed == {"pkg.mod.Class.test_y"}


def test_a_subtest_message_with_newlines_cannot_pass_an_injected_id_as_complete(tmp_path: Path) -> None:
    """A forged ``====`` block inside a subtest message makes the names disagree with the count."""
    forged = "x\\n" + "=" * 70 + "\\nFAIL: test_innocent (test_i.I.test_innocent)\\nz"
    files = {
        "test_i.py": f"""
            import unittest

            class I(unittest.TestCase):
                def test_innocent(self):
                    pass

                def test_guilty(self):
                    with self.subTest(msg="{forged}"):
                        self.fail()
        """
    }
    evidence = failing_tests(run_unittest(tmp_path, files, "test_i"))
    assert "test_i.I.test_guilty" in evidence.failed
    assert evidence.complete is False


def test_an_import_error_is_a_named_failure(tmp_path: Path) -> None:
    """A module that does not import is unittest's _FailedTest, a stable id of its own."""
    out = run_unittest(tmp_path, {"test_gone.py": "import does_not_exist\n"}, "test_gone")
    evidence = failing_tests(out)
    assert evidence.runner == "unittest"
    assert evidence.failed == {"unittest.loader._FailedTest.test_gone"}


# --- recorded outputs of jest, vitest, go, cargo --------------------------------------------------

JS_MATH = frozenset(
    {
        "math.test.js > math > nested group > subtracts wrongly",
        "math.test.js > math > doubles 2",
        "math.test.js > top level fails",
    }
)
JS_SUITE_ERROR = frozenset({"src/log.test.js > logger > logs then fails", "src/broken.test.js"})
GO_CALC = {
    "example.com/evgo/calc/TestSub",
    "example.com/evgo/calc/TestTable",
    "example.com/evgo/calc/TestTable/two",
}
CARGO_LIB = {"tests::adds_wrong", "tests::inner::should_panic_but_does_not"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("jest-30.out", Evidence(runner="jest", failed=JS_MATH, complete=True)),
        ("jest-30-verbose-color.out", Evidence(runner="jest", failed=JS_MATH, complete=True)),
        ("jest-30-console-suite-error.out", Evidence(runner="jest", failed=JS_SUITE_ERROR, complete=True)),
        ("vitest-4-color.out", Evidence(runner="vitest", failed=JS_MATH, complete=True)),
        ("vitest-4-verbose-color.out", Evidence(runner="vitest", failed=JS_MATH, complete=True)),
        ("vitest-4-suite-error.out", Evidence(runner="vitest", failed=JS_SUITE_ERROR, complete=True)),
        ("go-1.19-no-panic.out", Evidence(runner="go", failed=frozenset(GO_CALC), complete=True)),
        (
            "go-1.19.out",  # a panic ends util's test binary: its later tests never ran
            Evidence(
                runner="go",
                failed=frozenset({*GO_CALC, "example.com/evgo/util/TestPanics", "example.com/evgo/broken"}),
                complete=False,
            ),
        ),
        ("cargo-1.95.out", Evidence(runner="cargo", failed=frozenset(CARGO_LIB), complete=False)),
        (
            "cargo-1.95-no-fail-fast.out",
            Evidence(
                runner="cargo",
                failed=frozenset({*CARGO_LIB, "integration_fails", "src/lib.rs - add (line 1)"}),
                complete=True,
            ),
        ),
    ],
)
def test_recorded_runner_outputs_name_their_failing_tests(name: str, expected: Evidence) -> None:
    """Each recorded real output gives its failing tests (and no id a test printed itself)."""
    assert failing_tests((FIXTURES / name).read_bytes()) == expected


def test_go_verbose_and_quiet_outputs_name_the_same_tests() -> None:
    """go test -v adds === RUN and --- PASS lines, not failing ids."""
    quiet = failing_tests((FIXTURES / "go-1.19.out").read_text(encoding="utf-8"))
    assert failing_tests((FIXTURES / "go-1.19-v.out").read_text(encoding="utf-8")) == quiet


def test_jest_output_cut_at_the_top_is_incomplete() -> None:
    """Losing the first failure block leaves fewer names than jest's count: not complete."""
    text = (FIXTURES / "jest-30.out").read_text(encoding="utf-8")
    cut = text[text.index("  ● math › doubles 2") :]
    evidence = failing_tests(cut)
    assert evidence.complete is False
    assert "math.test.js > math > nested group > subtracts wrongly" not in evidence.failed


def test_a_jest_test_title_with_a_newline_cannot_pass_an_injected_id_as_complete() -> None:
    """jest prints titles raw: a second ``  ● `` line from one title disagrees with the count."""
    text = (FIXTURES / "jest-30.out").read_text(encoding="utf-8")
    forged = text.replace("  ● top level fails", "  ● top level fails\n  ● innocent › test", 1)
    evidence = failing_tests(forged)
    assert "math.test.js > top level fails" in evidence.failed
    assert evidence.complete is False


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_cargo_test_for_real(tmp_path: Path) -> None:
    """A crate with a failing unit and integration test, run with --no-fail-fast."""
    crate = tmp_path / "crate"
    write(
        crate,
        {
            "Cargo.toml": '[package]\nname = "evcrate"\nversion = "0.1.0"\nedition = "2021"\n',
            "src/lib.rs": (FIXTURES / "sources" / "cargo-lib.rs").read_text(encoding="utf-8"),
            "tests/it.rs": (FIXTURES / "sources" / "cargo-it.rs").read_text(encoding="utf-8"),
        },
    )
    (crate / "src" / "lib.rs").write_text(
        (crate / "src" / "lib.rs").read_text(encoding="utf-8").replace("evcargo::", "evcrate::"),
        encoding="utf-8",
    )
    done = subprocess.run(
        ["cargo", "test", "--offline", "--no-fail-fast"],
        cwd=crate,
        env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    assert failing_tests(done.stdout) == Evidence(
        runner="cargo",
        failed=frozenset({*CARGO_LIB, "integration_fails", "src/lib.rs - add (line 1)"}),
        complete=True,
    )


# --- what is not a known runner -------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        "",
        "make: *** [Makefile:3: test] Error 1\n",
        "FAILED tests/test_x.py::test_y\nsomething went wrong\n",
        "test foo ... FAILED\n",
        "--- FAIL: TestX (0.00s)\n",
    ],
)
def test_output_without_a_runner_summary_is_unknown(output: str) -> None:
    """Failure-looking lines without the runner's own closing lines are no evidence: unknown."""
    assert failing_tests(output) == Evidence(runner="unknown", failed=frozenset(), complete=False)


def test_binary_garbage_is_unknown() -> None:
    """Random bytes (not UTF-8) are read without error and name nothing."""
    garbage = random.Random(14).randbytes(5 * 1024 * 1024)
    assert failing_tests(garbage).runner == "unknown"


@pytest.mark.timeout(60)
def test_fifty_megabytes_of_output_still_find_the_summary_at_the_end(tmp_path: Path) -> None:
    """Only the tail is read: a 50 MB log with pytest's summary at its end gives the right ids."""
    out = run_pytest(tmp_path, SUITE, "-q")
    noise = ("x" * 99 + "\n") * (50 * 1024 * 1024 // 100)
    evidence = failing_tests(noise + out)
    assert evidence == Evidence(runner="pytest", failed=frozenset(SUITE_FAILED), complete=True)


@pytest.mark.timeout(60)
def test_fifty_megabytes_of_one_line_is_unknown() -> None:
    """One enormous line without a newline is cut, scanned once and names nothing."""
    assert failing_tests(b"FAILED " * (50 * 1024 * 1024 // 7)).runner == "unknown"


def test_too_many_failing_names_are_capped_and_incomplete() -> None:
    """Past MAX_IDS names the set is cut, and says it is not the whole story."""
    n = testevidence.MAX_IDS + 50
    listed = "".join(f"    t{i}\n" for i in range(n))
    out = f"running {n} tests\n\nfailures:\n{listed}\ntest result: FAILED. 0 passed; {n} failed; 0 ignored\n"
    evidence = failing_tests(out)
    assert evidence.runner == "cargo"
    assert len(evidence.failed) == testevidence.MAX_IDS
    assert evidence.complete is False


def test_an_overlong_test_name_is_refused_and_makes_the_evidence_incomplete() -> None:
    """A name longer than MAX_ID_CHARS is not kept (nor cut into a wrong id)."""
    name = "t" * (testevidence.MAX_ID_CHARS + 1)
    out = (
        f"running 2 tests\n\nfailures:\n    {name}\n    short\n\ntest result: FAILED. 0 passed; 2 failed; 0\n"
    )
    assert failing_tests(out) == Evidence(runner="cargo", failed=frozenset({"short"}), complete=False)


# --- JUnit XML ------------------------------------------------------------------------------------


def test_pytest_junit_xml_names_the_failing_cases(tmp_path: Path) -> None:
    """pytest's --junitxml report: classname.name of each failure and error, complete."""
    report = tmp_path / "report.xml"
    run_pytest(tmp_path, SUITE, f"--junitxml={report}")
    evidence = failing_tests("whatever the text said", junit=report)
    assert evidence == Evidence(
        runner="junit",
        failed=frozenset(
            {
                "tests.test_math.test_wrong",
                "tests.test_math.test_param[2]",
                "tests.test_math.TestGroup.test_method",
            }
        ),
        complete=True,
    )


def test_junit_reruns_that_passed_are_not_failures(tmp_path: Path) -> None:
    """<flakyFailure> records a try that a later try passed; only <failure>/<error> count."""
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuite name="s" tests="2" failures="1" errors="0">'
        '<testcase classname="a.B" name="flaky"><flakyFailure message="once"/></testcase>'
        '<testcase classname="a.B" name="broken"><failure message="always"/></testcase>'
        "</testsuite>",
        encoding="utf-8",
    )
    assert from_junit(report) == Evidence(runner="junit", failed=frozenset({"a.B.broken"}), complete=True)


def test_junit_counts_that_disagree_make_it_incomplete(tmp_path: Path) -> None:
    """A suite claiming more failures than its cases show is not the whole story."""
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="s" failures="2"><testcase classname="a" name="x"><failure/></testcase>'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    assert from_junit(report) == Evidence(runner="junit", failed=frozenset({"a.x"}), complete=False)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<testsuite failures="1"><testcase classname="a" name="&lol3;"><failure/></testcase></testsuite>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<testsuite failures="1"><testcase classname="a" name="&x;"><failure/></testcase></testsuite>
"""


@pytest.mark.parametrize(
    "content",
    [BILLION_LAUGHS, EXTERNAL, "<testsuite><testcase", "not xml at all", "<html><body/></html>", "\xff\xfe"],
    ids=["entities", "external-entity", "truncated", "text", "not-junit", "garbage"],
)
def test_a_hostile_or_broken_junit_report_is_unknown(tmp_path: Path, content: str) -> None:
    """DOCTYPE/entities, cut-off or foreign XML give no evidence, and no exception."""
    report = tmp_path / "r.xml"
    report.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    assert from_junit(report) == Evidence()


def test_a_missing_junit_report_is_unknown_even_when_the_text_has_evidence(tmp_path: Path) -> None:
    """The command did not write its report: unknown, not a silent switch to the text."""
    out = run_pytest(tmp_path, SUITE, "-q")
    assert failing_tests(out, junit=tmp_path / "absent.xml") == Evidence()


def test_a_junit_report_that_is_a_link_is_refused(tmp_path: Path) -> None:
    """A symbolic link (planted by the tree under test) is not followed."""
    real = tmp_path / "real.xml"
    real.write_text(
        '<testsuite failures="0"><testcase classname="a" name="x"/></testsuite>', encoding="utf-8"
    )
    link = tmp_path / "link.xml"
    link.symlink_to(real)
    assert from_junit(real).runner == "junit"
    assert from_junit(link) == Evidence()


@pytest.mark.timeout(30)
def test_a_junit_report_that_is_a_fifo_or_a_folder_is_unknown_without_blocking(tmp_path: Path) -> None:
    """A FIFO nobody writes to would block a plain open(); a folder is no report."""
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    (tmp_path / "dir.xml").mkdir()
    assert from_junit(fifo) == Evidence()
    assert from_junit(tmp_path / "dir.xml") == Evidence()


def test_a_junit_report_over_the_size_cap_is_unknown(tmp_path: Path) -> None:
    """A report past MAX_JUNIT_BYTES is not parsed."""
    report = tmp_path / "big.xml"
    with report.open("wb") as f:
        f.write(b"<testsuite>")
        f.truncate(testevidence.MAX_JUNIT_BYTES + 1)
    assert from_junit(report) == Evidence()


def test_a_junit_path_with_a_nul_byte_is_unknown(tmp_path: Path) -> None:
    """A path the OS cannot open at all is unknown, not a ValueError."""
    assert from_junit(tmp_path / "a\0b.xml") == Evidence()


_PIECES = st.sampled_from(
    [
        "\n",
        "\r",
        "\x1b[31m",
        "=" * 70 + "\n",
        "FAIL: test_a (m.C.test_a)\n",
        "Ran 2 tests in 0.1s\n",
        "FAILED (failures=1)\n",
        "==== short test summary info ====\n",
        "FAILED t.py::x - y\n",
        "1 failed in 0.1s\n",
        "FAIL ./a.test.js\n",
        "  ● a › b\n",
        "Tests:       1 failed, 1 total\n",
        " FAIL  a > b\n",
        "      Tests  1 failed (1)\n",
        "--- FAIL: TestX (0.00s)\n",
        "FAIL\tpkg\t0.1s\n",
        "running 1 test\n",
        "failures:\n",
        "    x::y\n",
        "test result: FAILED. 0 passed; 1 failed;\n",
        "error: test failed, to rerun pass `--lib`\n",
    ]
)


@given(st.lists(st.one_of(_PIECES, st.text(max_size=20)), max_size=40))
def test_any_mix_of_runner_lines_gives_evidence_and_never_raises(pieces: list[str]) -> None:
    """Shuffled fragments of every format: some Evidence comes back, with bounded, non-empty ids."""
    evidence = failing_tests("".join(pieces))
    assert evidence.runner == "unknown" or set(evidence.runner.split("+")) <= set(testevidence.RUNNERS)
    assert all(0 < len(name) <= testevidence.MAX_ID_CHARS for name in evidence.failed)
    assert evidence.runner != "unknown" or (not evidence.failed and not evidence.complete)


@pytest.mark.parametrize("kind", [str, bytes])
def test_the_line_cut_at_the_top_of_a_long_output_is_not_read(kind: type) -> None:
    """Past MAX_OUTPUT_CHARS the first kept line is a fragment (here ``t.py::x FAILED`` of a longer
    line) and is dropped, as text or as bytes."""
    head = "z" * 10 + "t.py::x FAILED\n"
    tail = "t.py::y FAILED\n1 failed in 0.1s\n"
    pad = testevidence.MAX_OUTPUT_CHARS + 10 - len(head) - len(tail)
    text = head + "q" * (pad % 100) + ("p" * 99 + "\n") * (pad // 100) + tail
    assert len(text) == testevidence.MAX_OUTPUT_CHARS + 10
    output = text.encode() if kind is bytes else text
    assert failing_tests(output).failed == {"t.py::y"}
