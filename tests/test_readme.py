"""README's two set-up commands exist, and CI runs the same test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)[:2]


def test_readme_starts_with_a_demo_command_and_a_test_command():
    demo, tests = readme_commands()
    assert demo.startswith("python3 -m venv .venv") and demo.endswith("streamer demo --events 3000")
    assert tests.startswith("python3 -m venv .venv") and tests.endswith("-m pytest")
    assert "torch==2.13.0" in demo.split("&&")[1] and "torch==2.13.0" in tests.split("&&")[1]


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_python_api_example_in_the_readme_runs():
    import doctest

    block = re.search(r"### Python API.*?```python\n(.+?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    test = doctest.DocTestParser().get_doctest(block, {}, "README: Python API", "README.md", 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.tries >= 6 and runner.failures == 0
