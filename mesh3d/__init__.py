"""mesh3d: turn 3D shapes into clean, rigged and animated assets."""

__version__ = "0.1.0"
