"""README stays true: the quick start is two lines, CI runs the second one verbatim, and every
method it names exists."""

import re
from pathlib import Path

from xmodal.methods import method_names

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_lines_and_ci_runs_the_test_line():
    demo, tests = quick_start()
    assert demo.endswith("xmodal demo") and tests.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    kept = ("export XMODAL_CUDA=ON", "export XMODAL_REQUIRE_CUDA_BUILD=1")  # CI builds and requires CUDA
    exports = [i for i, line in enumerate(ci) if line.startswith(kept)]
    assert len(exports) == 2 and max(exports) < ci.index(tests)


def test_readme_names_only_methods_that_exist():
    named = set(re.findall(r"--method (\w+)", README))
    assert named and named <= set(method_names())
    classes = set(re.findall(r"xmodal\.methods\.(\w+)\(", README))
    import xmodal.methods

    assert classes and all(hasattr(xmodal.methods, name) for name in classes)
