"""One tiny run via `trlx.train` (PPO, or any method.name: sft/dpo train on a built-in dataset), launched by the
distributed tests under `torchrun` (or run plainly).

    python ppo_run.py MODEL_DIR OUT_DIR '{"train.total_steps": 4, "num_prompts": 7, ...}'

(`num_prompts` / `num_eval_prompts` pick how many of the 7 prompts to use; other keys are config overrides.)

Besides the usual checkpoint folder, every process writes to OUT_DIR:
  rewards_<rank>.jsonl   one row per reward_fn call: split (train/eval), its prompts and the scores it returned
  weights_<rank>.safetensors   its policy weights (language model, and value head for ppo) after training
"""

import faulthandler
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A hung collective would otherwise only show up as the launcher's timeout: dump every thread's stack and exit.
faulthandler.dump_traceback_later(int(os.environ.get("TRLX_TEST_HANG_S", "240")), exit=True)

from safetensors.torch import save_file  # noqa: E402

import trlx  # noqa: E402
from trlx.data.default_configs import default_ppo_config  # noqa: E402

GOOD = {"good", "great", "love", "best", "fun"}


def main() -> None:
    model_dir, out_dir, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    num_prompts, num_eval_prompts = overrides.pop("num_prompts", 7), overrides.pop("num_eval_prompts", 5)
    rank = int(os.environ.get("RANK", 0))
    config = default_ppo_config().evolve(
        **{
            "model.model_path": model_dir,
            "model.num_layers_unfrozen": -1,
            "tokenizer.tokenizer_path": None,
            "train.seq_length": 24,
            "train.batch_size": 4,
            "train.total_steps": 4,
            "train.eval_interval": 1000,
            "train.checkpoint_interval": 1000,
            "train.checkpoint_dir": str(out_dir / "ckpt"),
            "method.num_rollouts": 8,
            "method.chunk_size": 4,
            "method.ppo_epochs": 1,
            "method.gen_kwargs": {"max_new_tokens": 6, "do_sample": True, "top_k": 0, "top_p": 1.0},
            "optimizer.kwargs": {"lr": 1e-2},
            "scheduler.name": "constant",
            "scheduler.kwargs": {},
            **overrides,
        }
    )

    def reward_fn(samples, prompts, outputs, split, **kwargs):
        scores = [float(sum(w in GOOD for w in o.split())) + 0.1 * len(o.split()) for o in outputs]
        with (out_dir / f"rewards_{rank}.jsonl").open("a") as f:
            f.write(json.dumps({"split": split[0], "scores": scores, "prompts": prompts}) + "\n")
        return scores

    words = ["the movie was", "this film is", "i think it", "the acting", "the plot", "a story", "the music"]
    prompts = [{"prompt": p, "split": "train"} for p in words[:num_prompts]]
    eval_prompts = [{"prompt": p, "split": "eval"} for p in words[:num_eval_prompts]]
    if config.method.trains_on_samples:  # sft / dpo / ilql: a static dataset; eval prompts scored as above
        samples = {
            "sft": [[w, " good great fun"] for w in words],
            "ilql": [[w, " good great fun" if i % 2 else " the the the"] for i, w in enumerate(words)],
            "dpo": [(w, " good great fun", " the the the") for w in words],
        }[config.method.name]
        rewards = [float(i % 2) for i in range(len(samples))] if config.method.name == "ilql" else None
        trainer = trlx.train(
            samples=samples, rewards=rewards, reward_fn=reward_fn, eval_prompts=eval_prompts, config=config
        )
    else:
        trainer = trlx.train(reward_fn=reward_fn, prompts=prompts, eval_prompts=eval_prompts, config=config)

    policy = trainer.accelerator.unwrap_model(trainer.policy)
    state = trainer.accelerator.get_state_dict(trainer.policy, unwrap=True)  # collective under ZeRO-3
    if state is None or not state:  # ZeRO-3 non-main processes get nothing
        state = {k: v for k, v in policy.state_dict().items()}
    weights = {k: v.detach().float().cpu().contiguous().clone() for k, v in state.items()}
    save_file(weights, str(out_dir / f"weights_{rank}.safetensors"))
    accelerator = trainer.accelerator
    info = {"distributed_type": str(accelerator.distributed_type), "num_processes": accelerator.num_processes}
    (out_dir / f"done_{rank}.json").write_text(json.dumps(info))
    # Leave the process group together: a process exiting while another still tears down its (gloo/DeepSpeed)
    # threads can abort at interpreter exit.
    accelerator.wait_for_everyone()  # without it, about one run in six hung in gloo teardown
    accelerator.end_training()


if __name__ == "__main__":
    main()
