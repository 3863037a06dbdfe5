import io
import json
import subprocess
import sys
import types

import pytest
from rich.console import Console

from trlx.feedback.cli import label_main, load_prompts
from trlx.feedback.label import parse_answer, run_labelling_session, sample_candidates
from trlx.feedback.notebook import label_in_notebook
from trlx.feedback.store import read_comparisons

TASKS = [
    ("The movie was", [" great fun", " a [bold]<waste>[/bold]"]),
    ("I thought the plot", [" dull", " brilliant", " fine"]),
    ("The acting", [" awful", " wonderful"]),
    ("In the end", [" I loved it", " I hated it"]),
]


def scripted(answers):
    """An input() stand-in that replays answers, then behaves like Ctrl-D."""
    queue = list(answers)
    asked = []

    def input_fn(question):
        asked.append(question)
        if not queue:
            raise EOFError
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    input_fn.asked = asked
    return input_fn


def quiet_console():
    return Console(file=io.StringIO(), width=100, color_system=None)


def outcomes(path):
    return [(c.prompt, c.choice, c.tie, c.skipped) for c in read_comparisons(path)]


def test_parse_answer():
    assert parse_answer(" 2 ", 3) == 1
    assert parse_answer("T", 2) == "tie"
    assert parse_answer("s", 2) == "skip"
    assert parse_answer("q", 2) == "quit"
    assert parse_answer("3", 2) is None
    assert parse_answer("0", 2) is None
    assert parse_answer("", 2) is None


def test_scripted_session_records_the_right_choices(tmp_path):
    out = tmp_path / "prefs.jsonl"
    console = quiet_console()
    summary = run_labelling_session(TASKS, out, console, scripted(["2", "x", "9", "t", "3", "s"]), labeller="ann")
    # "x" and "9" are not answers for 3 candidates, "3" is not one for 2: each is asked again. Scripted input then
    # runs out, which ends the session like Ctrl-D.
    assert outcomes(out) == [
        ("The movie was", 1, False, False),
        ("I thought the plot", None, True, False),
        ("The acting", None, False, True),
    ]
    assert summary.labelled == 3 and summary.ties == 1 and summary.skipped == 1
    assert summary.quit and summary.remaining == 1 and summary.total == 4
    assert all(c.labeller == "ann" for c in read_comparisons(out))
    shown = console.file.getvalue()
    assert "The movie was" in shown and "[1]" in shown and "[3]" in shown
    # Model output is shown literally, never interpreted as rich markup.
    assert "[bold]<waste>[/bold]" in shown


def test_quit_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "prefs.jsonl"
    first = run_labelling_session(TASKS, out, quiet_console(), scripted(["1", "q"]))
    assert first.quit and first.labelled == 1 and first.remaining == 3
    assert outcomes(out) == [("The movie was", 0, False, False)]

    console = quiet_console()
    answers = scripted(["3", "2", "1"])
    second = run_labelling_session(TASKS, out, console, answers)
    assert not second.quit and second.already_done == 1 and second.labelled == 3 and second.remaining == 0
    assert len(answers.asked) == 3
    assert "The movie was" not in console.file.getvalue()
    assert outcomes(out) == [
        ("The movie was", 0, False, False),
        ("I thought the plot", 2, False, False),
        ("The acting", 1, False, False),
        ("In the end", 0, False, False),
    ]

    third_answers = scripted([])
    third = run_labelling_session(TASKS, out, quiet_console(), third_answers)
    assert third.labelled == 0 and third.already_done == 4 and third_answers.asked == []


