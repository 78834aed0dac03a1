"""Headless previews: a PNG strip or an animated GIF of a (rigged) asset, skeleton drawn on top.

A small orthographic z-buffer rasteriser in numpy (flat shading, base colours and the texture
sampled at face centres), Pillow for drawing bones and writing files; CPU only, no display.
Bones are coloured by chain label (:func:`rigging.animate.chains.label_chains`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np

from mesh3d.asset import Animation, Asset, forward_kinematics
from mesh3d.errors import Mesh3DError

LABEL_COLOURS = {
    "spine": (220, 40, 40), "neck": (240, 140, 30), "head": (250, 210, 40), "tail": (200, 60, 200),
    "leg": (40, 90, 230), "arm": (30, 170, 60), "wing": (30, 200, 210), "fin": (255, 120, 60),
    "other": (120, 120, 120),
}


def _camera(azimuth: float, elevation: float = 15.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (towards the camera, screen right, screen up) for angles in degrees; 0 = front (+Z)."""
    a, e = np.radians(azimuth), np.radians(elevation)
    c = np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
    right = np.cross([0.0, 1.0, 0.0], c)
    right /= np.linalg.norm(right)
    return c, right, np.cross(c, right)


def _face_colours(asset: Asset) -> np.ndarray:
    """(F, 3) RGB in [0, 1]: vertex colours averaged per face, times the texture at the face's UV centre."""
    mesh = asset.mesh
    col = np.full((len(mesh.faces), 3), 0.75)
    if mesh.colors is not None:
        col = mesh.colors[mesh.faces, :3].mean(1)
    if mesh.texture is not None and mesh.uvs is not None:
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(mesh.texture)).convert("RGB"), dtype=np.float64) / 255
        uv = mesh.uvs[mesh.faces].mean(1) % 1.0
        px = np.clip((uv[:, 0] * img.shape[1]).astype(int), 0, img.shape[1] - 1)
        py = np.clip((uv[:, 1] * img.shape[0]).astype(int), 0, img.shape[0] - 1)
        col = col * img[py, px]
    return col


def render(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, azimuth: float, centre: np.ndarray, extent: float, size: int) -> tuple[np.ndarray, callable]:
    """(size, size, 3) uint8 image of the mesh seen from ``azimuth`` degrees, and the projection used.

    vertices (V, 3), faces (F, 3), colours (F, 3) in [0, 1]; the image shows ``centre`` (3,) and
    ``extent`` (world units) around it, fixed across the frames of a strip so that motion shows.
    """
    c, right, up = _camera(azimuth)
    extent = extent or 1.0
    half = size / 2

    def project(p: np.ndarray) -> np.ndarray:
        q = p - centre
        return np.stack([half + q @ right / extent * half * 0.95, half - q @ up / extent * half * 0.95, q @ c], -1)

    s = project(vertices)
    tri = s[faces]  # (F, 3, 3)
    n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    light = c + 0.6 * up + 0.3 * right
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.abs(n @ light)  # two-sided: artist meshes mix windings
    rgb = np.clip(colours * shade[:, None], 0, 1)
    image = np.full((size, size, 3), 1.0)
    depth = np.full((size, size), -np.inf)
    lo = np.floor(tri[:, :, :2].min(1)).astype(int).clip(0, size - 1)
    hi = np.ceil(tri[:, :, :2].max(1)).astype(int).clip(0, size - 1)
    for f in np.argsort(-tri[:, :, 2].mean(1)):  # far to near: fewer overwrites
        (x0, y0), (x1, y1) = lo[f], hi[f]
        if x1 < x0 or y1 < y0:
            continue
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = tri[f]
        det = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
        if abs(det) < 1e-12:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        w0 = ((by - cy) * (xs - cx) + (cx - bx) * (ys - cy)) / det
        w1 = ((cy - ay) * (xs - cx) + (ax - cx) * (ys - cy)) / det
        w2 = 1 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        z = w0 * az + w1 * bz + w2 * cz
        region = depth[y0 : y1 + 1, x0 : x1 + 1]
        win = inside & (z > region)
        region[win] = z[win]
        image[y0 : y1 + 1, x0 : x1 + 1][win] = rgb[f]
    return (image * 255).astype(np.uint8), project


