"""What every command line owes a user who typed a bad value, checked the same way for each.

A command's ``main(argv)`` is called in this process: an exception that escapes it is the
traceback the user would have seen, and fails the test with that traceback. Otherwise the
exit status must be 2 (usage) or 1 (the world refused: a file that cannot be read, a folder
that cannot be written), never 0, and the last line on stderr must name the argument.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import string
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    code: object
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def run_main(main: Callable[[list[str]], int], argv: Sequence[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_refused(main: Callable[[list[str]], int], argv: Sequence[str], names: str | Sequence[str]) -> Outcome:
    """``argv`` is refused with exit 1 or 2 and a last stderr line that names one of ``names``."""
    names = (names,) if isinstance(names, str) else tuple(names)
    outcome = run_main(main, argv)
    assert outcome.code in (1, 2), f"{list(argv)}: exit {outcome.code!r}, stderr: {outcome.stderr[-600:]!r}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert any(n in outcome.last_line for n in names), (
        f"{list(argv)}: the last line does not name {names}: {outcome.last_line!r}"
    )
    return outcome


def load_script(path: Path) -> ModuleType:
    """A script without a .py suffix (scripts/predict, scripts/roll-model) as a module, not run."""
    name = path.name.replace("-", "_") + "_cli"
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# --- values that are bad by construction (never filtered with the code under test) ----------

NAMEISH = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)

bad_numbers = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "", " ", "0x10", "1,5", "five"]),
    st.floats(max_value=0, allow_nan=False).map(repr),
    st.integers(max_value=0).map(str),
    st.text(string.ascii_letters + "!@%&*", min_size=1, max_size=8),
)

bad_ints = st.one_of(
    st.integers(max_value=0).map(str),
    st.sampled_from(["nan", "inf", "1.5", "", "one", "2e3"]),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)).map(repr),
)

bad_ports = st.one_of(
    st.integers(min_value=65536),
    st.integers(max_value=0),
).map(str) | st.sampled_from(["", "http", "8o", "1.5", "nan"])

bad_urls = st.one_of(
    # a port no socket has
    st.one_of(st.integers(min_value=65536, max_value=10**12), st.integers(max_value=-1)).map(
        lambda p: f"http://127.0.0.1:{p}"
    ),
    st.text(string.ascii_letters, min_size=1, max_size=6).map(lambda p: f"http://edge:{p}"),
    # not http(s)
    st.sampled_from(["ftp", "file", "mqtt", "htp", "ws"]).map(lambda s: f"{s}://edge:31380"),
    # no scheme or no host
    NAMEISH.map(lambda h: f"{h}:31380"),
    st.sampled_from(["http://", "https://:80", "http:///model", "", "//edge:1"]),
    # a host with a character no host name has
    st.tuples(NAMEISH, st.sampled_from(list(" _!$,;<>\"'{}|\\^`\t\x00é"))).map(lambda t: f"http://{t[0]}{t[1]}x:80"),
    # broken IPv6 brackets
    st.text(string.hexdigits + ":", max_size=8).map(lambda t: f"http://[{t}"),
)

bad_model_names = st.one_of(
    st.just(""),
    st.text(string.ascii_lowercase, min_size=41, max_size=60),
    st.tuples(NAMEISH, st.sampled_from(list("ABZ_/. ?#%é"))).map(lambda t: t[0] + t[1] + t[0]),
    NAMEISH.map(lambda n: "-" + n),
    NAMEISH.map(lambda n: n + "-"),
)


def missing_path(tmp: Path) -> st.SearchStrategy[str]:
    return NAMEISH.map(lambda n: str(tmp / "nosuch" / f"{n}.x"))
