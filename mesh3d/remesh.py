"""Artist-mesh generation (MeshAnything class): a dense surface in, a compact triangle mesh out.

Learned method: the shared shape encoder (mesh3d.nn.shape_encoder) reads points with normals
sampled from the *input* surface; its latents are the prefix of the shared decoder
(mesh3d.nn.model), which writes the output mesh in VST tokens (mesh3d.tokenizers.vst, the most
compact scheme: ~1.3 tokens per face) under the tokenizer's grammar mask, so every sampled
sequence decodes to a mesh. Training (`MeshTask`, data from data_prep.mesh_data) feeds the
encoder points of a marching-cubes remesh of each target, never the target itself, so it sees
what users give at inference: dense, uniformly triangulated surfaces.

    python -m data_prep.mesh_data --out runs/mesh_data
    mesh3d train mesh mesh3d/weights/mesh_train.toml

Inference (`remesh`): normalise the input (bounding box centred, longest side 1), sample K
candidates with the KV cache, stop degenerate loops, clean each candidate, keep the one with the
lowest chamfer distance to the input. `method="auto"` keeps the learned mesh only when it is
faithful (chamfer and normal consistency within bounds of QEM decimation at the same face
count), else returns the QEM mesh; the report says which.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from mesh3d.asset import Mesh
from mesh3d.errors import Mesh3DError
from mesh3d.geometry.distance import chamfer
from mesh3d.geometry.normalize import normalize_unit_cube
from mesh3d.geometry.sampling import face_normals_areas, sample_surface, subsample
from mesh3d.nn.model import ConditionedGPT
from mesh3d.nn.shape_encoder import shape_conditioned_gpt
from mesh3d.nn.trainer import batch_indices
from mesh3d.nn.weights import load_weights, read_metadata, save_weights
from mesh3d.tokenizers import BOS, EOS, PAD, get_tokenizer

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "mesh.safetensors"
TASK_SPEC = "mesh3d.remesh:MeshTask"

# Options that fix the architecture (stored in the weights' metadata; everything else is training).
MODEL_DEFAULTS = dict(tokenizer="vst", bits=7, max_tokens=1152, n_points=2048, n_latents=32, queries="fps",
                      enc_embd=128, enc_layers=1, n_layer=4, n_head=4, n_embd=192, dropout=0.0)

MAX_INPUT_FACES = 2_000_000  # beyond this, loading and sampling need more memory than a laptop has


# ----------------------------------------------------------------------------- the model


@dataclass
class MeshModel:
    """A mesh model ready to use: the network, its tokenizer, input points and token budget."""

    net: ConditionedGPT
    tok: object  # a mesh3d.tokenizers.MeshTokenizer
    n_points: int
    max_tokens: int


def build_model(options: dict) -> MeshModel:
    """The encoder + decoder and the tokenizer described by model options (MODEL_DEFAULTS keys)."""
    o = MODEL_DEFAULTS | {k: v for k, v in options.items() if k in MODEL_DEFAULTS}
    tok = get_tokenizer(o["tokenizer"], o["bits"])
    return MeshModel(shape_conditioned_gpt(tok.vocab_size, o["max_tokens"], o), tok, o["n_points"], o["max_tokens"])


def pad_tokens(sequences: list[np.ndarray]) -> torch.Tensor:
    """(B, T) long: sequences padded with PAD to the longest."""
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class MeshTask:
    """`mesh3d.nn.trainer.Task` of the artist-mesh model.

    data_dir: shards of data_prep.mesh_data (points of the marching-cubes remesh, target tokens).
    train_tokens: examples with longer token sequences are left out of training and dev loss
    (shorter sequences, more steps on a CPU); generation may still run to max_tokens. dev_examples: how many dev examples `evaluate` uses (0: all). best_path: where evaluate saves
    the weights with the lowest dev loss so far ("" to skip). Model options: MODEL_DEFAULTS.
    """

    def __init__(self, data_dir: str = "runs/mesh_data", train_tokens: int = 768, dev_examples: int = 0, best_path: str = "",
                 seed: int = 0, **model_options):
        unknown = set(model_options) - set(MODEL_DEFAULTS)
        if unknown:
            raise Mesh3DError(f"unknown mesh task options {sorted(unknown)}; known: {sorted(MODEL_DEFAULTS)}")
        from data_prep.mesh_data import read_shards

        self.options = MODEL_DEFAULTS | model_options
        limit = min(train_tokens, self.options["max_tokens"])
        self.train_set = [ex for ex in read_shards(data_dir, "train") if len(ex["tokens"]) <= limit]
        self.dev_set = [ex for ex in read_shards(data_dir, "dev") if len(ex["tokens"]) <= limit]
        if not self.train_set or not self.dev_set:
            raise Mesh3DError(f"{data_dir}: no train or dev example has at most {limit} tokens")
        if dev_examples:
            self.dev_set = self.dev_set[:dev_examples]
        self.seed, self.best_path = seed, best_path
        self.best = read_metadata(best_path).get("dev_loss", float("inf")) if best_path and Path(best_path).is_file() else float("inf")

    def build_model(self) -> ConditionedGPT:
        return build_model(self.options).net

    def batch(self, step, rank, world_size, batch_size):
        index = batch_indices(len(self.train_set), batch_size, step, rank, world_size, self.seed)
        points, tokens = [], []
        for i in index.tolist():
            ex = self.train_set[i]
            points.append(subsample(ex["points"], self.options["n_points"], np.random.default_rng([self.seed, step, i])))
            tokens.append(ex["tokens"])
        return {"points": torch.stack(points), "tokens": pad_tokens(tokens)}

    def loss(self, model, batch):
        return model(batch["points"], batch["tokens"], pad_id=PAD)

    def evaluate(self, model) -> dict:
        """Dev loss per token (teacher forcing) over the dev examples, in batches of 16."""
        total, count = 0.0, 0
        for s in range(0, len(self.dev_set), 16):
            chunk = self.dev_set[s:s + 16]
            points = torch.stack([subsample(ex["points"], self.options["n_points"], None) for ex in chunk])
            tokens = pad_tokens([ex["tokens"] for ex in chunk])
            n = int((tokens[:, 1:] != PAD).sum())
            total += model(points, tokens, pad_id=PAD).item() * n
            count += n
        dev_loss = total / max(count, 1)
        if self.best_path and dev_loss < self.best:
            self.best = dev_loss
            save_weights(model, self.best_path, {"task": TASK_SPEC, "task_options": self.options, "dev_loss": dev_loss})
        return {"dev_loss": dev_loss}


def load_mesh_model(weights=DEFAULT_WEIGHTS, max_tokens: int | None = None) -> MeshModel:
    """The model stored in a weights file (its metadata holds the model options).

    max_tokens: a different generation budget than the trained one (rotary positions have no
    table to outgrow; the weights do not depend on it).
    """
    weights = Path(weights)
    if not weights.is_file():
        raise Mesh3DError(f"mesh model weights not found: {weights} (use --method qem, or train one: mesh3d train mesh CONFIG)")
    options = read_metadata(weights).get("task_options", {})
    if max_tokens is not None:
        options = options | {"max_tokens": max_tokens}
    model = build_model(options)
    load_weights(model.net, weights)
    model.net.eval()
    return model


# ----------------------------------------------------------------------------- marching cubes


def marching_cubes_surface(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64, seed: int = 0) -> Mesh:
    """A closed, dense remesh of any triangle surface: the outer boundary of its thickened shell.

    The surface (normalised to the unit cube) is sampled densely; grid cells holding samples form
    a shell, enclosed cells are filled, and marching cubes extracts the level set at one cell of
    distance outside the filled region. Open sheets, overlapping parts and non-manifold edges all
    give a watertight result, offset outward by 1 to 1.5 cells (about 1.5-2.5 % of the longest
    side at resolution 64): a thickened sheet, as a scan of a thin part would be.
    Returns the mesh in the input's own frame (units of `vertices`), outward-facing.
    """
    from skimage.measure import marching_cubes

    normalised, center, scale = normalize_unit_cube(vertices)
    h = 1.0 / resolution
    pad = 3
    n = resolution + 2 * pad + 1
    # Samples spaced well under a cell so thin triangles still mark every cell they cross.
    area = face_normals_areas(normalised, faces)[1].sum()
    count = int(min(2_000_000, max(20_000, 8 * area / h ** 2)))
    points, _ = sample_surface(normalised, faces, count, np.random.default_rng(seed))
    points = np.concatenate([points, normalised])
    cells = np.clip(np.floor((points + 0.5) / h).astype(np.int64) + pad, 0, n - 1)
    shell = np.zeros((n, n, n), bool)
    shell[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    solid = ndimage.binary_fill_holes(shell)
    # Distance in cells to the solid, smoothed: the EDT's exact ties at 1.0 and its staircase
    # would give holes and terraces; the blurred field has neither.
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(~solid), 1.0)
    verts, tris, _, _ = marching_cubes(distance.astype(np.float32), level=1.0)
    verts = (verts - pad + 0.5) * h - 0.5  # cell centres back to the unit cube
    return Mesh(vertices=verts * scale + center, faces=tris.astype(np.int64))


# ----------------------------------------------------------------------------- surface metrics


def _surface_samples(mesh: Mesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n area-uniform points and their face normals; the same seed gives the same samples."""
    return sample_surface(mesh.vertices, mesh.faces, n, np.random.default_rng(seed))


