"""The task section: reward functions by import path and prompts from files."""

import pytest

from trlx.task import load_function, load_object, load_prompts


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n  second\n")
    assert load_prompts(str(tmp_path / "p.txt")) == ["first prompt", "  second"]
    (tmp_path / "p.jsonl").write_text('"a"\n{"prompt": "b", "label": 1}\n')
    assert load_prompts(str(tmp_path / "p.jsonl")) == ["a", {"prompt": "b", "label": 1}]
    (tmp_path / "p.csv").write_text("prompt,label\nhello,1\nbye,0\n")
    assert load_prompts(str(tmp_path / "p.csv")) == [
        {"prompt": "hello", "label": "1"},
        {"prompt": "bye", "label": "0"},
    ]


def test_prompt_file_errors_name_the_place(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON string"):
        load_prompts(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: not valid JSON"):
        load_prompts(str(tmp_path / "broken.jsonl"))
    (tmp_path / "bad.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        load_prompts(str(tmp_path / "bad.csv"))
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_functions_and_prompt_lists_by_import_path(tmp_path):
    (tmp_path / "my_task.py").write_text(
        "PROMPTS = ['x', 'y']\ndef make():\n    return ['z']\ndef reward(samples, **kw):\n    return [1.0] * len(samples)\n"
    )
    assert load_prompts(f"{tmp_path}/my_task.py:PROMPTS") == ["x", "y"]
    assert load_prompts(f"{tmp_path}/my_task.py:make") == ["z"]
    assert load_function(f"{tmp_path}/my_task.py:reward", "reward_fn")(["a", "b"]) == [1.0, 1.0]
    assert load_object("math:pi") == pytest.approx(3.14159, abs=1e-5)


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("no_colon", ValueError, "must look like 'module:name'"),
        ("surely_not_a_module_xyz:f", ImportError, "cannot import module"),
        ("math:no_such_name", AttributeError, "has no attribute 'no_such_name'"),
        ("/nonexistent/file.py:f", FileNotFoundError, "not found"),
    ],
)
def test_bad_import_paths(spec, error, message):
    with pytest.raises(error, match=message):
        load_object(spec, "task.reward_fn")


def test_non_callable_reward():
    with pytest.raises(TypeError, match="is not callable"):
        load_function("math:pi", "task.reward_fn")


def test_module_in_the_working_directory_imports_without_it_on_sys_path(tmp_path, monkeypatch):
    """The `trlx` console script does not put the working directory on sys.path (`python -m trlx` does);
    `task.reward_fn: my_rewards:fn` must import the same under both."""
    (tmp_path / "cwd_rewards_for_test.py").write_text("def fn(samples, **kw):\n    return [1.0] * len(samples)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    fn = load_function("cwd_rewards_for_test:fn", "task.reward_fn")
    assert fn(["a", "b"]) == [1.0, 1.0]


def test_samples_table_keeps_non_ascii_text_readable(tmp_path):
    from trlx.logging import MetricsLogger

    logger = MetricsLogger(tmp_path)
    logger.log_samples(3, [{"prompt": "Le café", "output": " était très bon ☕", "reward": 1.0}])
    logger.close()
    text = (tmp_path / "samples.jsonl").read_text(encoding="utf-8")
    assert "Le café" in text and "très bon ☕" in text
