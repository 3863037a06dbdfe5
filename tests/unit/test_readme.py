"""The README's promises: two set-up commands first, and a config reference that matches the code."""

import re
from pathlib import Path

from conftest import readme_train_commands

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


def test_every_config_the_readme_trains_on_exists_and_resolves(monkeypatch):
    """The README once named configs/ppo_tiny.yml, which never existed: each `trlx train CONFIG` line must name
    a file that loads, with its overrides, and whose reward function and prompt files resolve."""
    from trlx.config import TRLConfig
    from trlx.task import load_function, load_prompts

    commands = readme_train_commands()
    assert len(commands) >= 2
    monkeypatch.chdir(README.parent)  # the README's commands run from the repository root
    for words in commands:
        start = words.index("train") + 1
        config = TRLConfig.load_yaml(words[start]).with_overrides(words[start + 1 :])
        assert callable(load_function(config.task.reward_fn, "task.reward_fn"))
        assert len(load_prompts(config.task.prompts)) >= config.method.num_rollouts
        assert load_prompts(config.task.eval_prompts)


def test_cli_help_names_a_config_that_exists():
    from trlx import cli

    epilog = re.search(r"example: trlx train (\S+)", Path(cli.__file__).read_text()).group(1)
    assert (README.parent / epilog).is_file(), epilog
