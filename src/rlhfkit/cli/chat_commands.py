"""`rlhfkit chat MODEL` and `rlhfkit serve MODEL`: talk to a (tuned) model."""

from __future__ import annotations

import argparse
import os

from rlhfkit.errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_chat_commands(commands: argparse._SubParsersAction) -> None:
    model_help = (
        "a model reference or folder, a LoRA adapter, or an RL/DPO run directory (its merged "
        "model, else its adapter on the run's base)"
    )
    chat = commands.add_parser(
        "chat",
        help="talk to a model in the terminal, its answer printed as it is written",
        description="A conversation with MODEL in the terminal: type a message, the answer "
        "streams; /reset starts over, /exit or Ctrl-D stops.",
    )
    chat.add_argument("model", metavar="MODEL", help=model_help)
    chat.add_argument("--system", help="a system message that starts the conversation")
    _sampling_arguments(chat)
    chat.set_defaults(handler=_chat)

    serve = commands.add_parser(
        "serve",
        help="serve a model as an OpenAI-compatible chat endpoint on this machine",
        description="POST /v1/chat/completions (OpenAI's request and answer, streaming too) "
        "and GET /v1/models on http://127.0.0.1:PORT/v1, every request with the printed "
        "token as `Authorization: Bearer TOKEN`. Usable as sxs's judge "
        "(autorater=judge:http://127.0.0.1:PORT/v1) or a score_model grader's base_url.",
    )
    serve.add_argument("model", metavar="MODEL", help=model_help)
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve.add_argument(
        "--host", default="127.0.0.1", help="another than 127.0.0.1 exposes it to the network"
    )
    serve.add_argument(
        "--token-env",
        metavar="NAME",
        help="environment variable holding the token (16+ characters); default: a new one",
    )
    serve.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    serve.set_defaults(handler=_serve)


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens")
    parser.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, help="seeds the sampling (default: not seeded)")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _chat(args: argparse.Namespace) -> int:
    from rlhfkit.eval.chat import ChatModel, Sampling, converse

    sampling = Sampling(args.max_tokens, args.temperature, args.top_p, args.seed)
    sampling.check()
    return converse(ChatModel(args.model, args.dtype, args.device), sampling, args.system)


def _serve(args: argparse.Namespace) -> int:
    from rlhfkit.eval.chat import ChatModel
    from rlhfkit.eval.serve import serve

    token = None
    if args.token_env:
        token = os.environ.get(args.token_env, "")
        if len(token) < 16:
            raise ConfigError(
                f"--token-env {args.token_env}: the variable is unset or shorter than 16 "
                "characters; set it, or leave --token-env out for a new random token"
            )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be 0..65535")
    if args.host not in LOCAL_HOSTS:
        print(
            f"warning: listening on {args.host}, not only this machine; anyone who reaches it "
            "and has the token can use the model, and plain HTTP does not hide the token"
        )
    return serve(ChatModel(args.model, args.dtype, args.device), args.host, args.port, token)
