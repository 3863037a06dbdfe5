"""IMDB sentiment demo: PPO teaches a small LM to continue review openings positively.

Pieces: `build_prompts` (review openings, held-out eval split) and `vader_reward` / `LearnedSentimentReward`
(rewards on a [-1, 1] scale); the run's report.html is every run's (`trlx.report`).
"""

from trlx.demos.sentiment.prompts import build_prompts
from trlx.demos.sentiment.rewards import LearnedSentimentReward, train_or_load_sentiment_rm, vader_reward

__all__ = [
    "LearnedSentimentReward",
    "build_prompts",
    "train_or_load_sentiment_rm",
    "vader_reward",
]
