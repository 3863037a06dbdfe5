"""Run output helpers: progress bars where a person watches, quiet library output."""

import logging
import sys
import types

from transformers.utils import logging as hf_logging

import trlx.logging  # noqa: F401  (installs the DeepSpeed notice filter)
from trlx.logging import progress_enabled, quiet_transformers


def fake_ipython(monkeypatch, shell_name):
    shell = type(shell_name, (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_progress_bar_in_a_notebook_but_not_in_a_pipe_or_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not progress_enabled(None)  # a pipe
    fake_ipython(monkeypatch, "TerminalInteractiveShell")
    assert not progress_enabled(None)  # IPython in a terminal without a TTY: still a pipe
    fake_ipython(monkeypatch, "ZMQInteractiveShell")
    assert progress_enabled(None)  # a Jupyter kernel
    monkeypatch.setenv("CI", "1")
    assert not progress_enabled(None)
    assert progress_enabled(True) and not progress_enabled(False)  # an explicit setting wins


def test_quiet_transformers_restores_the_users_setting():
    hf_logging.enable_progress_bar()
    with quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with quiet_transformers():
        pass
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_only_deepspeeds_no_gpu_notice_is_filtered():
    logger = logging.getLogger("DeepSpeed")

    def record(message):
        return logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record("Setting accelerator to CPU. If you have GPU or other accelerator, ..."))
    assert logger.filter(record("ZeRO stage 3: partitioning parameters"))
