"""Human feedback: collect comparisons between samples (terminal or notebook) and store them durably."""

from trlx.feedback.label import LabellingSummary, run_labelling_session, sample_candidates
from trlx.feedback.notebook import label_in_notebook
from trlx.feedback.store import Comparison, append_comparison, read_comparisons

__all__ = [
    "Comparison",
    "LabellingSummary",
    "append_comparison",
    "label_in_notebook",
    "read_comparisons",
    "run_labelling_session",
    "sample_candidates",
]
