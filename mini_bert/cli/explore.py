"""`minibert explore`: a local web page where a sentence is typed and the model's computation shown live."""

from __future__ import annotations

from ..errors import MiniBertError

INSTALL_HINT = "pip install 'mini-bert[explore]'  (or pip install -e '.[explore]' in a checkout)"


def add_parser(sub, common) -> None:
    p = sub.add_parser("explore", parents=[common["checkpoint"]],
                       help="a local web app: type a sentence, see tokens, attention, masked predictions, the "
                            "logit lens and the forward pass")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0 picks a free one)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import flask  # noqa: F401  (the server library; an optional extra)
    except ImportError:
        raise MiniBertError(f"minibert explore needs Flask, which is not installed: {INSTALL_HINT}") from None
    from ..analysis.webapp import create_app, make_server, serve
    from ..training.checkpointing import load_model_and_tokenizer, resolve_checkpoint_dir

    if not 0 <= args.port <= 65535:
        raise MiniBertError(f"--port {args.port} is not a TCP port (0-65535; 0 picks a free one)")
    model, tokenizer = load_model_and_tokenizer(args.checkpoint)
    server = make_server(create_app(model, tokenizer, title=str(resolve_checkpoint_dir(args.checkpoint))), args.port)
    print(f"Mini-BERT explorer on http://127.0.0.1:{server.port}/ (Ctrl-C stops it)", flush=True)
    try:
        serve(server)                   # returns on Ctrl-C
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)
    return 0
