"""``dnntune predict`` (a run folder's model on new inputs) and ``dnntune export`` (ONNX, torch.export)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..deploy._engine import ENGINES, load_model

EXPORT_FORMATS = ("onnx", "torch-export")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive integer")
    return n


def cmd_predict(args) -> int:
    from ..deploy._inputs import read_inputs
    from ..deploy._output import prediction_rows, rows_to_csv, rows_to_json, write_csv

    run = load_model(args.run_dir, args.engine, args.device)
    inputs = read_inputs(args.input, run.preprocessing, getattr(run, "recipe", None), key=args.key)
    pred = run.predict(inputs.x, batch_size=args.batch_size)
    columns, rows = prediction_rows(pred, inputs.ids, run.class_names, proba=args.proba)
    if args.out:
        path = write_csv(args.out, columns, rows)
        if not args.json:
            print(f"{len(rows)} predictions for {inputs.source} written to {path}")
    if args.json:
        print(rows_to_json(columns, rows))
    elif not args.out:
        sys.stdout.write(rows_to_csv(columns, rows))
    return 0


def cmd_export(args) -> int:
    import dataclasses

    from ..deploy import export

    result = export(args.run_dir, format=args.format, out=args.out)
    info = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(result).items()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"exported {args.run_dir} as {result.format}: {result.path}")
    checked = info.get("input_source") or f"{result.checked_samples} samples"
    check = (f"parity check on {checked}: max abs diff {result.max_abs_diff:.3g}"
             + (f" (allowed {info['tolerance']:.3g})" if info.get("tolerance") is not None else ""))
    if result.argmax_agreement is not None:
        check += f", argmax agreement {100 * result.argmax_agreement:.1f}%"
    print(check)
    return 0


def add_commands(sub) -> None:
    """Register ``predict`` and ``export`` on the top-level subparsers."""
    p = sub.add_parser("predict", help="predict new inputs with a run folder's model",
                       description="Predict new inputs with a trained model: one row per sample with its id (row "
                       "number, or file name for images), the predicted label (the class name) or the value(s) "
                       "in the target's units. Inputs are converted and normalized as the training data was. "
                       "Prints CSV to stdout unless --out or --json. See docs/deploy.md.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (train run, trial, best/, or a tune run folder); "
                   "with --engine onnxruntime also an .onnx file")
    p.add_argument("input", metavar="INPUT", nargs="+",
                   help="a CSV file (the training feature columns by name, any order; other columns ignored), an "
                   ".npz (--key) or .npy array of shape (N, *input shape), an MNIST IDX images file, image files, "
                   "or a folder of images")
    p.add_argument("--out", metavar="FILE", help="write the predictions as CSV to FILE")
    p.add_argument("--proba", action="store_true", help="classification: add one probability column per class "
                   "(p_<class>); multi-label: one per label")
    p.add_argument("--batch-size", type=_positive_int, default=512, dest="batch_size", metavar="N",
                   help="samples per forward pass (default 512)")
    p.add_argument("--json", action="store_true", help="print the predictions as a JSON list of objects")
    p.add_argument("--key", help=".npz input: the array holding the inputs (default x, or the only array)")
    p.add_argument("--engine", choices=ENGINES, default="torch",
                   help="torch (default) or onnxruntime (needs `dnntune export RUN_DIR --format onnx` first)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default: CUDA when available), cpu or cuda")
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("export", help="export a run folder's model to ONNX or a torch.export program",
                       description="Export a run folder's model: ONNX (dynamic batch dimension) or a torch.export "
                       "program (.pt2). The export is checked on the spot against PyTorch on real inputs; a failed "
                       "check is an error. See docs/deploy.md.")
    e.add_argument("run_dir", metavar="RUN_DIR", help="run folder (train run, trial, best/, or a tune run folder)")
    e.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="onnx or torch-export")
    e.add_argument("--out", metavar="FILE", help="file (or folder) to write; default RUN_DIR/model.onnx or "
                   "RUN_DIR/model.pt2, with its metadata beside it as <file>.json")
    e.add_argument("--json", action="store_true", help="print the path and the parity check as JSON")
    e.set_defaults(func=cmd_export)
