"""Ready-made text datasets used by the demos and examples (data ships inside pip packages, no downloads)."""

from trlx.datasets.imdb import Review, clean_review, load_imdb

__all__ = ["Review", "clean_review", "load_imdb"]
