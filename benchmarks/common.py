"""Shared by the benchmark scripts (each is run as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

# Review openings for the 135M model; the tiny model's word-level tokenizer maps unknown words to [UNK].
PROMPTS = [
    "The movie was",
    "I went to see this film because",
    "The acting in this one",
    "Honestly, the plot",
    "My favourite scene is when",
    "The director clearly",
    "After the first hour",
    "This is the kind of film that",
]
