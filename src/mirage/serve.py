"""``mirage-serve``: an OpenAI-compatible chat-completions server for any model mirage can load
(:mod:`mirage.evaluation.serve`).

    mirage-serve --model logs/npo_tiny/runs/<ts>/hf --port 8000
"""

from __future__ import annotations

import argparse
import logging

from mirage.evaluation.serve import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a mirage-loadable VLM over an OpenAI-compatible API.")
    parser.add_argument("--model", required=True, help="hub name or local path of the model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default=None, help="model name reported by the API (default: --model)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.model, args.host, args.port, name=args.name, dtype=args.dtype, device=args.device)


if __name__ == "__main__":
    main()
