"""Label comparisons in a Jupyter notebook with buttons instead of typed answers.

Same queue, same store and same resume rules as the terminal session (``trlx.feedback.label``); only the front end
differs. ipywidgets is imported inside ``label_in_notebook`` so that importing trlx never pulls in Jupyter.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from typing import Any

from trlx.feedback.label import Judgement, LabellingQueue, Task

__all__ = ["label_in_notebook"]


def _task_html(queue: LabellingQueue, done_now: int) -> str:
    task = queue.current
    if task is None:
        return f"<b>All done.</b> {done_now} judgement(s) saved to <code>{html.escape(str(queue.out_path))}</code>."
    prompt, candidates = task
    number = queue.already_done + done_now + 1
    parts = [
        f"<h4>Comparison {number} of {queue.total}</h4>",
        f"<p><b>Prompt</b></p><pre style='white-space: pre-wrap'>{html.escape(prompt)}</pre>",
    ]
    for i, candidate in enumerate(candidates, start=1):
        parts.append(f"<p><b>[{i}]</b></p><pre style='white-space: pre-wrap'>{html.escape(candidate)}</pre>")
    return "\n".join(parts)


def label_in_notebook(
    tasks: Iterable[Task], out_path: str | os.PathLike[str], labeller: str | None = None, display: bool = True
) -> Any:
    """Show one task at a time with a button per candidate plus Tie and Skip; returns the widget box.

    Each click appends the judgement to ``out_path`` immediately, so closing the notebook loses nothing and
    re-running the cell resumes. ``display=False`` returns the widget without displaying it (for embedding).
    """
    try:
        import ipywidgets as widgets
    except ImportError as err:
        raise ImportError(
            "label_in_notebook needs ipywidgets (pip install ipywidgets); "
            "outside a notebook use `trlx label` or trlx.feedback.run_labelling_session"
        ) from err

    queue = LabellingQueue(tasks, out_path, labeller=labeller)
    view = widgets.HTML()
    buttons = widgets.HBox()
    box = widgets.VBox([view, buttons])
    done_now = 0

    def on_judgement(judgement: Judgement) -> None:
        nonlocal done_now
        queue.record(judgement)
        done_now += 1
        refresh()

    def make_button(label: str, judgement: Judgement) -> Any:
        button = widgets.Button(description=label)
        button.on_click(lambda _button: on_judgement(judgement))
        return button

    def refresh() -> None:
        view.value = _task_html(queue, done_now)
        task = queue.current
        if task is None:
            buttons.children = ()
            return
        # Candidate count can differ between tasks, so the buttons are rebuilt for each one.
        choices = [make_button(str(i + 1), i) for i in range(len(task[1]))]
        buttons.children = (*choices, make_button("Tie", "tie"), make_button("Skip", "skip"))

    refresh()
    if display:
        from IPython.display import display as show

        show(box)
    return box
