"""The mesh3d web app (Gradio): upload a mesh, get a rigged and animated asset back.

``mesh3d app [--host 127.0.0.1] [--port 7860]`` serves one tab, *Rig & animate*. The app adds no
3D logic: each job is one call of :func:`app.pipeline.rig` (the function behind ``mesh3d rig``),
then ``pipeline.convert`` to FBX when Blender is set up and ``rigging.animate.preview`` for the
picture, made in a child process, so that a job can be stopped at its time limit and a crash or an
out-of-memory kill costs one job, not the server.

Limits and safety (all in :class:`Limits`):
- uploads above ``max_upload_mb`` are refused by Gradio's upload route and again before a job runs;
- meshes over ``max_faces`` faces are refused before any analysis (a small Draco GLB can unpack
  to millions); below that, the rigging library analyses big meshes on a decimated copy
  (``rigging.skinning.geometric.ANALYSIS_FACES``) and rigs the full mesh;
- a job running longer than ``job_timeout`` seconds is killed;
- a queue runs ``concurrency`` jobs at once and refuses new ones beyond ``queue_size`` waiting;
- everything the app writes lives in one work folder (Gradio's upload and cache folder, and our
  job folders); entries older than ``file_ttl`` seconds are deleted;
- an upload is copied into its job folder under a fixed name (``input.<ext>``), so a crafted file
  name such as ``../../x.glb`` never reaches a path; Gradio serves files only from the work folder;
- every failure reaches the page as one readable message (``gr.Error``), never a stack trace; server
  paths in messages are replaced by the name of the user's file.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mesh3d.errors import Mesh3DError
from mesh3d.io import FBX_FORMATS, GLTF_FORMATS

# What the upload box offers; OFF is left out because browsers do not know it as a 3D type.
UPLOAD_FORMATS = GLTF_FORMATS + (".obj", ".ply", ".stl") + FBX_FORMATS
UP_AXES = ("Y", "Z", "-Y", "-Z", "X", "-X")


@dataclass
class Limits:
    """Server limits. Sizes in MB (10^6 bytes), times in seconds."""

    max_upload_mb: float = 50.0
    max_faces: int = 1_000_000  # larger meshes are refused
    job_timeout: float = 300.0
    concurrency: int = 1  # jobs running at once; each is a process using up to one core
    queue_size: int = 8  # jobs waiting beyond the running ones; more are refused
    file_ttl: float = 3600.0  # uploads, results and job folders older than this are deleted

    def check(self) -> None:
        if self.max_upload_mb <= 0 or self.max_faces <= 0 or self.job_timeout <= 0:
            raise Mesh3DError("app limits must be positive")
        if self.concurrency < 1 or self.queue_size < 0:
            raise Mesh3DError("app needs --concurrency >= 1 and --queue-size >= 0")
        if self.file_ttl <= self.job_timeout:
            raise Mesh3DError("--file-ttl must be longer than --job-timeout, or running jobs would lose their files")


def _has_module(name: str) -> bool:
    """True when ``name`` can be imported (optional parts land in this build over time)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def blender_available() -> bool:
    """FBX in and out needs Blender (mesh3d.io.blender, set up by `make blender`)."""
    if not _has_module("mesh3d.io.blender"):
        return False
    from mesh3d.io.blender import blender_available as available

    return available()


def motion_names() -> list[str]:
    from rigging.animate.motions import list_motions

    return [name for name, _description in list_motions()]


def method_names(kind: str) -> list[str]:
    """Skeleton or skin methods the pipeline offers (``auto`` first)."""
    from rigging.skeleton.auto import METHODS as SKELETON
    from rigging.skinning.auto import METHODS as SKIN

    return list({"skeleton": SKELETON, "skin": SKIN}[kind])


