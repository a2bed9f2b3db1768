"""tinker-cookbook's own RL loop (``tinker_cookbook.rl.train``, importance sampling) on mathrl's
problems, against a Tinker API: the hosted service, or ``mathrl serve --tinker`` on this machine.

    mathrl serve --tinker --model tiny --port 8010 &
    TINKER_API_KEY=tml-local python examples/cookbook_rl.py --base-url http://127.0.0.1:8010 \\
        --model tiny --log-path runs/cookbook_rl --steps 20

Rerun the same command after a crash (of this script or of the server): the cookbook resumes
from the last checkpoint in ``--log-path``.
"""

import argparse
import asyncio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="tiny", help="the base model's name on the server")
    parser.add_argument("--tokenizer", default=None,
                        help="its tokenizer, a local folder (default: mathrl's for --model)")
    parser.add_argument("--log-path", required=True)
    parser.add_argument("--dataset", default="arith_train")
    parser.add_argument("--levels", default="1,2,3")
    parser.add_argument("--num-problems", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1, help="passes over the problems")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="problems per step")
    parser.add_argument("--group-size", type=int, default=8, help="samples per problem")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--save-every", type=int, default=5)
    args = parser.parse_args()

    from tinker_cookbook.rl import train

    from mathrl.tinker.cookbook import MathrlProblemsBuilder, offline

    offline(args.model, args.tokenizer)  # the tokenizer from its local folder, no price list fetched
    config = train.Config(
        learning_rate=args.lr, model_name=args.model, recipe_name="mathrl_cookbook_rl",
        max_tokens=args.max_tokens,
        log_path=args.log_path, base_url=args.base_url, renderer_name="qwen3", loss_fn="importance_sampling",
        lora_rank=args.lora_rank, save_every=args.save_every, eval_every=0, max_steps=args.steps,
        dataset_builder=MathrlProblemsBuilder(model_name_for_tokenizer=args.model, dataset=args.dataset,
                                              levels=args.levels, num_problems=args.num_problems,
                                              epochs=args.epochs,
                                              batch_size=args.batch_size, group_size=args.group_size))
    asyncio.run(train.main(config))


if __name__ == "__main__":
    main()