def test_crash_with_a_torn_line_then_resume(tmp_path):
    out = tmp_path / "prefs.jsonl"
    with pytest.raises(RuntimeError, match="power cut"):
        run_labelling_session(TASKS, out, quiet_console(), scripted(["2", "1", RuntimeError("power cut")]))
    assert [p for p, *_ in outcomes(out)] == ["The movie was", "I thought the plot"]
    # The process died while writing the third judgement: half a JSON line, no newline.
    third = json.dumps({"prompt": "The acting", "candidates": TASKS[2][1], "choice": 1})
    with open(out, "a", encoding="utf-8") as f:
        f.write(third[: len(third) // 2])

    answers = scripted(["2", "t"])
    with pytest.warns(UserWarning, match=r"prefs\.jsonl:3: malformed"):
        summary = run_labelling_session(TASKS, out, quiet_console(), answers)
    assert summary.already_done == 2 and summary.labelled == 2 and summary.remaining == 0
    with pytest.warns(UserWarning, match=r":3: "):
        recorded = read_comparisons(out, skip_malformed=True)
    assert [(c.prompt, c.choice, c.tie) for c in recorded] == [
        ("The movie was", 1, False),
        ("I thought the plot", 0, False),
        ("The acting", 1, False),
        ("In the end", None, True),
    ]
    # The torn fragment stays on its own line; it did not swallow the next judgement.
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5


def test_repeated_tasks_are_asked_once(tmp_path):
    out = tmp_path / "prefs.jsonl"
    summary = run_labelling_session([TASKS[0], TASKS[0], TASKS[2]], out, quiet_console(), scripted(["1", "2"]))
    assert summary.total == 2 and summary.labelled == 2
    assert [p for p, *_ in outcomes(out)] == ["The movie was", "The acting"]


def test_sample_candidates_left_pads_and_is_seeded(tiny_gpt2_path):
    prompts = ["the movie", "i really loved this film and the acting", "bad"]
    gen = {"max_new_tokens": 6}
    first = sample_candidates(tiny_gpt2_path, prompts, num_candidates=3, gen_kwargs=gen, seed=1, batch_size=2)
    again = sample_candidates(tiny_gpt2_path, prompts, num_candidates=3, gen_kwargs=gen, seed=1, batch_size=2)
    assert first == again
    assert len(first) == 3 and all(len(c) == 3 for c in first)
    assert all(isinstance(text, str) and text.strip() for group in first for text in group)
    # Random sampling from a random model: the three candidates of a prompt are not all the same text.
    assert any(len(set(group)) > 1 for group in first)
    # Left padding: greedy continuations of a short prompt batched with a long one match those generated alone.
    greedy = {"max_new_tokens": 6, "top_k": 1}  # sampling from the single top token
    batched = sample_candidates(tiny_gpt2_path, prompts, num_candidates=2, gen_kwargs=greedy, batch_size=3)
    alone = sample_candidates(tiny_gpt2_path, prompts, num_candidates=2, gen_kwargs=greedy, batch_size=1)
    assert batched == alone


def test_label_cli_resumes_with_the_same_candidates(tmp_path, tiny_gpt2_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the movie was"}\n"the acting"\n{"prompt": "the movie was"}\n', encoding="utf-8")
    out = tmp_path / "prefs.jsonl"
    argv = ["--model", str(tiny_gpt2_path), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4"]
    assert label_main(argv, console=quiet_console(), input_fn=scripted(["2", "q"])) == 0
    first = read_comparisons(out)
    assert len(first) == 1 and first[0].choice == 1
    # The same options: the cached candidates come back, however sampling would turn out now.
    assert label_main(argv, console=quiet_console(), input_fn=scripted(["1"])) == 0
    recorded = read_comparisons(out)
    assert [c.prompt for c in recorded] == ["the movie was", "the acting"]
    assert recorded[0] == first[0]
    cached = [json.loads(line) for line in (tmp_path / "prefs.candidates.jsonl").read_text().splitlines()]
    assert [c["candidates"] for c in cached] == [c.candidates for c in recorded]
    assert cached[0]["sampling"]["seed"] == 0 and cached[0]["sampling"]["model"] == str(tiny_gpt2_path)


@pytest.mark.parametrize("change", [["--seed", "7"], ["--num-candidates", "3"], ["--model", "other"]])
def test_label_cli_refuses_cached_candidates_sampled_otherwise(tmp_path, tiny_gpt2_path, change):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\n", encoding="utf-8")
    out = tmp_path / "prefs.jsonl"
    argv = ["--model", str(tiny_gpt2_path), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4"]
    assert label_main(argv, console=quiet_console(), input_fn=scripted(["q"])) == 0
    before = (tmp_path / "prefs.candidates.jsonl").read_text()
    console = quiet_console()
    changed = [*argv, *change] if change[0] != "--model" else ["--model", "other", *argv[2:]]
    assert label_main(changed, console=console, input_fn=scripted(["1"])) == 2
    message = " ".join(console.file.getvalue().split())
    assert f"holds candidates for 1 of these prompts sampled with other options ({change[0]} " in message
    assert "add --resample" in message
    assert (tmp_path / "prefs.candidates.jsonl").read_text() == before and not out.exists()


def test_label_cli_resample_draws_new_candidates_and_keeps_judgements(tmp_path, tiny_gpt2_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\n", encoding="utf-8")
    out = tmp_path / "prefs.jsonl"
    argv = ["--model", str(tiny_gpt2_path), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4"]
    assert label_main(argv, console=quiet_console(), input_fn=scripted(["1"])) == 0
    again = [*argv, "--num-candidates", "3", "--resample"]
    assert label_main(again, console=quiet_console(), input_fn=scripted(["3"])) == 0
    first, second = read_comparisons(out)
    assert (len(first.candidates), first.choice) == (2, 0) and (len(second.candidates), second.choice) == (3, 2)


def test_ctrl_c_ends_labelling_with_status_130_and_keeps_answers(tmp_path, tiny_gpt2_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\nthe acting\n", encoding="utf-8")
    out = tmp_path / "prefs.jsonl"
    argv = ["--model", str(tiny_gpt2_path), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4"]
    assert label_main(argv, console=quiet_console(), input_fn=scripted(["2", KeyboardInterrupt()])) == 130
    assert [c.choice for c in read_comparisons(out)] == [1]


def test_label_cli_rejects_bad_arguments(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n", encoding="utf-8")
    base = ["--model", "unused", "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl")]
    with pytest.raises(SystemExit) as exit_info:
        label_main([*base, "--num-candidates", "1"])
    assert exit_info.value.code == 2 and "--num-candidates must be >= 2" in capsys.readouterr().err
    console = quiet_console()
    assert label_main([*base[:3], str(tmp_path / "missing.csv"), *base[4:]], console=console) == 2
    assert "prompts file not found" in console.file.getvalue()


def test_load_prompts_errors_name_the_line(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a\n\nb\na\n", encoding="utf-8")
    assert load_prompts(txt) == ["a", "b"]
    assert load_prompts(txt, limit=1) == ["a"]
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.jsonl:2: "):
        load_prompts(bad)
    with pytest.raises(FileNotFoundError, match=r"p\.csv"):
        load_prompts(tmp_path / "p.csv")


def test_terminal_tools_do_not_import_jupyter():
    code = (
        "import sys, trlx.feedback, trlx.feedback.cli, trlx.feedback.label\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ipywidgets', 'IPython', 'ipykernel', 'jupyter_client'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_notebook_without_ipywidgets_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` raise ImportError
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        label_in_notebook(TASKS, tmp_path / "prefs.jsonl")


def _fake_ipywidgets():
    """Just enough of ipywidgets to drive label_in_notebook: widgets are plain objects, clicks call handlers."""

    class Widget:
        def __init__(self, children=(), description="", value=""):
            self.children, self.description, self.value = tuple(children), description, value
            self.handlers = []

        def on_click(self, handler):
            self.handlers.append(handler)

        def click(self):
            for handler in self.handlers:
                handler(self)

    return types.SimpleNamespace(HTML=Widget, HBox=Widget, VBox=Widget, Button=Widget)


def test_notebook_buttons_record_and_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", _fake_ipywidgets())
    out = tmp_path / "prefs.jsonl"

    def click(box, label):
        view, buttons = box.children
        (button,) = [b for b in buttons.children if b.description == label]
        button.click()
        return view.value

    box = label_in_notebook(TASKS, out, display=False)
    assert "The movie was" in box.children[0].value and "&lt;waste&gt;" in box.children[0].value  # HTML-escaped
    assert [b.description for b in box.children[1].children] == ["1", "2", "Tie", "Skip"]
    click(box, "2")
    assert [b.description for b in box.children[1].children] == ["1", "2", "3", "Tie", "Skip"]
    click(box, "Tie")

    resumed = label_in_notebook(TASKS, out, display=False)
    assert "The acting" in resumed.children[0].value
    click(resumed, "Skip")
    final_view = click(resumed, "1")
    assert "All done" in final_view and resumed.children[1].children == ()
    assert outcomes(out) == [
        ("The movie was", 1, False, False),
        ("I thought the plot", None, True, False),
        ("The acting", None, False, True),
        ("In the end", 0, False, False),
    ]
