"""The ``mesh3d`` command line.

Each subcommand parses its options and calls one function of :mod:`app.pipeline` or a library
module; user errors (:class:`Mesh3DError`) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mesh3d import __version__
from mesh3d.errors import Mesh3DError


def _cmd_info(args) -> int:
    from mesh3d.describe import describe, format_description
    from mesh3d.io import load

    info = describe(load(args.file, up_axis=args.up))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def _cmd_convert(args) -> int:
    from app.pipeline import convert

    for w in convert(args.input, args.output, up_axis=args.up).warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(args.output)
    return 0


def _cmd_batch(args) -> int:
    from app.batch import run_batch

    given = {"up_axis": args.up, "skeleton": args.skeleton, "skin": args.skin, "motions": args.motion,
             "motion_from": args.motion_from, "mixamo_names": args.mixamo_names or None,
             "faces": args.faces, "method": args.method, "samples": args.samples}
    try:
        summary = run_batch(
            args.in_dir, args.out_dir, args.task, {k: v for k, v in given.items() if v is not None}, fmt=args.format,
            jobs=args.jobs, timeout=args.timeout, max_memory=args.max_memory, report=args.report,
            overwrite=args.overwrite, ray=args.ray, preview=args.preview,
        )
    except KeyboardInterrupt:
        print("mesh3d batch: stopped; run the same command again to resume", file=sys.stderr)
        raise
    for r in summary.records:
        if r["status"] == "failed":
            print(f"failed: {r['error']}", file=sys.stderr)
    print(summary.format())
    return 2 if summary.failed else 0


def _cmd_demo(args) -> int:
    from app.pipeline import demo

    report = demo(args.output, seed=args.seed, progress=_progress_printer())
    print(f"{report.joints} joints, motions {', '.join(report.motions)}", file=sys.stderr)
    print(Path(args.output).resolve())
    return 0


def _cmd_rig(args) -> int:
    from app.pipeline import rig
    from mesh3d.io.atomic import write_bytes_atomic

    out = Path(args.output)
    if args.format and out.suffix.lower() != f".{args.format}":
        raise Mesh3DError(f"{out}: the output extension does not match --format {args.format}")
    motions = [m for m in (args.motion or []) if m.lower() != "none"]
    report = rig(args.input, out, skeleton=args.skeleton, skin=args.skin, motions=motions, up_axis=args.up, progress=_progress_printer())
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.report:
        write_bytes_atomic(args.report, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    print(f"{out}: {report.joints} joints ({report.skeleton_method} skeleton, {report.skin_method} skin), "
          f"{sum(report.timings.values()):.1f} s" + (f", motions {', '.join(report.motions)}" if report.motions else ""))
    return 0


def _cmd_remesh(args) -> int:
    from mesh3d.io.atomic import write_bytes_atomic
    from mesh3d.remesh import remesh_file

    report = remesh_file(args.input, args.output, faces=args.faces, method=args.method, samples=args.samples, seed=args.seed,
                         up_axis=args.up, progress=_progress_printer())
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.report:
        write_bytes_atomic(args.report, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    print(report.format() + f", {sum(report.timings.values()):.1f} s")
    return 0


def _progress_printer():
    """A progress callback printing stage names to stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    return lambda stage, fraction: print(f"  [{fraction:4.0%}] {stage}", file=sys.stderr)


def _cmd_validate(args) -> int:
    from mesh3d.io.validate import format_report, validate_gltf

    reports = validate_gltf(args.files)
    for r in reports:
        print(format_report(r))
    return 0 if all(r["numErrors"] == 0 for r in reports) else 2


# Models `mesh3d train NAME CONFIG` knows: NAME -> the Task class its config must name.
TRAIN_TASKS = {"skeleton": "rigging.skeleton.learned:SkeletonTask", "shape": "mesh3d.shape.model:ShapeTask",
               "mesh": "mesh3d.remesh:MeshTask", "skin": "rigging.skinning.learned:SkinTask"}


def _cmd_train(args) -> int:
    from mesh3d.nn.trainer import load_config, load_task, train

    spec, options, cfg = load_config(args.config)
    if spec != TRAIN_TASKS[args.model]:
        raise Mesh3DError(f"{args.config}: task is {spec!r}, but `mesh3d train {args.model}` trains {TRAIN_TASKS[args.model]!r}")
    train(load_task(spec, options), cfg, spec, options, stop_at=args.stop_at)
    return 0


def _cmd_animate(args) -> int:
    from app.pipeline import animate

    report = animate(args.input, args.output, args.motion or [], motion_from=args.motion_from, mixamo_names=args.mixamo_names)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{args.output}: {', '.join(report.motions)} (rig labelled as {report.notes.get('rig_kind', '?')})")
    return 0


def _cmd_motions(args) -> int:
    from rigging.animate.motions import list_motions

    for name, description in list_motions():
        print(f"{name:12s} {description}")
    return 0