def safe_stem(name: str) -> str:
    """A file stem made only of letters, digits, ``_`` and ``-`` from a user's file name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name.replace("\\", "/")).stem).strip("_")
    return stem[:64] or "mesh"


# --- one job, in a child process -------------------------------------------------------------


def _job(conn, src: str, out_dir: str, options: dict) -> None:
    """Child process: the one place where the app calls the rigging pipeline.

    Sends ``("progress", stage, fraction)`` messages, then ``("done", result)``, ``("error",
    message)`` for a user error or ``("bug", message)`` for anything else.
    """
    from app import pipeline
    from rigging.animate.preview import preview

    def progress(stage: str, fraction: float) -> None:
        conn.send(("progress", stage, fraction))

    out = Path(out_dir)
    glb = out / f"{options['stem']}_rigged.glb"
    try:
        report = pipeline.rig(
            src, glb, skeleton=options["skeleton"], skin=options["skin"], motions=tuple(options["motions"]),
            up_axis=options["up_axis"], progress=progress, max_faces=options["max_faces"],
        )
        fbx = None
        if options["fbx"]:
            progress("FBX export", 1.0)
            fbx = str(pipeline.convert(glb, glb.with_suffix(".fbx")).output)
        progress("preview", 1.0)
        png = out / f"{options['stem']}_preview.png"
        preview(glb, png, animation=options["motions"][0] if options["motions"] else None)  # the user's motion
        conn.send(("done", {"report": report.to_dict(), "glb": str(glb), "fbx": fbx, "preview": str(png)}))
    except Mesh3DError as e:
        conn.send(("error", str(e)))
    except MemoryError:
        conn.send(("error", "not enough memory on the server for this file"))
    except Exception as e:  # a bug: one line for the page, the details in the server log
        import traceback

        traceback.print_exc()
        conn.send(("bug", f"{type(e).__name__}: {e}"))


class Jobs:
    """Runs jobs in child processes inside one work folder, with the limits of :class:`Limits`."""

    def __init__(self, work_dir: str | Path, limits: Limits) -> None:
        self.work_dir, self.limits = Path(work_dir).resolve(), limits
        self.jobs_dir = self.work_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # forkserver: jobs fork from a small clean process with the pipeline and the rigging
        # modules already imported, not from the threaded web server.
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(
            ["app.pipeline", "rigging.skeleton.geometric", "rigging.skeleton.learned", "rigging.skinning.geometric", "rigging.animate.motions", "rigging.animate.preview"]
        )
        self.fbx = blender_available()  # checked once: it starts Blender's Python

    def run(self, upload: str | Path, options: dict, progress: Optional[Callable[[str, float], None]] = None) -> dict:
        """Run one job on the uploaded file ``upload``; returns the result dict of :func:`_job`.

        options: skeleton, skin (method names), motions (list of names), up_axis (None or an axis).
        Raises Mesh3DError with a message for the page.
        """
        upload = Path(upload)
        name = Path(upload.name).name
        ext = upload.suffix.lower()
        if ext not in UPLOAD_FORMATS:
            raise Mesh3DError(f"{name}: unsupported file type {ext or '(none)'}; upload one of {', '.join(UPLOAD_FORMATS)}")
        if ext in FBX_FORMATS and not self.fbx:
            raise Mesh3DError(f"{name}: FBX needs Blender, which is not set up on this server; upload GLB, glTF, OBJ, PLY or STL instead")
        for kind in ("skeleton", "skin"):  # only named methods: the pipeline would also read a skeleton file path
            if options[kind] not in method_names(kind):
                raise Mesh3DError(f"unknown {kind} method {options[kind]!r}; use one of {', '.join(method_names(kind))}")
        size = upload.stat().st_size
        if size > self.limits.max_upload_mb * 1e6:
            raise Mesh3DError(f"{name}: {size / 1e6:.1f} MB is over this server's limit of {self.limits.max_upload_mb:g} MB")
        job_dir = self.jobs_dir / uuid.uuid4().hex
        job_dir.mkdir()
        src = job_dir / f"input{ext}"
        shutil.copyfile(upload, src)
        options = dict(options, stem=safe_stem(name), max_faces=self.limits.max_faces, fbx=self.fbx)
        try:
            return self._wait(src, job_dir, options, progress)
        except Mesh3DError as e:  # show the user's file name, not our server paths
            raise Mesh3DError(str(e).replace(str(src), name).replace(str(job_dir), "")) from None

    def _wait(self, src: Path, job_dir: Path, options: dict, progress) -> dict:
        receive, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_job, args=(send, str(src), str(job_dir), options), daemon=True)
        proc.start()
        send.close()  # so that recv() sees EOF when the child dies
        deadline = time.monotonic() + self.limits.job_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Mesh3DError(f"the job took longer than this server's limit of {self.limits.job_timeout:g} s and was stopped; try a smaller mesh")
                if not receive.poll(min(left, 0.2)):
                    continue
                try:
                    msg = receive.recv()
                except EOFError:
                    proc.join(5)
                    raise Mesh3DError(f"the job stopped unexpectedly (exit code {proc.exitcode}; the server may have run out of memory); try a smaller mesh") from None
                if msg[0] == "progress" and progress:
                    progress(msg[1], msg[2])
                elif msg[0] == "done":
                    return msg[1]
                elif msg[0] == "error":
                    raise Mesh3DError(msg[1])
                elif msg[0] == "bug":
                    raise Mesh3DError(f"internal error ({msg[1]}); please report it with the file")
        finally:
            receive.close()
            if proc.is_alive():
                proc.kill()
            proc.join()

    def sweep(self, now: Optional[float] = None) -> int:
        """Delete uploads, Gradio cache entries and job folders older than ``file_ttl``; returns how many."""
        now = time.time() if now is None else now
        entries = [p for p in self.work_dir.iterdir() if p != self.jobs_dir] + list(self.jobs_dir.iterdir())
        removed = 0
        for p in entries:
            try:
                if now - p.stat().st_mtime > self.limits.file_ttl:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    removed += 1
            except FileNotFoundError:  # removed meanwhile by Gradio or another sweep
                pass
        return removed

    def start_sweeper(self) -> threading.Thread:
        def loop() -> None:
            while True:
                time.sleep(min(self.limits.file_ttl / 4, 60.0))
                self.sweep()

        thread = threading.Thread(target=loop, name="mesh3d-sweeper", daemon=True)
        thread.start()
        return thread


# --- the page --------------------------------------------------------------------------------


def summary(result: dict) -> str:
    """The result panel's Markdown: methods, counts, motions, timings (s), warnings."""
    r = result["report"]
    lines = [f"**Skeleton:** {r['skeleton_method']} · **Skin:** {r['skin_method']}"]
    lines.append(f"**Joints:** {r['joints']} · **Vertices:** {r['vertices']:,} · **Faces:** {r['faces']:,}")
    if r["motions"]:
        lines.append(f"**Motions:** {', '.join(r['motions'])}")
    timings = " · ".join(f"{k} {v:.2f} s" for k, v in r["timings"].items())
    lines.append(f"**Timings:** {timings} · total {sum(r['timings'].values()):.2f} s")
    lines += [f"⚠ {w}" for w in r["warnings"]]
    return "\n\n".join(lines)


