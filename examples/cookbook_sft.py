"""tinker-cookbook's own supervised loop (``tinker_cookbook.supervised.train``) on a chat JSONL of
traces (``mathrl distill`` or ``mathrl toy traces`` writes them), against a Tinker API: the hosted
service, or ``mathrl serve --tinker`` on this machine.

    mathrl toy traces --num-problems 2000 --out runs/arith_traces.jsonl
    mathrl serve --tinker --model tiny --port 8010 &
    TINKER_API_KEY=tml-local python examples/cookbook_sft.py --base-url http://127.0.0.1:8010 \\
        --model tiny --data runs/arith_traces.jsonl --log-path runs/cookbook_sft
"""

import argparse
import asyncio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="tiny", help="the base model's name on the server")
    parser.add_argument("--tokenizer", default=None,
                        help="its tokenizer, a local folder (default: mathrl's for --model)")
    parser.add_argument("--data", required=True, help="chat JSONL: one {\"messages\": [...]} per line")
    parser.add_argument("--log-path", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--save-every", type=int, default=20)
    args = parser.parse_args()

    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    from mathrl.tinker.cookbook import offline

    offline(args.model, args.tokenizer)  # the tokenizer from its local folder, no price list fetched
    common = ChatDatasetBuilderCommonConfig(model_name_for_tokenizer=args.model, renderer_name="qwen3",
                                            max_length=args.max_length, batch_size=args.batch_size)
    config = train.Config(
        log_path=args.log_path, model_name=args.model, recipe_name="mathrl_cookbook_sft",
        base_url=args.base_url, renderer_name="qwen3", lora_rank=args.lora_rank, learning_rate=args.lr,
        lr_schedule="linear",
        num_epochs=args.epochs, save_every=args.save_every, eval_every=0, max_steps=args.steps,
        dataset_builder=FromConversationFileBuilder(file_path=args.data, common_config=common))
    asyncio.run(train.main(config))


if __name__ == "__main__":
    main()