def _cmd_preview(args) -> int:
    from rigging.animate.preview import preview

    print(preview(args.file, args.output, animation=args.animation, size=args.size))
    return 0


BENCHMARKS = {"roundtrip": "mesh3d.io.roundtrip", "tokenizers": "mesh3d.tokenizers.bench", "batch": "app.batch_bench", "remesh": "mesh3d.remesh"}


def _cmd_bench(args) -> int:
    import importlib

    return importlib.import_module(BENCHMARKS[args.name]).main(args.args)


def _cmd_eval(args) -> int:
    if args.what == "shape":
        from mesh3d.shape.evaluate import main as eval_shape

        eval_shape(args.args)
        return 0
    if args.what == "mesh":
        from mesh3d.remesh_eval import main as eval_mesh

        eval_mesh(args.args)
        return 0
    from rigging.eval import main as eval_rig

    eval_rig(args.args)
    return 0


def _cmd_generate(args) -> int:
    from app.pipeline import generate_shape, shape_categories

    if args.list_categories:
        print("\n".join(shape_categories(args.weights)))
        return 0
    if not args.category or not args.output:
        raise Mesh3DError("give --category NAME and -o OUT.glb (or --list-categories)")
    motions = [m for m in (args.motion or []) if m.lower() != "none"]
    report = generate_shape(args.output, args.category, seed=args.seed, rig=args.rig, remesh=args.remesh, motions=motions,
                            temperature=args.temperature, weights=args.weights, progress=_progress_printer())
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{args.output}: {report.vertices} vertices, {report.faces} faces" + (f", {report.joints} joints" if report.joints else ""))
    return 0


