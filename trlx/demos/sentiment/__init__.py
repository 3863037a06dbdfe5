"""IMDB sentiment demo: PPO teaches a small LM to continue review openings positively.

Pieces: `build_prompts` (review openings, held-out eval split), `vader_reward` / `LearnedSentimentReward`
(rewards on a [-1, 1] scale) and `plot_reward_curve` / `write_samples_html` (run artifacts).
"""

from trlx.demos.sentiment.prompts import build_prompts
from trlx.demos.sentiment.report import plot_reward_curve, write_samples_html
from trlx.demos.sentiment.rewards import LearnedSentimentReward, train_or_load_sentiment_rm, vader_reward

__all__ = [
    "LearnedSentimentReward",
    "build_prompts",
    "plot_reward_curve",
    "train_or_load_sentiment_rm",
    "vader_reward",
    "write_samples_html",
]