def build(jobs: Jobs):
    """The Gradio Blocks of the app (call ``.launch`` through :func:`launch`)."""
    import gradio as gr

    fbx = jobs.fbx
    formats = ", ".join(e.lstrip(".").upper() for e in UPLOAD_FORMATS if fbx or e not in FBX_FORMATS)

    def run(file, skeleton, skin, chosen_motions, up_axis, progress=gr.Progress()):
        if not file:
            raise gr.Error("Upload a mesh first.", print_exception=False)
        options = {"skeleton": skeleton, "skin": skin, "motions": list(chosen_motions or []), "up_axis": None if up_axis == "auto" else up_axis}
        progress(0.0, desc="queued")
        try:
            result = jobs.run(file, options, lambda stage, f: progress(f, desc=stage))
        except Mesh3DError as e:
            raise gr.Error(str(e), duration=None, print_exception=False) from None
        except Exception as e:  # a bug in the app itself: a message for the page, the traceback in the log
            raise gr.Error(f"internal error ({type(e).__name__}); please report it with the file") from e
        return (
            result["glb"],
            result["preview"],
            summary(result),
            gr.DownloadButton(value=result["glb"], visible=True),
            gr.DownloadButton(value=result["fbx"], visible=result["fbx"] is not None),
        )

    with gr.Blocks(title="mesh3d: rig & animate", analytics_enabled=False) as demo:
        gr.Markdown("# mesh3d\nUpload a mesh; get it back rigged and animated, as GLB" + (" and FBX." if fbx else "."))
        with gr.Tab("Rig & animate"):
            with gr.Row():
                with gr.Column(scale=1):
                    file = gr.File(label=f"Mesh ({formats}; up to {jobs.limits.max_upload_mb:g} MB)", file_types=[e for e in UPLOAD_FORMATS if fbx or e not in FBX_FORMATS], type="filepath", elem_id="upload")
                    skeleton = gr.Dropdown(method_names("skeleton"), value="auto", label="Skeleton method")
                    skin = gr.Dropdown(method_names("skin"), value="auto", label="Skin method")
                    motion = gr.Dropdown(motion_names(), value=[], multiselect=True, label="Motions", elem_id="motions")
                    up = gr.Dropdown([("as in the file", "auto")] + [(a, a) for a in UP_AXES], value="auto", label="Up axis",
                                     info="override when the model comes in lying down (OBJ, PLY, STL)")
                    start = gr.Button("Rig & animate", variant="primary", elem_id="start")
                with gr.Column(scale=2):
                    viewer = gr.Model3D(label="Result", elem_id="viewer", height=420, clear_color=(0.94, 0.94, 0.96, 1.0),
                                          camera_position=(50, 70, None))  # a three-quarter view from slightly above
                    preview = gr.Image(label="Skeleton over the mesh", type="filepath", elem_id="preview", height=240)
                    info = gr.Markdown(elem_id="summary")
                    with gr.Row():
                        glb_button = gr.DownloadButton("Download GLB", visible=False, elem_id="download-glb")
                        fbx_button = gr.DownloadButton("Download FBX", visible=False, elem_id="download-fbx")
            start.click(run, [file, skeleton, skin, motion, up], [viewer, preview, info, glb_button, fbx_button], api_name="rig")
    demo.queue(default_concurrency_limit=jobs.limits.concurrency, max_size=jobs.limits.queue_size)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, limits: Optional[Limits] = None, work_dir: Optional[str] = None) -> None:
    """Serve the app until interrupted. work_dir: the one folder the app writes to (default: a new
    temporary folder, removed on exit)."""
    limits = limits or Limits()
    limits.check()
    own = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="mesh3d-app-") if own else work_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Gradio keeps uploads and served results in GRADIO_TEMP_DIR and serves files only from there.
    os.environ["GRADIO_TEMP_DIR"] = str(root)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    jobs = Jobs(root, limits)
    jobs.start_sweeper()
    # System fonts: the default theme would fetch web fonts, and the server may be offline.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    try:
        build(jobs).launch(
            server_name=host, server_port=port, max_file_size=int(limits.max_upload_mb * 1e6), show_error=False,
            theme=theme, footer_links=["api"], ssr_mode=False, share=False,
        )
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