def sharp_edge_samples(mesh: Mesh, n: int, angle_degrees: float = 30.0, seed: int = 0) -> np.ndarray:
    """(m <= n, 3) points spread by length over the mesh's sharp edges (dihedral angle above
    `angle_degrees`) and boundary edges; empty when it has none (a smooth closed surface)."""
    normals, _ = face_normals_areas(mesh.vertices, mesh.faces)
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    face_of = np.tile(np.arange(len(mesh.faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, face_of = edges[order], face_of[order]
    uniq, start, count = np.unique(edges, axis=0, return_index=True, return_counts=True)
    cos_limit = np.cos(np.radians(angle_degrees))
    sharp = count != 2  # boundary and non-manifold edges
    two = count == 2
    dots = (normals[face_of[start[two]]] * normals[face_of[start[two] + 1]]).sum(1)
    sharp[np.flatnonzero(two)] = dots < cos_limit
    a, b = mesh.vertices[uniq[sharp, 0]], mesh.vertices[uniq[sharp, 1]]
    length = np.linalg.norm(b - a, axis=1)
    if not len(length) or length.sum() <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(length), n, p=length / length.sum())
    t = rng.random(n)[:, None]
    return a[pick] + t * (b[pick] - a[pick])


def surface_metrics(pred: Mesh, target: Mesh, n: int = 10_000, seed: int = 0) -> dict:
    """How close `pred` is to `target`, both in the target's normalised frame (bbox centred,
    longest side 1, so distances are fractions of the target's size):

    chamfer: mean nearest-surface-sample distance, averaged over both directions.
    edge_chamfer: the same between samples of their sharp edges (NaN when either has none).
    normal_consistency: mean |cos| between the normals of nearest samples, both directions (1 best).
    """
    _, center, scale = normalize_unit_cube(target.vertices)
    p = Mesh((pred.vertices - center) / scale, pred.faces)
    t = Mesh((target.vertices - center) / scale, target.faces)
    pp, pn = _surface_samples(p, n, seed)
    tp, tn = _surface_samples(t, n, seed + 1)
    d_pt, i_pt = cKDTree(tp).query(pp)
    d_tp, i_tp = cKDTree(pp).query(tp)
    nc = 0.5 * (np.abs((pn * tn[i_pt]).sum(1)).mean() + np.abs((tn * pn[i_tp]).sum(1)).mean())
    pe, te = sharp_edge_samples(p, n // 4, seed=seed), sharp_edge_samples(t, n // 4, seed=seed + 1)
    edge = float("nan")
    if len(pe) and len(te):
        edge = chamfer(pe, te)
    return {"chamfer": float(0.5 * (d_pt.mean() + d_tp.mean())), "edge_chamfer": float(edge), "normal_consistency": float(nc)}


def validity(mesh: Mesh) -> dict:
    """Counts and checks of a mesh: faces, vertices, watertight, degenerate and duplicate faces."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    areas = face_normals_areas(mesh.vertices, mesh.faces)[1]
    _, size, _ = normalize_unit_cube(mesh.vertices)
    degenerate = int((areas <= 1e-12 * max(float(np.ptp(mesh.vertices, 0).max()) ** 2, 1e-300)).sum()) if len(areas) else 0
    duplicates = len(mesh.faces) - len(np.unique(np.sort(mesh.faces, axis=1), axis=0)) if len(mesh.faces) else 0
    return {"faces": len(mesh.faces), "vertices": len(mesh.vertices), "watertight": bool(tm.is_watertight),
            "degenerate_faces": degenerate, "duplicate_faces": int(duplicates)}


# ----------------------------------------------------------------------------- cleaning and QEM


def clean_mesh(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Merge equal vertices, drop degenerate (zero-area) and duplicate faces (a face and its
    reverse count as one) and unused vertices, and make the winding consistent (outward where a
    piece is closed)."""
    import trimesh

    tm = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=True)
    keep = tm.nondegenerate_faces(height=1e-9 * max(tm.scale, 1e-12))
    keep &= tm.unique_faces()  # first of each set of faces on the same three vertices
    tm.update_faces(keep)
    tm.remove_unreferenced_vertices()
    if len(tm.faces):
        with np.errstate(invalid="ignore", divide="ignore"):  # open pieces have no volume to orient by
            trimesh.repair.fix_normals(tm, multibody=True)
    return Mesh(np.asarray(tm.vertices, np.float64), np.asarray(tm.faces, np.int64))


def qem_decimate(mesh: Mesh, faces: int) -> Mesh:
    """Quadric error metric decimation (fast-simplification) to about `faces` faces, cleaned.

    A mesh already at or below the budget is only cleaned.
    """
    import fast_simplification

    if len(mesh.faces) <= faces:
        return clean_mesh(mesh.vertices, mesh.faces)
    v, f = mesh.vertices, mesh.faces.astype(np.int32)
    # One pass can stop well above the target (e.g. 500 faces asked 126 on a dense closed blob);
    # further passes on its output keep collapsing, so repeat while it helps.
    for _ in range(8):
        n = len(f)
        v, f = fast_simplification.simplify(v, f.astype(np.int32), target_count=max(faces, 4))
        if len(f) <= faces or len(f) >= n:
            break
    return clean_mesh(v, f)


# ----------------------------------------------------------------------------- learned generation


class StopRules:
    """The tokenizer's grammar plus stop rules for runaway generation (a `Grammar` for GPT.generate).

    End-of-sequence is forced (at the first place the grammar allows it) once the mesh reaches
    `max_faces`, once `max_dropped` faces were dropped as repeats (the model is looping over a
    region it already wrote), or when `max_idle` tokens in a row added no face. `min_faces` forbids
    EOS before that many faces (used only by the speed benchmark).
    """

    def __init__(self, grammar, max_faces: int, max_dropped: int = 8, max_idle: int = 48, min_faces: int = 0):
        self.g, self.max_faces, self.max_dropped, self.max_idle, self.min_faces = grammar, max_faces, max_dropped, max_idle, min_faces
        self.idle, self.faces, self.stopped = 0, 0, ""

    def allowed(self) -> torch.Tensor:
        m = self.g.mask()
        b = self.g.builder
        if not self.stopped and self.g.started:
            if len(b.faces) >= self.max_faces:
                self.stopped = f"face budget {self.max_faces} reached"
            elif b.problems >= self.max_dropped:
                self.stopped = f"{b.problems} repeated or degenerate faces (a loop)"
            elif self.idle >= self.max_idle:
                self.stopped = f"{self.idle} tokens without a new face"
        if self.stopped and m[EOS]:
            m = np.zeros_like(m)
            m[EOS] = True
        elif len(b.faces) < self.min_faces and m[EOS] and m.sum() > 1:
            m[EOS] = False
        return torch.from_numpy(m)

    def advance(self, token: int) -> None:
        before = len(self.g.builder.faces)
        self.g.step(token)
        self.idle = 0 if len(self.g.builder.faces) > before else self.idle + 1

    def clone(self) -> "StopRules":
        out = StopRules(self.g.clone(), self.max_faces, self.max_dropped, self.max_idle, self.min_faces)
        out.idle, out.stopped = self.idle, self.stopped
        return out


def input_points(mesh: Mesh, n_points: int, seed: int) -> tuple[torch.Tensor, np.ndarray, float]:
    """Encoder input (1, n_points, 6) from the mesh's surface, and the normalisation (center, scale)."""
    normalised, center, scale = normalize_unit_cube(mesh.vertices)
    points, normals = sample_surface(normalised, mesh.faces, n_points, np.random.default_rng(seed))
    return torch.from_numpy(np.concatenate([points, normals], 1)).float()[None], center, scale


def generate_candidates(model: MeshModel, points: torch.Tensor, samples: int, max_faces: int, seed: int = 0,
                        temperature: float = 1.0, top_p: float = 0.95, use_cache: bool = True):
    """`samples` sampled token sequences (K, T) for one input's points (1, N, 6), and for each the
    stop rules replayed over it (their `stopped` says which rule, if any, ended it)."""
    rules = StopRules(model.tok.grammar(), max_faces)
    seq = _sample(model, points, samples, rules, model.max_tokens - 1, temperature, top_p, use_cache, seed)
    return seq, [replay(rules, row) for row in seq.tolist()]


def _sample(model: MeshModel, points: torch.Tensor, samples: int, rules: "StopRules", n_tokens: int, temperature: float,
            top_p: float, use_cache: bool, seed: int) -> torch.Tensor:
    """(samples, 1 + n) tokens from BOS, sampled under `rules` (cloned per row by GPT.generate).

    (The decoder decodes on one torch thread: see mesh3d.nn.threads.)
    """
    prompt = torch.full((samples, 1), BOS, dtype=torch.long)
    with torch.no_grad():
        prefix = model.net.encoder(points).expand(samples, -1, -1)
        return model.net.decoder.generate(prompt, n_tokens, prefix, temperature=temperature, top_p=top_p, grammar=rules,
                                          eos_id=EOS, use_cache=use_cache, generator=torch.Generator().manual_seed(seed))


def replay(rules: "StopRules", row: list[int]) -> "StopRules":
    """A fresh copy of `rules` fed the tokens of `row` up to its first EOS (GPT.generate advances
    its own clones, so this recovers their final state)."""
    out = StopRules(rules.g.tokenizer.grammar(), rules.max_faces, rules.max_dropped, rules.max_idle, rules.min_faces)
    for t in row:
        if out.g.started:
            out.allowed()  # updates `stopped`
        out.advance(t)
        if t == EOS:
            break
    return out


@dataclass
class RemeshReport:
    """What `remesh` did: the method used and why, counts, fidelity to the input, timings (s)."""

    input: str = ""
    output: str = ""
    method: str = ""  # "learned" or "qem": the method whose mesh was returned
    reason: str = ""
    faces: int = 0
    vertices: int = 0
    metrics: dict = field(default_factory=dict)  # method -> surface_metrics to the input
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: NaN (no sharp edges to compare) becomes None."""
        d = asdict(self)
        d["metrics"] = {m: {k: None if isinstance(v, float) and v != v else v for k, v in vals.items()} for m, vals in d["metrics"].items()}
        return d

    def format(self) -> str:
        m = self.metrics.get(self.method, {})
        fid = f", chamfer {m['chamfer']:.4f}, normal consistency {m['normal_consistency']:.3f}" if m else ""
        return f"{self.output or 'mesh'}: {self.faces} faces, {self.vertices} vertices by {self.method} ({self.reason}){fid}"


# `auto` keeps the learned mesh when it is this close to QEM at the same face count.
AUTO_CHAMFER_RATIO = 1.25  # learned chamfer <= ratio * QEM chamfer + AUTO_CHAMFER_SLACK
AUTO_CHAMFER_SLACK = 0.002  # fractions of the longest side: forgives differences too small to see
AUTO_NORMAL_MARGIN = 0.05  # learned normal consistency >= QEM's - margin
METHODS = ("auto", "learned", "qem")


def check_input(mesh: Mesh) -> list[str]:
    """Raise Mesh3DError for inputs remesh cannot use; return warnings for ones it can."""
    if not len(mesh.faces):
        raise Mesh3DError(f"the input is a point cloud ({len(mesh.vertices)} points, no faces); remesh needs a triangle "
                          "surface: reconstruct one first (e.g. Poisson reconstruction in MeshLab or Open3D)")
    if len(mesh.faces) > MAX_INPUT_FACES:
        raise Mesh3DError(f"the input has {len(mesh.faces):,} faces, more than remesh handles ({MAX_INPUT_FACES:,}); "
                          "decimate or split it first (e.g. Blender's Decimate modifier)")
    if face_normals_areas(mesh.vertices, mesh.faces)[1].sum() <= 0:
        raise Mesh3DError("every face of the input has zero area; there is no surface to remesh")
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    open_edges = int((counts == 1).sum())
    if open_edges:
        return [f"the input is an open surface ({open_edges} boundary edges): the learned model was trained on closed "
                "inputs, so its mesh may miss or close parts; auto falls back to QEM when it is not faithful"]
    return []


def learned_remesh(mesh: Mesh, faces: int, samples: int, model: MeshModel, seed: int = 0) -> tuple[Mesh | None, list[str]]:
    """The learned model's best of `samples` candidates (lowest chamfer to `mesh`), cleaned, in the
    input's frame; None when no candidate has 4 faces. Also the stop rules that ended candidates."""
    points, center, scale = input_points(mesh, model.n_points, seed)
    seq, rules = generate_candidates(model, points, samples, faces, seed)
    normalised = Mesh((mesh.vertices - center) / scale, mesh.faces)
    best, best_cd = None, float("inf")
    for row in seq.tolist():
        q = model.tok.decode(row).mesh
        if len(q.faces) < 4:
            continue
        m = q.to_mesh()  # in the unit cube: the frame the input was normalised to
        cand = clean_mesh(m.vertices, m.faces)
        if len(cand.faces) < 4:
            continue
        cd = surface_metrics(cand, normalised, n=4000)["chamfer"]
        if cd < best_cd:
            best, best_cd = cand, cd
    stops = [r.stopped for r in rules if r.stopped]
    return (None if best is None else Mesh(best.vertices * scale + center, best.faces)), stops


def remesh(mesh: Mesh, faces: int = 500, method: str = "auto", samples: int = 4, seed: int = 0, model: MeshModel | None = None,
           weights=DEFAULT_WEIGHTS, report: RemeshReport | None = None) -> tuple[Mesh, RemeshReport]:
    """A compact mesh of `mesh`'s surface with at most about `faces` faces, in the input's frame.

    method: "learned" (the model's best of `samples` candidates by chamfer to the input), "qem"
    (quadric decimation to `faces`), or "auto" (learned when faithful compared with QEM at the
    learned face count, see AUTO_*; else QEM to `faces`; also QEM when no weights are installed).
    seed: sampling seed (same input and options, same output). model: a loaded MeshModel (else
    loaded from `weights`).
    """
    if method not in METHODS:
        raise Mesh3DError(f"unknown remesh method {method!r}; choose one of {', '.join(METHODS)}")
    if faces < 4:
        raise Mesh3DError(f"--faces must be at least 4, got {faces}")
    if samples < 1:
        raise Mesh3DError(f"--samples must be at least 1, got {samples}")
    report = report if report is not None else RemeshReport()
    report.warnings += check_input(mesh)
    learned, reason = None, "asked for"
    if method != "qem":
        t0 = time.perf_counter()
        try:
            model = model if model is not None else load_mesh_model(weights)
        except Mesh3DError as e:
            if method == "learned":
                raise
            reason = f"auto: no learned model ({e})"
        if model is not None:
            learned, stops = learned_remesh(mesh, faces, samples, model, seed)
            report.timings["learned"] = round(time.perf_counter() - t0, 4)
            if stops:
                report.warnings.append(f"{len(stops)} of {samples} candidates stopped early: {stops[0]}")
            if learned is None:
                if method == "learned":
                    raise Mesh3DError(f"the learned model wrote no usable mesh in {samples} samples; try --samples {2 * samples} or --method qem")
                reason = "auto: the learned model wrote no usable mesh"
            else:
                report.metrics["learned"] = surface_metrics(learned, mesh)
    if method == "learned":
        report.method, report.reason = "learned", f"asked for; best of {samples} by chamfer to the input"
        return _finish(learned, report)
    t0 = time.perf_counter()
    if learned is not None:
        same = qem_decimate(mesh, len(learned.faces))
        report.metrics["qem_same_faces"] = q_m = surface_metrics(same, mesh)
        l_m = report.metrics["learned"]
        vs = (f"chamfer {l_m['chamfer']:.4f}, normal consistency {l_m['normal_consistency']:.3f} vs QEM {q_m['chamfer']:.4f}, "
              f"{q_m['normal_consistency']:.3f} at {len(learned.faces)} faces")
        if (l_m["chamfer"] <= AUTO_CHAMFER_RATIO * q_m["chamfer"] + AUTO_CHAMFER_SLACK
                and l_m["normal_consistency"] >= q_m["normal_consistency"] - AUTO_NORMAL_MARGIN):
            report.timings["qem"] = round(time.perf_counter() - t0, 4)
            report.method, report.reason = "learned", f"auto: learned is faithful ({vs})"
            return _finish(learned, report)
        reason = f"auto: learned was not faithful ({vs})"
    out = qem_decimate(mesh, faces)
    report.timings["qem"] = round(time.perf_counter() - t0, 4)
    report.metrics["qem"] = surface_metrics(out, mesh)
    report.method, report.reason = "qem", reason
    return _finish(out, report)


def _finish(out: Mesh, report: RemeshReport) -> tuple[Mesh, RemeshReport]:
    report.faces, report.vertices = len(out.faces), len(out.vertices)
    return out, report


def remesh_file(src, dst, faces: int = 500, method: str = "auto", samples: int = 4, seed: int = 0, up_axis: str | None = None,
                progress=None) -> RemeshReport:
    """`remesh` from file to file (any format mesh3d.io reads and writes): the batch task.

    Writes geometry only: a rig, animations, UVs and colours of the input are dropped (and said so).
    """
    from mesh3d.asset import Asset
    from mesh3d.io import load, save

    report = RemeshReport(str(src), str(dst))
    if progress:
        progress("load", 0.0)
    t0 = time.perf_counter()
    asset = load(src, up_axis=up_axis)
    report.timings["load"] = round(time.perf_counter() - t0, 4)
    dropped = [name for name, there in (("rig", asset.skeleton is not None), ("animations", bool(asset.animations)),
                                        ("UVs and texture", asset.mesh.uvs is not None), ("colours", asset.mesh.colors is not None)) if there]
    if dropped:
        report.warnings.append(f"remesh writes geometry only; the input's {', '.join(dropped)} are not carried over")
    if progress:
        progress("remesh", 0.2)
    out, report = remesh(asset.mesh, faces, method, samples, seed, report=report)
    if progress:
        progress("save", 0.9)
    t0 = time.perf_counter()
    report.warnings += save(Asset(mesh=out, up_axis=asset.up_axis, unit_scale=asset.unit_scale, name=asset.name), dst)
    report.timings["save"] = round(time.perf_counter() - t0, 4)
    if progress:
        progress("done", 1.0)
    return report


# ----------------------------------------------------------------------------- speed benchmark


def benchmark(weights=DEFAULT_WEIGHTS, faces: int = 800, no_cache_tokens: int = 384, seed: int = 0, log=print) -> dict:
    """Decoding speed of the learned model on one dense input (a marching-cubes sphere-like blob).

    Times (1) writing a `faces`-face mesh with the KV cache, EOS forbidden until the mesh has
    `faces` faces (so the figure does not depend on when the model would stop), and (2) the first
    `no_cache_tokens` tokens with and without the cache (without it every step recomputes the
    whole sequence). Returns the figures; prints them.
    """
    model = load_mesh_model(weights, max_tokens=4 * faces)  # room for 800 faces however the model writes them
    sphere = marching_cubes_surface(*_blob(), resolution=48)
    points, _, _ = input_points(sphere, model.n_points, seed)
    out = {"torch_threads": torch.get_num_threads()}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        seq, _ = _bench_run(model, points, no_cache_tokens, 10 ** 9, use_cache, seed)
        dt = time.perf_counter() - t0
        out[f"tokens_per_s_{'cache' if use_cache else 'no_cache'}"] = (seq.size(1) - 1) / dt
    t0 = time.perf_counter()
    seq, rules = _bench_run(model, points, model.max_tokens - 1, faces, True, seed)
    dt = time.perf_counter() - t0
    n_faces = len(rules[0].g.builder.faces)
    out.update(faces=n_faces, tokens=int(seq.size(1) - 1), seconds=dt, tokens_per_s_full=(seq.size(1) - 1) / dt)
    log(f"{out['torch_threads']} torch threads; first {no_cache_tokens} tokens: {out['tokens_per_s_cache']:.0f} tokens/s with the "
        f"KV cache, {out['tokens_per_s_no_cache']:.0f} without ({out['tokens_per_s_cache'] / out['tokens_per_s_no_cache']:.1f}x)")
    log(f"{n_faces}-face mesh: {out['tokens']} tokens ({out['tokens'] / max(n_faces, 1):.2f} per face) in {dt:.2f} s "
        f"({out['tokens_per_s_full']:.0f} tokens/s, KV cache, grammar mask)")
    return out


def _blob() -> tuple[np.ndarray, np.ndarray]:
    """A closed test surface: an icosphere squashed along Y (vertices, faces)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3)
    return np.asarray(s.vertices) * [1.0, 0.6, 0.8], np.asarray(s.faces)


def _bench_run(model: MeshModel, points: torch.Tensor, n_tokens: int, faces: int, use_cache: bool, seed: int):
    """Up to n_tokens decoding steps, EOS forbidden before `faces` faces and forced at `faces`
    (no other stop rule), with or without the KV cache."""
    rules = StopRules(model.tok.grammar(), max_faces=faces, max_dropped=10 ** 9, max_idle=10 ** 9, min_faces=faces)
    seq = _sample(model, points, 1, rules, n_tokens, 0.8, 0.95, use_cache, seed)
    return seq, [replay(rules, seq[0].tolist())]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="mesh3d bench remesh", description="Decoding speed of the learned artist-mesh model: tokens/s "
                                     "with and without the KV cache, and the time to write an 800-face mesh.")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--faces", type=int, default=800)
    parser.add_argument("--no-cache-tokens", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target machine's cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    benchmark(args.weights, args.faces, args.no_cache_tokens)


if __name__ == "__main__":
    main()
