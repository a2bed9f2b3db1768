"""``mathrl serve``: serve a model (and optional LoRA adapter) over an OpenAI-compatible API."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="'tiny', a model folder, or a hub id")
    parser.add_argument("--adapter", default=None, help="PEFT (LoRA) adapter folder")
    parser.add_argument("--served-name", default=None, help="model name clients use (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.sampling.factory import make_sampler
    from mathrl.serve import make_server

    sampler = make_sampler(args.model, args.adapter, device=args.device, dtype=args.dtype,
                           batch_size=args.batch_size)
    name = args.served_name or args.model
    server = make_server(sampler, sampler.tokenizer, name, args.host, args.port, max_batch=args.batch_size)
    host, port = server.server_address[:2]
    print(f"serving {name} on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
