"""``mathrl serve``: serve a model (and optional LoRA adapter) over an OpenAI-compatible API, or,
with ``--tinker``, serve the Tinker API (training and sampling) over local learners."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, action="append",
                        help="'tiny', a model folder, or a hub id; with --tinker, NAME[=PATH] (repeatable): "
                        "a base model clients name NAME, loaded from PATH (default: NAME itself)")
    parser.add_argument("--adapter", default=None, help="PEFT (LoRA) adapter folder")
    parser.add_argument("--served-name", default=None, help="model name clients use (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-n", type=int, default=64, help="largest n a request may ask for (default 64)")
    parser.add_argument("--max-tokens", type=int, default=8192,
                        help="largest max_tokens a request may ask for (default 8192)")
    parser.add_argument("--max-prompt-tokens", type=int, default=8192,
                        help="longest prompt accepted, in tokens (default 8192)")
    parser.add_argument("--enable-lora", action="store_true",
                        help="serve LoRA adapters loaded at run time by name (POST /v1/load_lora_adapter, "
                        "as vLLM's runtime LoRA API): a trainer publishes its adapter here each step")
    parser.add_argument("--tinker", action="store_true",
                        help="serve the Tinker API (tinker SDK 0.38: training clients, checkpoints, "
                        "sampling) "
                        "instead of the OpenAI one; point the SDK here with TINKER_BASE_URL=http://HOST:PORT")
    parser.add_argument("--root", default=None,
                        help="--tinker: where saved tinker:// paths live (default ~/.cache/mathrl/tinker); a "
                        "restarted server serves every path saved there")
    parser.add_argument("--api-key", default=None,
                        help="--tinker: accept only this key (X-API-Key; the SDK wants it to start with "
                        "tml-); "
                        "default: any (loopback)")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this server dies, even by SIGKILL "
                        "(Linux; `mathrl demo` starts its teacher so)")
    parser.set_defaults(run=run)


def exit_with_parent() -> None:
    """Stop when the process that started this server dies, and leave now if it already has
    (we were re-parented to init)."""
    import os
    import sys

    from mathrl.processes import die_with_parent

    if die_with_parent() and os.getppid() == 1:
        sys.exit(0)


def run(args: argparse.Namespace) -> int:
    from mathrl.errors import UserError
    from mathrl.sampling.factory import make_sampler
    from mathrl.serve import Limits, make_server

    if args.exit_with_parent:
        exit_with_parent()
    if args.tinker:
        return run_tinker(args)
    if len(args.model) > 1:
        raise UserError("--model once: one model per OpenAI-compatible server (several with --tinker)")
    args.model = args.model[0]
    if args.enable_lora and args.adapter:
        raise UserError("--enable-lora serves adapters loaded at run time; start it without --adapter "
                        "and load that one with POST /v1/load_lora_adapter")
    sampler = make_sampler(args.model, args.adapter, device=args.device, dtype=args.dtype,
                           batch_size=args.batch_size)
    name = args.served_name or args.model
    limits = Limits(max_n=args.max_n, max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens)
    server = make_server(sampler, sampler.tokenizer, name, args.host, args.port, max_batch=args.batch_size,
                         limits=limits, enable_lora=args.enable_lora)
    host, port = server.server_address[:2]
    print(f"serving {name} on http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def run_tinker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mathrl.errors import UserError
    from mathrl.tinker.server import Settings, make_server, parse_models

    if args.adapter or args.enable_lora:
        raise UserError("--tinker trains and samples adapters itself: leave out --adapter and --enable-lora")
    root = Path(args.root).expanduser() if args.root else Path.home() / ".cache" / "mathrl" / "tinker"
    settings = Settings(models=parse_models(args.model), root=root, device=args.device, dtype=args.dtype,
                        api_key=args.api_key, batch_size=args.batch_size, max_tokens=args.max_tokens)
    server = make_server(settings, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving the Tinker API for {', '.join(settings.models)} on http://{host}:{port} "
          f"(TINKER_BASE_URL=http://{host}:{port}; checkpoints in {root})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