def _cmd_app(args) -> int:
    from app.web import Limits, launch

    limits = Limits(args.max_upload_mb, args.max_faces, args.job_timeout, args.concurrency, args.queue_size, args.file_ttl)
    launch(args.host, args.port, limits, args.work_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh3d", description="Turn 3D shapes into clean, rigged and animated assets.")
    parser.add_argument("--version", action="version", version=f"mesh3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up_help = "up axis of OBJ/PLY/STL/OFF input (Y, Z, -Y, -Z, X, -X; default Y)"

    p = sub.add_parser("info", help="summarise a mesh or rigged asset")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--up", default=None, type=str.upper, help=up_help)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert between GLB, glTF, OBJ, PLY, STL, OFF and FBX, keeping rig and animations where the target can hold them")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--up", default=None, type=str.upper, help=up_help)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("batch", help="run one task over every supported file of a folder tree, in parallel, resumable, with a JSON-lines report")
    p.add_argument("in_dir", metavar="IN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="outputs mirror IN_DIR's folders here")
    p.add_argument("--task", default="convert", choices=["convert", "rig", "animate", "remesh", "generate"])
    p.add_argument("--format", default=None, help="output format, e.g. glb, obj, fbx (default glb)")
    p.add_argument("--up", default=None, type=str.upper, help=up_help)
    p.add_argument("--skeleton", default=None, help="rig: skeleton method")
    p.add_argument("--skin", default=None, help="rig: skinning method")
    p.add_argument("--motion", action="append", help="rig/animate: a motion from `mesh3d motions`; repeat for several")
    p.add_argument("--motion-from", metavar="FILE.glb:CLIP", help="animate: retarget clip CLIP of another rigged file onto each input")
    p.add_argument("--mixamo-names", action="store_true", help="animate: rename a humanoid's joints to Mixamo names")
    p.add_argument("--faces", type=int, default=None, help="remesh: face budget (default 500)")
    p.add_argument("--method", default=None, choices=["auto", "learned", "qem"], help="remesh: method (default auto)")
    p.add_argument("--samples", type=int, default=None, help="remesh: learned candidates (default 4)")
    p.add_argument("--jobs", type=int, default=None, help="local worker processes (default: CPU cores; with --ray, Ray schedules one CPU per input)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per input before it is stopped and reported (0: none; default 600)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GIB", help="address-space cap per worker in GiB (default: RAM / jobs; 0: none)")
    p.add_argument("--report", default=None, help="JSON-lines report (default OUT_DIR/batch-report.jsonl); resuming reads it")
    p.add_argument("--overwrite", action="store_true", help="run every input again and replace existing outputs")
    p.add_argument("--preview", action="store_true", help="also write a preview image (NAME.png: the skeleton over the mesh) beside each output")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run on Ray: auto (this machine's cluster), local (start one here) or host:port")
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("demo", help="run the main job on a built-in example")
    p.add_argument("-o", "--output", default="out/demo.glb")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("rig", help="give any mesh a skeleton and skin weights (and optionally motions); writes a rigged GLB or FBX")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--skeleton", default="auto", help="auto | geometric | learned | PATH.json (joints, parents, names in the mesh's coordinates)")
    p.add_argument("--skin", default="auto", choices=["auto", "geometric", "learned"])
    p.add_argument("--motion", action="append", help="a motion to add (repeatable; see `mesh3d motions`), or none")
    p.add_argument("--format", choices=["glb", "fbx"], help="output format (must match the output's extension)")
    p.add_argument("--report", help="write a JSON report (timings per stage, joint count, methods, warnings)")
    p.add_argument("--up", default=None, type=str.upper, help=up_help)
    p.set_defaults(func=_cmd_rig)

    p = sub.add_parser("remesh", help="turn a dense surface into a compact artist-style mesh (learned model, or QEM decimation)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output mesh (GLB, OBJ, PLY, STL, OFF, FBX)")
    p.add_argument("--faces", type=int, default=500, help="face budget (default 500)")
    p.add_argument("--method", default="auto", choices=["auto", "learned", "qem"],
                   help="auto: the learned mesh when it is as faithful as QEM at its face count, else QEM (default)")
    p.add_argument("--samples", type=int, default=4, help="learned candidates; the closest to the input is kept (default 4)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same output)")
    p.add_argument("--up", default=None, help=up_help)
    p.add_argument("--report", default=None, help="also write the report (method, reason, metrics, timings) as JSON")
    p.set_defaults(func=_cmd_remesh)

    p = sub.add_parser("validate", help="check GLB/glTF files with the Khronos glTF-Validator")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("train", help="train a learned model from a config file (resumes from its checkpoint)")
    p.add_argument("model", choices=sorted(TRAIN_TASKS))
    p.add_argument("config", help="TOML or JSON: task, [task_options], [train] (see mesh3d.nn.trainer)")
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop after this step")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("animate", help="add named animations (motions, or a clip retargeted from another rig) to a rigged GLB")
    p.add_argument("input", help="rigged GLB/glTF")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--motion", action="append", help="a motion from `mesh3d motions`; repeat for several")
    p.add_argument("--motion-from", metavar="FILE.glb:CLIP", help="retarget clip CLIP of another rigged file onto this rig")
    p.add_argument("--mixamo-names", action="store_true", help="rename a humanoid's joints to Mixamo names")
    p.set_defaults(func=_cmd_animate)

    p = sub.add_parser("motions", help="list the motions `mesh3d animate` can make")
    p.set_defaults(func=_cmd_motions)

    p = sub.add_parser("preview", help="render a PNG strip or GIF (turntable, or an animation) with the skeleton drawn over the mesh")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="preview.png or preview.gif")
    p.add_argument("--animation", help="clip to show (default: the first, else a turntable)")
    p.add_argument("--size", type=int, default=256, help="pixels per view (default 256)")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("bench", help="run a benchmark or evaluation and print its figures", add_help=False)
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (see `mesh3d bench NAME --help`)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("eval", help="evaluate rigging (`mesh3d eval rig --help`), the shape generator (`mesh3d eval shape --help`) "
                       "or remeshing (`mesh3d eval mesh --help`)", add_help=False)
    p.add_argument("what", choices=["mesh", "rig", "shape"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="rig: --data DIR | --split dev|train|all, --skeleton geometric|learned|auto, "
                   "--skin geometric|blender|learned|both, --library-motions, --out REPORT.json; shape: see `mesh3d eval shape --help`; "
                   "mesh: --data DIR | --split dev, --samples K, --out REPORT.json")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("generate", help="sample a new shape of a category (coarse-to-fine shape model); optionally rig it")
    p.add_argument("--category", help="a category from --list-categories")
    p.add_argument("--list-categories", action="store_true", help="print the category names, one per line")
    p.add_argument("--seed", type=int, default=0, help="same seed, same shape (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (lower: safer, less varied)")
    p.add_argument("--rig", action="store_true", help="add a skeleton and skin weights")
    p.add_argument("--motion", action="append", help="with --rig: a motion to add (repeatable; see `mesh3d motions`)")
    p.add_argument("--remesh", action="store_true", help="remesh into a compact mesh first (as `mesh3d remesh --method auto`)")
    p.add_argument("--weights", default=None, help="generator weights (default: the shipped model)")
    p.add_argument("-o", "--output", help="output file: .glb, .obj, .ply, ...")
    p.set_defaults(func=_cmd_generate)

    from app.web import Limits

    d = Limits()
    p = sub.add_parser("app", help="serve the web app (upload a mesh, get a rigged and animated asset back)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload, MB")
    p.add_argument("--max-faces", type=int, default=d.max_faces, help="larger meshes are refused")
    p.add_argument("--job-timeout", type=float, default=d.job_timeout, help="seconds before a job is stopped")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="jobs running at once")
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="jobs waiting; more are refused")
    p.add_argument("--file-ttl", type=float, default=d.file_ttl, help="seconds before uploads and results are deleted")
    p.add_argument("--work-dir", default=None, help="the one folder the app writes to (default: a new temporary folder)")
    p.set_defaults(func=_cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Mesh3DError as e:
        print(f"mesh3d: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("mesh3d: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("MESH3D_DEBUG"):
            raise
        print(f"mesh3d: internal error: {type(e).__name__}: {e} (set MESH3D_DEBUG=1 for details and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
