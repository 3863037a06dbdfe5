"""The README's promises: two set-up commands first, and a config reference that matches the code."""

import re
from pathlib import Path

from trlx.config import readme_tables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_generated_tables_are_in_sync():
    text = README.read_text()
    for (start, end), expected in readme_tables().items():
        assert start in text and end in text, f"README lacks the {start} ... {end} markers"
        table = text.split(start)[1].split(end)[0].strip()
        assert table == expected, (
            f"README table {start} is stale: run "
            "python -c 'from trlx.config import update_readme_reference; update_readme_reference()'"
        )


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