def _draw_skeleton(image: np.ndarray, project, points: np.ndarray, parents: np.ndarray, draw: np.ndarray, labels: list[str]):
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    pen = ImageDraw.Draw(pil)
    s = project(points)
    r = max(1, image.shape[0] // 128)
    for j in np.flatnonzero(draw):
        colour = LABEL_COLOURS.get(labels[j], LABEL_COLOURS["other"])
        p = parents[j]
        if p >= 0 and draw[p]:
            pen.line([tuple(s[p, :2]), tuple(s[j, :2])], fill=colour, width=max(1, r))
        pen.ellipse([s[j, 0] - r, s[j, 1] - r, s[j, 0] + r, s[j, 1] + r], fill=colour)
    return pil


def preview(asset_or_path, out, animation: Optional[Animation | str] = None, size: int = 256, views: int = 6) -> Path:
    """Write ``out`` (.png strip or .gif) of an asset or file: an animation when it has one (or
    ``animation`` names one), else a turntable. Returns the path written."""
    from PIL import Image

    from mesh3d.io import load
    from mesh3d.io.atomic import atomic_path
    from rigging.animate.chains import label_chains

    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise Mesh3DError(f"preview writes .png or .gif, not {out.suffix or 'no extension'!r}")
    if size < 32:
        raise Mesh3DError("preview size must be at least 32 pixels")
    asset = asset_or_path if isinstance(asset_or_path, Asset) else load(asset_or_path)
    if isinstance(animation, str):
        from rigging.animate.retarget import find_clip

        animation = find_clip(asset, animation)
    elif animation is None and asset.animations and asset.skin is not None:
        animation = asset.animations[0]
    gif = out.suffix.lower() == ".gif"
    colours = _face_colours(asset)
    sk = asset.skeleton
    if animation is not None:
        count = min(animation.num_frames, 48) if gif else min(views, animation.num_frames)
        frames = np.unique(np.linspace(0, animation.num_frames - 1, count).round().astype(int))
        verts = asset.posed_vertices(animation, frames)
        world = forward_kinematics(sk.parents, animation.translations[frames], animation.rotations[frames], animation.scales[frames])
        joints = world[..., :3, 3]
        azimuths = [30.0] * len(frames)
    else:
        count = 24 if gif else 4
        azimuths = list(np.arange(count) * 360.0 / count + 30.0)
        verts = np.repeat(asset.mesh.vertices[None], count, 0)
        joints = np.repeat(sk.joints[None], count, 0) if sk is not None else None
    flat = verts.reshape(-1, 3)
    centre = (flat.min(0) + flat.max(0)) / 2
    extent = max(float(np.abs((v - centre) @ np.stack(_camera(az)[1:], 1)).max()) for v, az in zip(verts, azimuths))
    if sk is not None:
        labels = label_chains(sk, asset.mesh)
        draw = labels.parents >= -1
    images = []
    for k, az in enumerate(azimuths):
        img, project = render(verts[k], asset.mesh.faces, colours, az, centre, extent, size)
        if sk is not None:
            images.append(_draw_skeleton(img, project, joints[k], sk.parents, draw, labels.joint_labels))
        else:
            images.append(Image.fromarray(img))
    with atomic_path(out) as tmp:
        if gif:
            duration = int(1000 / animation.fps * animation.num_frames / len(images)) if animation is not None else 120
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
        else:
            strip = Image.new("RGB", (size * len(images), size), "white")
            for k, im in enumerate(images):
                strip.paste(im, (k * size, 0))
            strip.save(tmp, format="PNG")
    return out
