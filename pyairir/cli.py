"""The `pyairir` command line.

    pyairir demo                                   restore held-out photos with the shipped demo model
    pyairir restore IN... -o OUT [--model --checkpoint --paradigm --tile --iterations]
    pyairir eval --data data/test --benchmark 3task --model promptir --checkpoint model.ckpt
    pyairir train CONFIG.yaml [key=value ...] [--resume | --overwrite]
    pyairir bench [--model promptir --size 256]
    pyairir export OUT.onnx --model NAME [--checkpoint --paradigm --iterations] [--size H W | --dynamic]
    pyairir serve [--model --checkpoint --paradigm --iterations --tile --host 127.0.0.1 --port 7860]

Errors (missing or unreadable files, images that are not RGB, bad arguments) are reported in one
line on stderr, with exit code 1 (2 for bad usage); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from pyairir._files import write_text_atomic

EXIT_ERROR = 1
MAX_EXIT_COUNT = 125  # `pyairir restore` exits with the number of images that failed, up to this


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def _model(args: argparse.Namespace) -> nn.Module:
    """The model the arguments ask for: the demo model, or a registry model (+ paradigm, checkpoint)."""
    import pyairir
    from pyairir.demo import DEMOS, load_demo_model

    if args.model == "demo":
        if args.checkpoint:
            raise CommandError("--checkpoint needs --model NAME (a registry model), not the demo model")
        if args.paradigm not in DEMOS:
            raise CommandError(f"--paradigm {args.paradigm}: pyairir ships demo models for --paradigm "
                               f"{', '.join(DEMOS)} only; for {args.paradigm} give --model NAME --checkpoint FILE")
        return load_demo_model(fast=not args.eager, paradigm=args.paradigm)
    if args.model not in pyairir.list_models():
        raise CommandError(f"unknown model {args.model!r}; available: demo, {', '.join(pyairir.list_models())}")
    from pyairir.train.config import TrainConfig
    from pyairir.train.trainer import Plain, build_model

    model = build_model(TrainConfig(model=args.model, fast=not args.eager, paradigm=args.paradigm))
    if isinstance(model, Plain):
        model = model.model
    if args.checkpoint:
        pyairir.load_checkpoint(model, args.checkpoint)
    elif not getattr(args, "allow_random", False):
        print(f"pyairir: warning: {args.model} has random weights (no --checkpoint)", file=sys.stderr)
    return model.eval()


def _add_model_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model,
                        help=f"demo or a registry model name (default {default_model})")
    parser.add_argument("--checkpoint", help="weights to load (.pth, .ckpt, .pt, .safetensors)")
    parser.add_argument("--paradigm", default="none", choices=("none", "pl", "sipl", "lupi", "cpl"),
                        help="the paradigm the checkpoint was trained with")
    parser.add_argument("--iterations", type=int, help="SIPL self-refinement iterations")
    parser.add_argument("--eager", action="store_true", help="run the eager reference instead of fused kernels")


def _add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, help="restore in tiles of this size (bounded memory for large images)")
    parser.add_argument("--overlap", type=int, default=32,
                        help="tile overlap in pixels; neighbouring tiles cross-fade over its middle half (default 32)")


def _inputs(paths: list[str]) -> list[Path]:
    from pyairir._files import is_temporary
    from pyairir.data.io import IMAGE_EXTENSIONS

    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():  # a killed write's temporary file is no input
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not is_temporary(p))
            if not found:
                raise CommandError(f"{text}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"{text}: no such file or folder")
    return files


def _outputs(inputs: list[Path], out: str, overwrite: bool) -> list[Path]:
    """Where each restored image goes: -o an image file (one input) or a folder; never onto an
    input, never onto an existing file without --overwrite, never onto a read-only file."""
    from pyairir.data.io import IMAGE_EXTENSIONS

    target = Path(out)
    suffix = target.suffix.lower()
    if suffix and not target.is_dir():
        if suffix not in IMAGE_EXTENSIONS:
            raise CommandError(f"-o {out}: pyairir writes {', '.join(IMAGE_EXTENSIONS)} images, not {suffix} "
                               "(for a folder, give a name without a suffix)")
        if len(inputs) > 1:
            raise CommandError(f"-o {out}: {len(inputs)} inputs cannot go into one image file; give a folder")
        outputs = [target]
    else:
        if target.exists() and not target.is_dir():
            raise CommandError(f"-o {out}: with several inputs the output must be a folder")
        outputs = [target / f"{p.stem}{p.suffix if p.suffix.lower() in IMAGE_EXTENSIONS else '.png'}" for p in inputs]
        if len({str(o) for o in outputs}) != len(outputs):
            raise CommandError("two inputs have the same file name; restore them into different folders")
    resolved_inputs = {p.resolve() for p in inputs}
    for o in outputs:
        if o.resolve() in resolved_inputs:
            raise CommandError(f"refusing to overwrite the input {o}: choose another -o")
    existing = [o for o in outputs if o.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise CommandError(f"{existing[0]} already exists{more}; pass --overwrite to replace")
    read_only = [o for o in existing if not o.stat().st_mode & 0o200]  # by its mode, also for root
    if read_only:
        raise CommandError(f"{read_only[0]} is read-only: not replacing it")
    return outputs


def _bytes(count: int) -> str:
    return f"{count / 2 ** 30:.1f} GiB" if count >= 2 ** 30 else f"{count / 2 ** 20:.0f} MiB"


def command_restore(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from pyairir.data.io import ImageError, icc_profile, read_image, write_image
    from pyairir.eval.evaluate import restorer
    from pyairir.eval.memory import available_bytes, plan_tile
    from pyairir.models.checks import size_multiple

    inputs = _inputs(args.inputs)
    outputs = _outputs(inputs, args.output, args.overwrite)
    model = _model(args)
    run = restorer(model, args.tile, args.overlap, args.iterations, progress=True)
    failures = 0
    for source, target in tqdm(list(zip(inputs, outputs)), desc="restore", unit="image", disable=len(inputs) < 2):
        try:
            image = read_image(source)
            tile, needed = (None, 0) if args.tile else plan_tile(model, *image.shape[-2:], size_multiple(model),
                                                                 args.overlap)
            if tile:
                print(f"pyairir restore: {source}: untiled it needs about {_bytes(needed)}, more than the "
                      f"{_bytes(available_bytes() or 0)} available: restoring in tiles of {tile} (--tile chooses "
                      "another size)", file=sys.stderr)
            with torch.no_grad():
                restored = (restorer(model, tile, args.overlap, args.iterations, progress=True) if tile else run)(
                    image[None])[0]
            if not torch.isfinite(restored).all():
                raise ImageError("the model's output is not finite (NaN or Inf): its weights are broken; "
                                 "nothing written")
            write_image(target, restored.clamp(0, 1), icc_profile(source))
        except (ImageError, OSError, ValueError, RuntimeError, MemoryError) as error:
            print(f"pyairir restore: {source}: {error}", file=sys.stderr)
            failures += 1
            continue
        if len(inputs) == 1:
            print(f"restored {source} -> {target}")
    if failures:
        print(f"pyairir restore: {failures} of {len(inputs)} images failed", file=sys.stderr)
    return min(failures, MAX_EXIT_COUNT)


def command_eval(args: argparse.Namespace) -> int:
    from pyairir.data import evaluation_sets
    from pyairir.eval import evaluate, format_table

    from pyairir.nn import SparsePromptModule
    from pyairir.paradigms import PromptSelectionStatistics

    datasets = evaluation_sets(args.data, args.benchmark)
    model = _model(args)
    has_prompts = any(isinstance(m, SparsePromptModule) for m in model.modules())
    statistics = PromptSelectionStatistics() if has_prompts else None
    results = evaluate(model, datasets, args.protocol, args.y_channel, args.crop_border, args.tile,
                       args.iterations, statistics=statistics, overlap=args.overlap)
    print(format_table(results))
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    if args.plot:
        from pyairir.eval import plots

        folder = Path(args.plot)
        written = [plots.psnr_per_task({t: r for t, r in results.items() if t != "average"},
                                       folder / "psnr_per_task.png")]
        if args.iterations is not None:
            written.append(plots.psnr_per_iteration(results["average"]["psnr_per_iteration"],
                                                    folder / "psnr_per_iteration.png"))
        if statistics is not None:
            tasks = statistics.tasks()
            written.append(plots.prompt_selection({t: statistics.mean_probabilities(t) for t in tasks},
                                                  {t: statistics.entropy(t) for t in tasks},
                                                  folder / "prompt_selection.png"))
        for path in written:
            print(f"wrote {path}")
    failed = [message for task, r in results.items() if task != "average" for message in r.get("failed", [])]
    for message in failed:
        print(f"pyairir eval: skipped: {message}", file=sys.stderr)
    return min(len(failed), MAX_EXIT_COUNT)


def command_train(args: argparse.Namespace) -> int:
    from pyairir.train import load_config, train

    config = load_config(args.config, args.overrides)
    train(config, resume=args.resume, overwrite=args.overwrite)
    return 0


def command_bench(args: argparse.Namespace) -> int:
    import pyairir

    x = torch.rand(1, 3, args.size, args.size)
    rows = []
    for label, fast, dtype in (("eager fp32", False, torch.float32), ("fast fp32", True, torch.float32),
                               ("fast bf16", True, torch.bfloat16)):
        torch.manual_seed(0)
        model = pyairir.create_model(args.model, fast=fast).to(dtype).eval()
        if fast:
            pyairir.nn.set_fast(model)
        with torch.no_grad():
            model(x.to(dtype))
            start = time.perf_counter()
            for _ in range(args.repeat):
                model(x.to(dtype))
        rows.append((label, (time.perf_counter() - start) / args.repeat))
    print(f"{args.model} on 1x3x{args.size}x{args.size}, {torch.get_num_threads()} threads:")
    for label, seconds in rows:
        print(f"  {label:<11} {seconds * 1e3:9.1f} ms   {rows[0][1] / seconds:5.2f}x")
    print("(pytest benchmarks/ in the repository compares against torch.compile too)")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from pyairir.export import export_onnx

    model = _model(args)
    size = tuple(args.size) if args.size else (256, 256)
    print(f"pyairir export: tracing {args.model}{'' if args.paradigm == 'none' else ' + ' + args.paradigm} at "
          f"{size[0]}x{size[1]}...", file=sys.stderr)
    report = export_onnx(model, args.output, size=size, dynamic=args.dynamic, iterations=args.iterations,
                         verify=not args.no_verify)
    print(report)
    return 0


def command_serve(args: argparse.Namespace) -> int:
    from pyairir.demo import demo_name
    from pyairir.serve import RestorationService, make_server

    if args.max_pixels <= 0:
        raise CommandError(f"--max-pixels must be positive, got {args.max_pixels}")
    if not 0 <= args.port < 65536:
        raise CommandError(f"--port must be 0..65535, got {args.port}")
    model = _model(args)
    description = (f"the demo model ({demo_name(args.paradigm)}, pyairir/weights)" if args.model == "demo" else (
        f"{args.model}{'' if args.paradigm == 'none' else ' + ' + args.paradigm}"
        f"{' from ' + Path(args.checkpoint).name if args.checkpoint else ' (random weights)'}"))
    service = RestorationService(model, description, args.max_pixels, args.tile, args.overlap, args.iterations)
    try:
        server = make_server(service, args.host, args.port)
    except OSError as error:
        service.close()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pyairir serve: warning: listening on {args.host}: other computers can reach this server",
              file=sys.stderr, flush=True)
    try:
        print(f"pyairir serve: {description} at http://{host}:{port}/ (Ctrl+C stops)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from pyairir.demo import demo_info, demo_name, format_results, load_demo_model, run_demo

    model = load_demo_model(fast=not args.eager, paradigm=args.paradigm)
    results = run_demo(model, out=args.output, kinds=tuple(demo_info(args.paradigm)["degradations"]))
    print(f"pyairir demo: {demo_name(args.paradigm)} on held-out scikit-image photos (chelsea, coffee), synthetic degradations, PSNR:")
    print(format_results(results))
    if args.output:
        print(f"comparisons (degraded | restored | clean) written to {args.output}/demo_*.png")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pyairir", description="All-in-one image restoration.")
    commands = root.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="restore held-out photos with the shipped demo model")
    demo.add_argument("-o", "--output", help="folder for the side-by-side comparisons")
    demo.add_argument("--eager", action="store_true", help="run the eager reference instead of fused kernels")
    demo.add_argument("--paradigm", default="none", choices=("none", "sipl"),
                      help="none: the NAFNet demo (default); sipl: the SIPL-PromptIR-small demo")
    demo.set_defaults(run=command_demo)

    restore = commands.add_parser("restore", help="restore images", epilog="Each image that cannot be read, "
                                  "restored or written is reported with its path and skipped; the exit status is "
                                  f"the number of such images (at most {MAX_EXIT_COUNT}).")
    restore.add_argument("inputs", nargs="+", help="image files or folders")
    restore.add_argument("-o", "--output", required=True, help="output image (one input) or folder")
    restore.add_argument("--overwrite", action="store_true", help="replace existing output files (keeping their "
                         "permissions); without it pyairir refuses")
    _add_model_arguments(restore, "demo")
    _add_tile_arguments(restore)
    restore.set_defaults(run=command_restore)

    evaluate = commands.add_parser("eval", help="PSNR/SSIM on a benchmark's test sets")
    evaluate.add_argument("--data", required=True, help="the test folder (data/test, or CDD-11_test)")
    evaluate.add_argument("--benchmark", default="3task", choices=("3task", "5task", "cdd11"))
    evaluate.add_argument("--protocol", default="promptir", choices=("promptir", "basicsr"))
    evaluate.add_argument("--y-channel", action="store_true", help="basicsr protocol: compare luma only")
    evaluate.add_argument("--crop-border", type=int, default=0)
    evaluate.add_argument("--json", help="also write the results to this JSON file")
    evaluate.add_argument("--plot", help="folder for a PSNR-per-task chart")
    _add_model_arguments(evaluate, "promptir")
    _add_tile_arguments(evaluate)
    evaluate.set_defaults(run=command_eval)

    train = commands.add_parser("train", help="train a model (also under torchrun)")
    train.add_argument("config", help="YAML training config (see pyairir.train.TrainConfig)")
    train.add_argument("overrides", nargs="*", help="key=value settings overriding the config")
    run = train.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue from the output folder's latest checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="move the run the output folder holds aside (to OUT.old-DATE-TIME) and start anew")
    train.set_defaults(run=command_train)

    bench = commands.add_parser("bench", help="time a model, eager vs fused kernels")
    bench.add_argument("--model", default="promptir")
    bench.add_argument("--size", type=int, default=256)
    bench.add_argument("--repeat", type=int, default=3)
    bench.set_defaults(run=command_bench)

    export = commands.add_parser("export", help="export a model to ONNX, checked in ONNX Runtime (and OpenVINO)")
    export.add_argument("output", help="the .onnx file to write")
    _add_model_arguments(export, "demo")  # --eager: check the file against the eager model
    shape = export.add_mutually_exclusive_group()
    shape.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input height and width (default 256 256)")
    shape.add_argument("--dynamic", action="store_true", help="free batch, height and width (multiples of the model's)")
    export.add_argument("--no-verify", action="store_true", help="do not run the file to check it")
    export.set_defaults(run=command_export)

    serve = commands.add_parser("serve", help="restore photos in the browser (a local web page)")
    _add_model_arguments(serve, "demo")
    _add_tile_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                       "computer only)")
    serve.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    serve.add_argument("--max-pixels", type=int, default=12_000_000,
                       help="refuse larger images (default 12,000,000: a 4000x3000 photo)")
    serve.set_defaults(run=command_serve, allow_random=False)
    return root


def main(argv: list[str] | None = None) -> int:
    root = parser()
    args, extra = root.parse_known_args(argv)
    if extra:  # key=value overrides may also follow --resume
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            root.error(f"unrecognized arguments: {' '.join(extra)}")
    from pyairir.data.io import ImageError
    from pyairir.models.checkpoint import CheckpointError

    try:
        return args.run(args)
    except (CommandError, ImageError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"pyairir {args.command}: {error}", file=sys.stderr)
        return EXIT_ERROR


def entry_point() -> None:
    sys.exit(main())
